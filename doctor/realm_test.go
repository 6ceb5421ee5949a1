package doctor

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

func ptr[T any](v T) *T { return &v }

// goodRealm is the test realm's settings.
func goodRealm() serviceaccount.RealmSettings {
	return serviceaccount.RealmSettings{RevokeRefreshToken: ptr(true), RefreshTokenMaxReuse: ptr(1),
		AccessTokenLifespan: ptr(30), SSOSessionIdle: ptr(300), SSOSessionMax: ptr(1800)}
}

func testConfig() config.Config {
	c := config.Default()
	c.IssuerURL, c.AdminClientID, c.RefreshTokenMaxReuse = "https://kc.example.org/realms/r", "tk-admin", 1
	c.SweepInterval, c.HTTPTimeout = config.Duration(15*time.Second), config.Duration(10*time.Second)
	return c
}

// TestRealmChecks: rotation off, Max Reuse above the realm's and sessions
// that idle out between sweeps fail; the README's settings pass.
func TestRealmChecks(t *testing.T) {
	tests := []struct {
		name     string
		change   func(r *serviceaccount.RealmSettings, c *config.Config, attrs map[string]string)
		want     [3]Status
		wantText string
	}{
		{"README's settings", func(*serviceaccount.RealmSettings, *config.Config, map[string]string) {}, [3]Status{OK, OK, OK}, "access token 30s"},
		{"rotation off", func(r *serviceaccount.RealmSettings, _ *config.Config, _ map[string]string) {
			r.RevokeRefreshToken = ptr(false)
		},
			[3]Status{Fail, OK, OK}, "Revoke Refresh Token is off"},
		{"tokenkeeper reuses beyond the realm", func(r *serviceaccount.RealmSettings, c *config.Config, _ map[string]string) {
			r.RefreshTokenMaxReuse, c.RefreshTokenMaxReuse = ptr(0), 1
		}, [3]Status{OK, Fail, OK}, "the realm allows 0"},
		{"tokenkeeper reuses less", func(r *serviceaccount.RealmSettings, c *config.Config, _ map[string]string) {
			r.RefreshTokenMaxReuse, c.RefreshTokenMaxReuse = ptr(2), 1
		}, [3]Status{OK, Warn, OK}, "the realm allows 2"},
		{"no reuse on either side", func(r *serviceaccount.RealmSettings, c *config.Config, _ map[string]string) {
			r.RefreshTokenMaxReuse, c.RefreshTokenMaxReuse = ptr(0), 0
		}, [3]Status{OK, Warn, OK}, "logs its user out"},
		{"idle shorter than a sweep's reach", func(r *serviceaccount.RealmSettings, _ *config.Config, _ map[string]string) {
			r.SSOSessionIdle = ptr(40)
		},
			[3]Status{OK, OK, Fail}, "idle out before a sweep"},
		{"the client's idle override is what counts", func(_ *serviceaccount.RealmSettings, _ *config.Config, a map[string]string) {
			a["client.session.idle.timeout"] = "20"
		}, [3]Status{OK, OK, Fail}, "session idle 20s"},
		{"access tokens of a day", func(r *serviceaccount.RealmSettings, _ *config.Config, _ map[string]string) {
			r.AccessTokenLifespan, r.SSOSessionMax = ptr(86400), ptr(864000)
		}, [3]Status{OK, OK, Warn}, "outside 30 s – 1 h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, c, attrs := goodRealm(), testConfig(), map[string]string{}
			tt.change(&r, &c, attrs)
			a := adminView{realm: r, hub: serviceaccount.ClientSettings{Attributes: attrs}}
			rs := realmChecks(a, Deps{Config: c})
			var got [3]Status
			var text string
			for i, res := range rs {
				got[i] = res.Status
				text += res.Detail + " | "
				if (res.Status == Fail || res.Status == Warn) && res.Fix == "" {
					t.Errorf("%s: %v without a fix", res.Name, res.Status)
				}
			}
			if got != tt.want || !strings.Contains(text, tt.wantText) {
				t.Errorf("realmChecks = %v (%s), want %v naming %q", got, text, tt.want, tt.wantText)
			}
		})
	}
}

