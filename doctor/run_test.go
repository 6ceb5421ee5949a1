package doctor

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/store"
)

var needed = []string{"list:users", "admin:auth_state", "admin:users", "read:servers"}

// fakeHub answers GET /hub/api/user with status and identity.
func fakeHub(t *testing.T, status int, id hubclient.Identity) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hub/api/user" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != http.StatusOK {
			fmt.Fprint(w, `{"status": 403, "message": "Action is not authorized with current scopes; requires any of [read:users:name]"}`)
			return
		}
		json.NewEncoder(w).Encode(id)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/hub/api"
}

// TestCheckHub: a missing scope fails naming it, a refused token fails, a
// powerful scope the settings do not need warns, exactly the needed
// scopes pass.
func TestCheckHub(t *testing.T) {
	svc := func(scopes ...string) hubclient.Identity {
		return hubclient.Identity{Kind: "service", Name: "tokenkeeper", Scopes: scopes}
	}
	tests := []struct {
		name     string
		status   int
		id       hubclient.Identity
		want     Status
		wantText string
	}{
		{"exactly", 200, svc(needed...), OK, "no more"},
		{"missing", 200, svc("list:users", "admin:users", "read:servers"), Fail, "lacks admin:auth_state"},
		{"excess", 200, svc(append(slices.Clone(needed), "tokens")...), Warn, "tokens"},
		{"refused", 403, hubclient.Identity{}, Fail, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			c.Hub.APIURL = fakeHub(t, tt.status, tt.id)
			hub := hubclient.New(c.Hub.APIURL, "hub-t0ken")
			excess := func(id hubclient.Identity) []string {
				if slices.Contains(id.Scopes, "tokens") {
					return []string{"tokens"}
				}
				return nil
			}
			r := checkHub(t.Context(), Deps{Config: c, HubSelf: hub.Self, NeededScopes: needed, ExcessScopes: excess})
			if r.Status != tt.want || !strings.Contains(r.Detail, tt.wantText) {
				t.Errorf("checkHub = %v %q, want %v naming %q", r.Status, r.Detail, tt.want, tt.wantText)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		c := testConfig()
		c.Hub.APIURL = "http://127.0.0.1:1/hub/api"
		hub := hubclient.New(c.Hub.APIURL, "hub-t0ken")
		r := checkHub(t.Context(), Deps{Config: c, HubSelf: hub.Self, NeededScopes: needed})
		if r.Status != Fail || !strings.Contains(r.Detail, "did not answer") {
			t.Errorf("checkHub with no hub = %v %q, want a failure saying it did not answer", r.Status, r.Detail)
		}
	})
}

// sealedDatabase makes a database holding one journal entry sealed with key.
func sealedDatabase(t *testing.T, key []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokenkeeper.db")
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ring, err := refresh.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	p := store.Pending{User: "alice", Created: time.UnixMilli(time.Now().UnixMilli())}
	p.Sealed = ring.Seal(p, []byte(`{"refresh_token":"alice-refresh"}`))
	if err := db.Apply(t.Context(), store.Change{Pending: &p}); err != nil {
		t.Fatal(err)
	}
	return path
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// opener opens journal entries with keys, as cmd/tokenkeeper wires it.
func opener(t *testing.T, keys ...[]byte) func(store.Pending) error {
	ring, err := refresh.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return func(p store.Pending) error { _, err := ring.Open(p); return err }
}

// TestCheckDatabase: the key that sealed the journal opens it (also as the
// older of two); another key fails; a database from a newer tokenkeeper
// fails; no file yet passes when its directory is writable. Nothing the
// check does lasts: the schema and the journal are as they were.
func TestCheckDatabase(t *testing.T) {
	tests := []struct {
		name string
		keys [][]byte
		want [2]Status
	}{
		{"the sealing key", [][]byte{key(1)}, [2]Status{OK, OK}},
		{"rotated, old key kept", [][]byte{key(2), key(1)}, [2]Status{OK, OK}},
		{"another key", [][]byte{key(2)}, [2]Status{OK, Fail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sealedDatabase(t, key(1))
			c := testConfig()
			c.Database = path
			rs := checkDatabase(t.Context(), Deps{Config: c, Inspect: store.Inspect, OpenJournal: opener(t, tt.keys...)})
			if got := [2]Status{rs[0].Status, rs[1].Status}; got != tt.want {
				t.Errorf("checkDatabase = %v (%q, %q), want %v", got, rs[0].Detail, rs[1].Detail, tt.want)
			}
			if in, err := store.Inspect(t.Context(), path); err != nil || len(in.Pending) != 1 || in.Version != store.SchemaVersion {
				t.Errorf("after the check: %d entries, version %d, %v; want the one entry at version %d", len(in.Pending), in.Version, err, store.SchemaVersion)
			}
			if tables := tableNames(t, path); slices.Contains(tables, "tokenkeeper_write_probe") {
				t.Errorf("the write probe's table outlived the check: %v", tables)
			}
		})
	}
	t.Run("newer schema", func(t *testing.T) {
		path := sealedDatabase(t, key(1))
		setVersion(t, path, store.SchemaVersion+1)
		c := testConfig()
		c.Database = path
		rs := checkDatabase(t.Context(), Deps{Config: c, Inspect: store.Inspect, OpenJournal: opener(t, key(1))})
		if rs[0].Status != Fail || !strings.Contains(rs[0].Fix, "newer") || rs[1].Status != Skipped {
			t.Errorf("checkDatabase on a newer schema = %+v, want a failure pointing at a newer release", rs)
		}
	})
	t.Run("no file yet", func(t *testing.T) {
		c := testConfig()
		c.Database = filepath.Join(t.TempDir(), "new.db")
		rs := checkDatabase(t.Context(), Deps{Config: c, Inspect: store.Inspect, OpenJournal: opener(t, key(1))})
		if rs[0].Status != OK || !strings.Contains(rs[0].Detail, "creates it") {
			t.Errorf("checkDatabase with no file = %+v, want ok", rs[0])
		}
	})
	t.Run("directory missing", func(t *testing.T) {
		c := testConfig()
		c.Database = filepath.Join(t.TempDir(), "gone", "new.db")
		rs := checkDatabase(t.Context(), Deps{Config: c, Inspect: store.Inspect, OpenJournal: opener(t, key(1))})
		if rs[0].Status != Fail || !strings.Contains(rs[0].Fix, "writ") {
			t.Errorf("checkDatabase in a missing directory = %+v, want a write failure", rs[0])
		}
	})
}

func setVersion(t *testing.T, path string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}

func tableNames(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		names = append(names, n)
	}
	return names
}

// secrets are the secrets TestRunPrintsNoSecret configures; none may show.
var secrets = []string{"hub-s3cret", "sa-s3cret", "admin-s3cret", "hub-t0ken", "alice-refresh", "eyJ"}

// TestRunPrintsNoSecret runs every check against fakes that refuse what
// they can (the secret, the service account's token exchange, the hub
// token, the journal) and finds none of the configured secrets, tokens
// or the journal's plaintext in the checklist; the failures make Failed
// true and every failure carries a fix.
func TestRunPrintsNoSecret(t *testing.T) {
	kc := newFakeKeycloak(t)
	access := jwt(map[string]any{"realm_access": map[string]any{"roles": []string{"offline_access"}}})
	kc.token = func(form map[string][]string) (int, string) {
		switch form["grant_type"][0] {
		case "client_credentials":
			return 200, tokenBody(access)
		case "refresh_token":
			return 401, keycloakBody("invalid_client", "Invalid client or Invalid client credentials")
		}
		return 400, keycloakBody("invalid_request", "Requested audience not available: trino")
	}
	c := testConfig()
	c.IssuerURL, c.ClientSecret = kc.realm(), "hub-s3cret"
	c.ServiceAccountClientID, c.ServiceAccountSecret, c.ServiceTokenAudiences = "tk-sa", "sa-s3cret", []string{"trino"}
	c.Hub.APIURL = fakeHub(t, 403, hubclient.Identity{})
	c.Hub.APIToken = "hub-t0ken"
	c.Database = sealedDatabase(t, key(1))
	k := keycloak.New(kc.realm(), c.ClientID, c.ClientSecret, kc.srv.Client())
	sa := serviceaccount.New(t.Context(), kc.srv.Client(), "tk-sa", "sa-s3cret", k.Endpoint, time.Second)
	d := Deps{
		Config: c, Discover: k.Endpoint, Refresh: k.Refresh,
		ServiceToken: serviceaccount.NewHandout(sa, k.As("tk-sa", "sa-s3cret").Exchange, c.ServiceTokenAudiences, time.Now).Token,
		HubSelf:      hubclient.New(c.Hub.APIURL, "hub-t0ken").Self, NeededScopes: needed,
		Inspect: store.Inspect, OpenJournal: opener(t, key(2)), Timeout: 5 * time.Second,
	}
	results := Run(t.Context(), d)
	var out bytes.Buffer
	Print(&out, results)
	for _, s := range secrets {
		if strings.Contains(out.String(), s) {
			t.Errorf("the checklist shows %q:\n%s", s, &out)
		}
	}
	if !Failed(results) {
		t.Errorf("Failed = false, want true:\n%s", &out)
	}
	for _, want := range []string{"FAIL    hub client secret:", "FAIL    service token exchange for audience trino:",
		"FAIL    hub scopes:", "FAIL    state key:", "skipped admin client:", "ok      keycloak discovery:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the checklist lacks %q:\n%s", want, &out)
		}
	}
	for _, r := range results {
		if r.Status == Fail && r.Fix == "" {
			t.Errorf("%s failed without a fix", r.Name)
		}
	}
}

