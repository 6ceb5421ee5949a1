package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// TestClientSettings reads a client as Keycloak's admin API shows it: its
// attributes, front-channel switch and default scopes, with the audience
// mappers of the client and of its default scopes (not its optional ones).
func TestClientSettings(t *testing.T) {
	_, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/admin/realms/jupyter/clients":
			if r.URL.Query().Get("clientId") != "jupyterhub" {
				fmt.Fprint(w, `[]`)
				return
			}
			fmt.Fprint(w, `[{"id":"9a1b","clientId":"jupyterhub","frontchannelLogout":false,
				"attributes":{"backchannel.logout.url":"https://hub/services/tokenkeeper/backchannel-logout","standard.token.exchange.enabled":"true"},
				"defaultClientScopes":["basic","profile"],"optionalClientScopes":["extra"],
				"protocolMappers":[{"name":"trino audience","protocolMapper":"oidc-audience-mapper","config":{"included.client.audience":"trino"}}]}]`)
		case "/admin/realms/jupyter/client-scopes":
			fmt.Fprint(w, `[{"name":"basic","protocolMappers":[{"name":"sid","protocolMapper":"oidc-usersessionmodel-note-mapper","config":{"claim.name":"sid"}}]},
				{"name":"extra","protocolMappers":[{"name":"grafana","protocolMapper":"oidc-audience-mapper","config":{"included.client.audience":"grafana"}}]}]`)
		default:
			http.NotFound(w, r)
		}
	})
	s, err := admin.ClientSettings(context.Background(), "jupyterhub")
	if err != nil {
		t.Fatal(err)
	}
	if s.FrontchannelLogout || s.Attributes["standard.token.exchange.enabled"] != "true" || !slices.Equal(s.DefaultScopes, []string{"basic", "profile"}) {
		t.Errorf("ClientSettings = %+v", s)
	}
	want := []Mapper{{Type: "oidc-audience-mapper", Audience: "trino"}, {Type: "oidc-usersessionmodel-note-mapper", Claim: "sid"}}
	if !slices.Equal(s.Mappers, want) {
		t.Errorf("Mappers = %+v, want %+v (the optional scope's left out)", s.Mappers, want)
	}
	_, err = admin.ClientSettings(context.Background(), "nobody")
	var aerr *AdminError
	if !errors.As(err, &aerr) || aerr.Status != http.StatusNotFound {
		t.Errorf("ClientSettings of a missing client = %v, want an *AdminError with 404", err)
	}
}

// TestRealmSettingsNameOnly: an admin client without view-realm is shown
// the realm's name only, which Readable reports.
func TestRealmSettingsNameOnly(t *testing.T) {
	for _, tt := range []struct {
		body string
		want bool
	}{
		{`{"realm":"jupyter"}`, false},
		{`{"realm":"jupyter","revokeRefreshToken":true,"refreshTokenMaxReuse":1,"accessTokenLifespan":30,"ssoSessionIdleTimeout":300,"ssoSessionMaxLifespan":1800}`, true},
	} {
		_, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, tt.body)
		})
		s, err := admin.RealmSettings(context.Background())
		if err != nil || s.Readable() != tt.want {
			t.Errorf("RealmSettings on %s = %+v, %v; want Readable %v", tt.body, s, err, tt.want)
		}
	}
}