// TestAdminView: without an admin client the realm checks are skipped with
// the reason; an admin client without a token fails its own line and
// skips the rest; one without view-realm (Keycloak shows the name only)
// skips the realm checks naming the role.
func TestAdminView(t *testing.T) {
	tokenErr := errors.New(`service account: oauth2: "invalid_client" "Invalid client or Invalid client credentials"`)
	forbidden := &serviceaccount.AdminError{Op: "client", Status: 403, Err: errors.New("403 Forbidden")}
	tests := []struct {
		name      string
		admin     *Admin
		wantAdmin Status
		wantRealm Status
		wantSID   Status
		wantText  string
	}{
		{"none", nil, Skipped, Skipped, Warn, "admin_client_id"},
		{"no token", &Admin{Realm: func(context.Context) (serviceaccount.RealmSettings, error) {
			return serviceaccount.RealmSettings{}, tokenErr
		}},
			Fail, Skipped, Skipped, "got no token"},
		{"name only", &Admin{
			Realm: func(context.Context) (serviceaccount.RealmSettings, error) {
				return serviceaccount.RealmSettings{}, nil
			},
			Client: func(context.Context, string) (serviceaccount.ClientSettings, error) {
				return serviceaccount.ClientSettings{}, forbidden
			},
		}, OK, Skipped, Skipped, "view-realm"},
		{"all readable", &Admin{
			Realm: func(context.Context) (serviceaccount.RealmSettings, error) { return goodRealm(), nil },
			Client: func(context.Context, string) (serviceaccount.ClientSettings, error) {
				return serviceaccount.ClientSettings{DefaultScopes: []string{"basic", "profile"}}, nil
			},
		}, OK, OK, OK, "basic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Deps{Config: testConfig(), Admin: tt.admin}
			a := newAdminView(t.Context(), d)
			realm, sid := realmChecks(a, d)[0], checkSID(a, d)
			if a.results[0].Status != tt.wantAdmin || realm.Status != tt.wantRealm || sid.Status != tt.wantSID {
				t.Fatalf("admin, rotation, sid = %v, %v, %v; want %v, %v, %v", a.results[0].Status, realm.Status, sid.Status,
					tt.wantAdmin, tt.wantRealm, tt.wantSID)
			}
			if all := a.results[0].Detail + realm.Detail + sid.Detail + sid.Fix; !strings.Contains(all, tt.wantText) {
				t.Errorf("details %q, want them to name %q", all, tt.wantText)
			}
		})
	}
}

// TestCheckSID: the basic scope, or a mapper of the sid claim, among the
// hub client's defaults passes; neither fails.
func TestCheckSID(t *testing.T) {
	tests := []struct {
		name   string
		scopes []string
		mapper serviceaccount.Mapper
		want   Status
	}{
		{"basic scope", []string{"acr", "basic", "profile"}, serviceaccount.Mapper{}, OK},
		{"a sid mapper", []string{"profile"}, serviceaccount.Mapper{Type: "oidc-usersessionmodel-note-mapper", Claim: "sid"}, OK},
		{"neither", []string{"acr", "profile", "email", "roles", "web-origins"}, serviceaccount.Mapper{Type: "oidc-audience-mapper", Audience: "trino"}, Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adminView{hub: serviceaccount.ClientSettings{DefaultScopes: tt.scopes, Mappers: []serviceaccount.Mapper{tt.mapper}}}
			r := checkSID(a, Deps{Config: testConfig(), Admin: &Admin{}})
			if r.Status != tt.want {
				t.Errorf("checkSID with %v = %v (%s), want %v", tt.scopes, r.Status, r.Detail, tt.want)
			}
		})
	}
}

// TestBackchannelChecks: a missing URL, one naming another endpoint and
// front-channel logout on fail; the session not required warns; the URL
// answering 400 from here passes, and no answer warns.
func TestBackchannelChecks(t *testing.T) {
	good := "https://hub.example.org/services/tokenkeeper/backchannel-logout"
	tests := []struct {
		name   string
		client serviceaccount.ClientSettings
		post   func(context.Context, string) (int, error)
		want   [2]Status
	}{
		{"good", settings(good, "true", false), answer(400, nil), [2]Status{OK, OK}},
		{"no URL", settings("", "true", false), answer(400, nil), [2]Status{Fail, Skipped}},
		{"another endpoint", settings("https://hub.example.org/hub/logout", "true", false), answer(404, nil), [2]Status{Fail, Warn}},
		{"front channel", settings(good, "true", true), answer(400, nil), [2]Status{Fail, OK}},
		{"session not required", settings(good, "false", false), answer(400, nil), [2]Status{Warn, OK}},
		{"unreachable from here", settings(good, "true", false), answer(0, errors.New("dial tcp: connection refused")), [2]Status{OK, Warn}},
		{"tokenkeeper not serving", settings(good, "true", false), answer(503, nil), [2]Status{OK, Warn}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Deps{Config: testConfig(), Admin: &Admin{}, PostForm: tt.post}
			rs := backchannelChecks(t.Context(), adminView{hub: tt.client}, d)
			if got := [2]Status{rs[0].Status, rs[1].Status}; got != tt.want {
				t.Errorf("backchannelChecks = %v (%q, %q), want %v", got, rs[0].Detail, rs[1].Detail, tt.want)
			}
		})
	}
}