// TestRunSkipsKeycloakAfterDiscoveryFails: every Keycloak check is
// skipped, naming the reason, and the hub and database are still checked.
func TestRunSkipsKeycloakAfterDiscoveryFails(t *testing.T) {
	c := testConfig()
	c.Audiences, c.IdentityProviders = []string{"trino"}, []string{"external"}
	c.Database = filepath.Join(t.TempDir(), "tokenkeeper.db")
	d := Deps{
		Config: c,
		Discover: func(context.Context) (oauth2.Endpoint, error) {
			return oauth2.Endpoint{}, errors.New("dial tcp: connection refused")
		},
		HubSelf: func(context.Context) (hubclient.Identity, error) {
			return hubclient.Identity{Kind: "service", Name: "tokenkeeper", Scopes: needed}, nil
		},
		NeededScopes: needed, ExcessScopes: func(hubclient.Identity) []string { return nil },
		Inspect: store.Inspect, OpenJournal: func(store.Pending) error { return nil }, Timeout: time.Second,
	}
	results := Run(t.Context(), d)
	names := map[string]Status{}
	for _, r := range results {
		names[r.Name] = r.Status
		if r.Status == Skipped && !strings.Contains(r.Detail, "discovery failed") && r.Name != nameStateKey {
			t.Errorf("%s skipped for %q, want the failed discovery named", r.Name, r.Detail)
		}
	}
	for _, n := range []string{nameSecret, nameRotation, nameSID, nameBackchannel, audienceName("trino"), providerName("external")} {
		if names[n] != Skipped {
			t.Errorf("%s = %v, want skipped", n, names[n])
		}
	}
	if names[nameHub] != OK || names[nameDatabase] != OK {
		t.Errorf("hub, database = %v, %v; want both checked and ok", names[nameHub], names[nameDatabase])
	}
}
