//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// `tokenkeeper doctor` runs as the built binary with the running
// tokenkeeper's own environment, read from /proc: the settings the hub gave
// it, its secrets included. Each test breaks the realm or the settings in
// one way through Keycloak's admin API (or an overriding variable), expects
// the matching line to fail and the exit status to be 1, and restores the
// realm when it ends.

// doctorRun is what one doctor run printed, and its exit status.
type doctorRun struct {
	code int
	out  string
}

// line returns the checklist line of the check named name, e.g.
// "FAIL    hub client secret: ...", or "".
func (r doctorRun) line(name string) string {
	sc := bufio.NewScanner(strings.NewReader(r.out))
	for sc.Scan() {
		// "%-7s %s: %s": the status in 7 columns, a space, the name.
		if l := sc.Text(); len(l) > 8 && strings.HasPrefix(l[8:], name+":") {
			return l
		}
	}
	return ""
}

// wantLine fails the test unless the check named name has status.
func (r doctorRun) wantLine(t *testing.T, status, name string) string {
	t.Helper()
	l := r.line(name)
	if !strings.HasPrefix(l, status+" ") {
		t.Errorf("doctor's %q line = %q, want %s; the whole checklist:\n%s", name, l, status, r.out)
	}
	return l
}

// runDoctor runs bin/tokenkeeper doctor with tokenkeeper's environment and
// the variables in extra (NAME=value) over it.
func runDoctor(t *testing.T, extra ...string) doctorRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(stack.cfg.Repo, "bin", "tokenkeeper"), "doctor")
	cmd.Env = append(tokenkeeperEnviron(t), extra...) // later values win
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return doctorRun{code: exit.ExitCode(), out: string(out)}
	case err != nil:
		t.Fatalf("run tokenkeeper doctor: %v\n%s", err, out)
	}
	return doctorRun{out: string(out)}
}

// tokenkeeperEnviron is the running tokenkeeper's environment.
func tokenkeeperEnviron(t *testing.T) []string {
	t.Helper()
	pids := tokenkeeperPIDs()
	if len(pids) != 1 {
		t.Fatalf("tokenkeeper processes = %v, want one", pids)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// grantClientRoles gives the service-account user of client clientID the
// realm-management roles, and takes them away again when the test ends.
func grantClientRoles(t *testing.T, clientID string, roles ...string) {
	t.Helper()
	ctx := context.Background()
	client, rm := clientUUID(t, clientID), clientUUID(t, "realm-management")
	var user struct {
		ID string `json:"id"`
	}
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "/clients/"+client+"/service-account-user", nil, &user); err != nil {
		t.Fatalf("service-account user of %s: %v", clientID, err)
	}
	var reps []map[string]any
	for _, r := range roles {
		var rep map[string]any
		if err := stack.KeycloakAdmin(ctx, http.MethodGet, "/clients/"+rm+"/roles/"+url.PathEscape(r), nil, &rep); err != nil {
			t.Fatalf("role %s: %v", r, err)
		}
		reps = append(reps, rep)
	}
	path := "/users/" + user.ID + "/role-mappings/clients/" + rm
	t.Cleanup(func() {
		if err := stack.KeycloakAdmin(ctx, http.MethodDelete, path, reps, nil); err != nil {
			t.Errorf("take %v away from %s: %v", roles, clientID, err)
		}
	})
	if err := stack.KeycloakAdmin(ctx, http.MethodPost, path, reps, nil); err != nil {
		t.Fatalf("give %v to %s: %v", roles, clientID, err)
	}
}

func clientUUID(t *testing.T, clientID string) string {
	t.Helper()
	id, err := stack.KeycloakClientUUID(context.Background(), clientID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// adminMayRead lets the admin client read the realm, its clients and its
// identity providers, as docs/doctor.md asks, for the test's duration.
func adminMayRead(t *testing.T) {
	t.Helper()
	grantClientRoles(t, "tokenkeeper-admin", "view-realm", "view-clients", "view-identity-providers")
}

// setHubClientAttribute sets one attribute of the hub's client and puts
// the old value back when the test ends.
func setHubClientAttribute(t *testing.T, key, value string) {
	t.Helper()
	ctx := context.Background()
	id := clientUUID(t, "jupyterhub")
	var client struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "/clients/"+id, nil, &client); err != nil {
		t.Fatal(err)
	}
	set := func(v string) error {
		return stack.KeycloakAdmin(ctx, http.MethodPut, "/clients/"+id, map[string]any{"attributes": map[string]string{key: v}}, nil)
	}
	old := client.Attributes[key]
	t.Cleanup(func() {
		if err := set(old); err != nil {
			t.Errorf("restore %s: %v", key, err)
		}
	})
	if err := set(value); err != nil {
		t.Fatalf("set %s: %v", key, err)
	}
}

// TestDoctorPassesOnTheStack: on the stack's realm, with the admin client
// allowed to read it, every check passes, the exit status is 0, and no
// secret of the configuration shows.
func TestDoctorPassesOnTheStack(t *testing.T) {
	adminMayRead(t)
	r := runDoctor(t)
	t.Logf("the stack's checklist:\n%s", r.out)
	if r.code != 0 {
		t.Errorf("doctor exit status = %d, want 0:\n%s", r.code, r.out)
	}
	for _, name := range []string{"keycloak discovery", "hub client secret", "admin client", "refresh token rotation",
		"refresh token max reuse", "session and token lifespans", "sid in access tokens", "back-channel logout",
		"back-channel logout reachable", "token exchange for audience trino", "stored tokens of identity provider external",
		"service account", "service token exchange for audience trino", "hub scopes", "database", "state key"} {
		r.wantLine(t, "ok", name)
	}
	for _, l := range strings.Split(strings.TrimSpace(r.out), "\n") {
		if !strings.HasPrefix(l, "ok ") && !strings.HasPrefix(l, "skipped ") && !strings.Contains(l, " failed, ") {
			t.Errorf("doctor line %q is neither ok nor skipped", l)
		}
	}
	for _, secret := range []string{stack.ClientSecret, stack.SASecret, stack.AdminSecret, stack.StateKey, envValue(t, "JUPYTERHUB_API_TOKEN")} {
		if strings.Contains(r.out, secret) {
			t.Errorf("doctor printed a secret:\n%s", r.out)
		}
	}
}

func envValue(t *testing.T, name string) string {
	t.Helper()
	for _, kv := range tokenkeeperEnviron(t) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok && v != "" {
			return v
		}
	}
	t.Fatalf("tokenkeeper's environment has no %s", name)
	return ""
}

// TestDoctorFindsAWrongClientSecret: Keycloak refuses the hub client's
// authentication.
func TestDoctorFindsAWrongClientSecret(t *testing.T) {
	r := runDoctor(t, "TOKENKEEPER_CLIENT_SECRET=not-the-secret")
	if l := r.wantLine(t, "FAIL", "hub client secret"); !strings.Contains(l, "client") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and Keycloak's refusal", r.code, l)
	}
	if strings.Contains(r.out, "not-the-secret") {
		t.Errorf("doctor printed the configured secret:\n%s", r.out)
	}
}