func settings(u, sessionRequired string, frontchannel bool) serviceaccount.ClientSettings {
	return serviceaccount.ClientSettings{FrontchannelLogout: frontchannel, Attributes: map[string]string{
		"backchannel.logout.url": u, "backchannel.logout.session.required": sessionRequired}}
}

func answer(status int, err error) func(context.Context, string) (int, error) {
	return func(context.Context, string) (int, error) { return status, err }
}

// TestAudienceAndProviderChecks: exchange off on the hub client, an
// audience the realm lacks, a provider that stores no tokens or does not
// exist fail; an audience no mapper adds and tokens not readable warn.
func TestAudienceAndProviderChecks(t *testing.T) {
	notFound := &serviceaccount.AdminError{Op: "x", Status: http.StatusNotFound, Err: errors.New("404 Not Found")}
	hub := func(exchange string, audiences ...string) serviceaccount.ClientSettings {
		s := serviceaccount.ClientSettings{Attributes: map[string]string{"standard.token.exchange.enabled": exchange}}
		for _, a := range audiences {
			s.Mappers = append(s.Mappers, serviceaccount.Mapper{Type: "oidc-audience-mapper", Audience: a})
		}
		return s
	}
	provider := func(p serviceaccount.ProviderSettings, err error) func(context.Context, string) (serviceaccount.ProviderSettings, error) {
		return func(context.Context, string) (serviceaccount.ProviderSettings, error) { return p, err }
	}
	readable := serviceaccount.ProviderSettings{Enabled: true, StoreToken: true, ReadTokenRoleOnCreate: true}
	tests := []struct {
		name     string
		hub      serviceaccount.ClientSettings
		clientOK bool
		provider func(context.Context, string) (serviceaccount.ProviderSettings, error)
		want     [2]Status
	}{
		{"good", hub("true", "trino"), true, provider(readable, nil), [2]Status{OK, OK}},
		{"exchange off", hub("false", "trino"), true, provider(readable, nil), [2]Status{Fail, OK}},
		{"audience not a client", hub("true", "trino"), false, provider(readable, nil), [2]Status{Fail, OK}},
		{"audience not in tokens", hub("true"), true, provider(readable, nil), [2]Status{Warn, OK}},
		{"no such provider", hub("true", "trino"), true, provider(serviceaccount.ProviderSettings{}, notFound), [2]Status{OK, Fail}},
		{"tokens not stored", hub("true", "trino"), true, provider(serviceaccount.ProviderSettings{Enabled: true}, nil), [2]Status{OK, Fail}},
		{"tokens not readable", hub("true", "trino"), true,
			provider(serviceaccount.ProviderSettings{Enabled: true, StoreToken: true}, nil), [2]Status{OK, Warn}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			c.Audiences, c.IdentityProviders = []string{"trino"}, []string{"external"}
			admin := &Admin{Provider: tt.provider, Client: func(context.Context, string) (serviceaccount.ClientSettings, error) {
				if tt.clientOK {
					return serviceaccount.ClientSettings{}, nil
				}
				return serviceaccount.ClientSettings{}, notFound
			}}
			d := Deps{Config: c, Admin: admin}
			a := adminView{hub: tt.hub}
			aud, prov := audienceChecks(t.Context(), a, d)[0], providerChecks(t.Context(), a, d)[0]
			if got := [2]Status{aud.Status, prov.Status}; got != tt.want {
				t.Errorf("audience, provider = %v (%q, %q), want %v", got, aud.Detail, prov.Detail, tt.want)
			}
		})
	}
}
