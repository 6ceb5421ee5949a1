package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadConfigFile feeds arbitrary bytes as the JSON configuration file.
// Load must never panic, must never take a secret from the file, and must
// return a valid configuration whenever it reports no error.
func FuzzLoadConfigFile(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		`null`,
		`[]`,
		`{"issuer_url": "https://kc.example.org/realms/jupyter", "client_id": "jupyterhub"}`,
		`{"refresh_window": "90s", "sweep_interval": "10s", "concurrency": 4, "database": "x.db", "keep": "all", "log_level": "debug"}`,
		`{"client_secret": "x"}`,
		`{"client_secret_file": "/nonexistent"}`,
		`{"state_key_file": ""}`,
		`{"http_timeout": "-1s"}`,
		`{"concurrency": 1e400}`,
		`{"refresh_window": "9999999999999h"}`,
		`{"guard_min": 3, "guard_fraction": 0.25, "revoke_tokens": false, "stop_servers": true}`,
		`{"database": "a"} {"database": "b"}`,
		"{\"database\": \"\xff\"}",
		`{"admin_client_id": "admin", "admin_client_secret": "x"}`,
		`{"service_token_audiences": ["trino", ""], "allow_insecure_http": true, "issuer_url": "http://kc.example.org/realms/j"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "tokenkeeper.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := Load([]string{"--config", path}, envOf(validEnv()), &bytes.Buffer{})
		if got := c.ClientSecret.Reveal(); got != "client-secret" {
			t.Errorf("Load(file %q): ClientSecret = %q, want the environment's", data, got)
		}
		if err != nil {
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Errorf("Load(file %q) error = nil but Validate() = %v", data, verr)
		}
	})
}