// TestDoctorFindsAnUnresolvableIssuer: the issuer's host does not resolve,
// and the Keycloak checks after discovery are skipped, not failed.
func TestDoctorFindsAnUnresolvableIssuer(t *testing.T) {
	r := runDoctor(t, "TOKENKEEPER_ISSUER_URL=https://keycloak.tokenkeeper-doctor.invalid/realms/jupyter")
	if l := r.wantLine(t, "FAIL", "keycloak discovery"); !strings.Contains(l, "does not resolve") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and an unresolvable host", r.code, l)
	}
	r.wantLine(t, "skipped", "hub client secret")
	r.wantLine(t, "ok", "hub scopes")
}

// TestDoctorFindsRotationOff: the realm's Revoke Refresh Token is off.
func TestDoctorFindsRotationOff(t *testing.T) {
	adminMayRead(t)
	setRealm(t, map[string]any{"revokeRefreshToken": false})
	r := runDoctor(t)
	if l := r.wantLine(t, "FAIL", "refresh token rotation"); !strings.Contains(l, "Revoke Refresh Token is off") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and rotation off", r.code, l)
	}
}

// TestDoctorFindsNoSID: the hub client lacks Keycloak's basic client scope.
func TestDoctorFindsNoSID(t *testing.T) {
	adminMayRead(t)
	ctx := context.Background()
	var scopes []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "/client-scopes", nil, &scopes); err != nil {
		t.Fatal(err)
	}
	basic := ""
	for _, s := range scopes {
		if s.Name == "basic" {
			basic = s.ID
		}
	}
	if basic == "" {
		t.Fatal("the realm has no basic client scope")
	}
	path := "/clients/" + clientUUID(t, "jupyterhub") + "/default-client-scopes/" + basic
	t.Cleanup(func() {
		if err := stack.KeycloakAdmin(ctx, http.MethodPut, path, nil, nil); err != nil {
			t.Errorf("give the hub client its basic scope back: %v", err)
		}
	})
	if err := stack.KeycloakAdmin(ctx, http.MethodDelete, path, nil, nil); err != nil {
		t.Fatal(err)
	}
	r := runDoctor(t)
	if l := r.wantLine(t, "FAIL", "sid in access tokens"); !strings.Contains(l, "basic") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and the missing basic scope", r.code, l)
	}
}

