package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// doctorEnv is a daemon's environment against a fake Keycloak realm and a
// fake hub: Keycloak authenticates the hub's client and refuses the
// made-up refresh token; the hub's token holds exactly the needed scopes.
func doctorEnv(t *testing.T, secretOK bool) (map[string]string, *recorder) {
	t.Helper()
	var kc *recorder
	kc = newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		realm := kc.srv.URL + "/realms/jupyter"
		switch {
		case r.URL.Path == "/realms/jupyter/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": realm, "token_endpoint": realm + "/protocol/openid-connect/token",
				"authorization_endpoint": realm + "/auth", "jwks_uri": realm + "/certs"})
		case secretOK:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Invalid refresh token"}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}`)
		}
	})
	hub := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"kind": "service", "name": "tokenkeeper",
			"scopes": requiredScopes(config.Default())})
	})
	return map[string]string{
		"JUPYTERHUB_API_TOKEN":      "svc-token",
		"JUPYTERHUB_API_URL":        hub.srv.URL + "/hub/api",
		"JUPYTERHUB_SERVICE_URL":    "http://127.0.0.1:10101",
		"JUPYTERHUB_SERVICE_PREFIX": "/services/tokenkeeper/",
		"JUPYTERHUB_SERVICE_NAME":   "tokenkeeper",
		"TOKENKEEPER_ISSUER_URL":    kc.srv.URL + "/realms/jupyter",
		"TOKENKEEPER_CLIENT_SECRET": "client-secret",
		"TOKENKEEPER_STATE_KEY":     stateKey,
		"TOKENKEEPER_DATABASE":      filepath.Join(t.TempDir(), "tokenkeeper.db"),
	}, kc
}

// TestRunDoctor runs `tokenkeeper doctor` with the daemon's environment
// (under the hub's variables, where the daemon would hold instead of
// exiting): it prints the checklist, fails exactly when a check fails, and
// shows no secret.
func TestRunDoctor(t *testing.T) {
	for _, secretOK := range []bool{true, false} {
		t.Run(fmt.Sprintf("secret accepted %v", secretOK), func(t *testing.T) {
			env, kc := doctorEnv(t, secretOK)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"doctor"}, envOf(env), &stdout, &stderr)
			if secretOK != (err == nil) || !secretOK && !errors.Is(err, errDoctorFailed) {
				t.Fatalf("run(doctor) = %v, want failure %v:\n%s", err, !secretOK, &stdout)
			}
			want := map[bool]string{true: "ok      hub client secret:", false: "FAIL    hub client secret:"}[secretOK]
			for _, line := range []string{want, "ok      keycloak discovery:", "ok      hub scopes:", "ok      database:", "ok      state key:"} {
				if !strings.Contains(stdout.String(), line) {
					t.Errorf("run(doctor) output lacks %q:\n%s", line, &stdout)
				}
			}
			for _, secret := range []string{"svc-token", "client-secret", stateKey} {
				if strings.Contains(stdout.String()+stderr.String(), secret) {
					t.Errorf("run(doctor) output contains the secret %q", secret)
				}
			}
			if len(kc.requests()) == 0 {
				t.Error("run(doctor) asked Keycloak nothing")
			}
		})
	}
}

// TestRunDoctorBadConfig: a configuration problem is a failed line of its
// own, naming the setting's variable, and nothing is contacted; a stray
// argument is a usage error; --help names the subcommand.
func TestRunDoctorBadConfig(t *testing.T) {
	env, kc := doctorEnv(t, true)
	delete(env, "TOKENKEEPER_ISSUER_URL")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"doctor"}, envOf(env), &stdout, &stderr)
	if !errors.Is(err, errDoctorFailed) || !strings.Contains(stdout.String(), "FAIL    configuration: issuer_url (TOKENKEEPER_ISSUER_URL)") {
		t.Errorf("run(doctor) without an issuer = %v:\n%s\nwant a failed configuration line", err, &stdout)
	}
	if n := len(kc.requests()); n != 0 {
		t.Errorf("run(doctor) with a bad configuration sent Keycloak %d requests, want 0", n)
	}
	err = run(t.Context(), []string{"doctor", "bogus"}, envOf(env), &stdout, &stderr)
	if !errors.As(err, new(*config.UsageError)) {
		t.Errorf("run(doctor bogus) = %v, want a usage error", err)
	}
	stderr.Reset()
	if err := run(t.Context(), []string{"--help"}, envOf(nil), &stdout, &stderr); err != nil ||
		!strings.Contains(stderr.String(), "tokenkeeper doctor [flags]") {
		t.Errorf("run(--help) = %v, usage %q; want it to name the doctor subcommand", err, &stderr)
	}
}