// TestDoctorFindsNoBackchannelURL: the hub client has no back-channel
// logout URL.
func TestDoctorFindsNoBackchannelURL(t *testing.T) {
	adminMayRead(t)
	setBackchannelURL(t, "")
	r := runDoctor(t)
	if l := r.wantLine(t, "FAIL", "back-channel logout"); !strings.Contains(l, "no Backchannel logout URL") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and the missing URL", r.code, l)
	}
}

// TestDoctorFindsTokenExchangeOff: the hub client may not exchange tokens
// for the configured audience.
func TestDoctorFindsTokenExchangeOff(t *testing.T) {
	adminMayRead(t)
	setHubClientAttribute(t, "standard.token.exchange.enabled", "false")
	r := runDoctor(t)
	if l := r.wantLine(t, "FAIL", "token exchange for audience trino"); !strings.Contains(l, "Standard token exchange is off") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and exchange off", r.code, l)
	}
}

// TestDoctorFindsAnAdminServiceAccount: the service account holds a
// realm-management role, so its token may not be handed out.
func TestDoctorFindsAnAdminServiceAccount(t *testing.T) {
	t.Cleanup(func() { waitServiceTokenServed(t) })
	grantClientRoles(t, "tokenkeeper-sa", "view-users")
	r := runDoctor(t)
	if l := r.wantLine(t, "FAIL", "service account"); !strings.Contains(l, "realm-management:view-users") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and the admin role named", r.code, l)
	}
}

// waitServiceTokenServed waits, once the role is gone, until the running
// tokenkeeper's cached service-account token (which carried it) has made
// way for a clean one, so that later tests on the stack get service tokens.
func waitServiceTokenServed(t *testing.T) {
	err := Poll(context.Background(), time.Minute, 500*time.Millisecond, func() (bool, error) {
		status, _ := getJSON(t, stack.TestToken, "service-token")
		return status == http.StatusOK, nil
	})
	if err != nil {
		t.Errorf("service-token not served again after the admin role was taken away: %v", err)
	}
}

// TestDoctorFindsAHubTokenLackingAScope: the hub token lacks admin:users
// (a hub admin's token with fewer scopes stands for tokenkeeper's).
func TestDoctorFindsAHubTokenLackingAScope(t *testing.T) {
	token, err := stack.UserToken(context.Background(), "mallory", "list:users", "read:servers")
	if err != nil {
		t.Fatal(err)
	}
	r := runDoctor(t, "JUPYTERHUB_API_TOKEN="+token)
	if l := r.wantLine(t, "FAIL", "hub scopes"); !strings.Contains(l, "lacks") || !strings.Contains(l, "admin:users") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and admin:users named", r.code, l)
	}
	if strings.Contains(r.out, token) {
		t.Errorf("doctor printed the hub token:\n%s", r.out)
	}
}

// TestDoctorFindsAWrongStateKey: a database whose journal entry was sealed
// with the stack's state key opens with it and fails with another.
func TestDoctorFindsAWrongStateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenkeeper.db")
	sealJournalEntry(t, path, stack.StateKey)
	r := runDoctor(t, "TOKENKEEPER_DATABASE="+path)
	r.wantLine(t, "ok", "state key")
	other := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	r = runDoctor(t, "TOKENKEEPER_DATABASE="+path, "TOKENKEEPER_STATE_KEY="+other)
	if l := r.wantLine(t, "FAIL", "state key"); !strings.Contains(l, "1 of 1") || r.code != 1 {
		t.Errorf("exit status %d, line %q; want 1 and the entry that no key opens", r.code, l)
	}
	if in, err := store.Inspect(context.Background(), path); err != nil || len(in.Pending) != 1 {
		t.Errorf("after doctor the journal has %d entries (%v), want the 1 it had", len(in.Pending), err)
	}
}

// sealJournalEntry writes a database at path holding one journal entry
// sealed with the base64 key.
func sealJournalEntry(t *testing.T, path, key string) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := refresh.NewKeyring(raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := store.Pending{User: "doctor-test", Created: time.UnixMilli(time.Now().UnixMilli())}
	p.Sealed = ring.Seal(p, []byte(`{"access_token":"a","refresh_token":"r"}`))
	if err := db.Apply(context.Background(), store.Change{Pending: &p}); err != nil {
		t.Fatal(err)
	}
}
