package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// envOf returns a getenv that reads m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// validEnv is the smallest environment Load accepts: what JupyterHub always
// sets plus the three settings without defaults.
func validEnv() map[string]string {
	return map[string]string{
		"JUPYTERHUB_API_TOKEN":      "hub-api-token",
		"TOKENKEEPER_ISSUER_URL":    "https://kc.example.org/realms/jupyter",
		"TOKENKEEPER_CLIENT_SECRET": "client-secret",
		"TOKENKEEPER_STATE_KEY":     stateKeyBase64,
	}
}

// stateKeyBase64 and stateKeyHex encode the same 32-byte key.
const (
	stateKeyRaw    = "0123456789abcdef0123456789abcdef"
	stateKeyBase64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	stateKeyHex    = "3031323334353637383961626364656630313233343536373839616263646566"
)

// writeFile writes content to name in a fresh temporary directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, args []string, env map[string]string) Config {
	t.Helper()
	c, _, err := Load(args, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Load(%q) error: %v", args, err)
	}
	return c
}

func TestLoadDefaults(t *testing.T) {
	c := mustLoad(t, nil, validEnv())
	want := Default()
	want.IssuerURL = "https://kc.example.org/realms/jupyter"
	want.ClientSecret = "client-secret"
	want.StateKey = stateKeyBase64
	want.Hub.APIToken = "hub-api-token"
	want.Hub.AccessScopes = []string{"access:services", "access:services!service=tokenkeeper"}
	want.Hub.BaseURL, want.Hub.ClientID = "/", "service-tokenkeeper"
	want.Hub.OAuthCallbackURL = "/services/tokenkeeper/oauth_callback"
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Load(nil) mismatch (-want +got):\n%s", diff)
	}
}

// TestLoadPrecedence checks every setting that can come from more than one
// place, layer by layer: defaults, then the JSON file, then TOKENKEEPER_*
// variables, then flags.
func TestLoadPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		fileKey string // JSON key, with its value already encoded
		fileVal string
		envKey  string
		envVal  string
		flag    string
		get     func(Config) any
		want    [4]any // default, file, env, flag
		// defaultInvalid is set when the setting has no usable default.
		defaultInvalid bool
	}{
		{
			name:    "issuer",
			fileKey: "issuer_url", fileVal: `"https://file.example/realms/f"`,
			envKey: "TOKENKEEPER_ISSUER_URL", envVal: "https://env.example/realms/e",
			flag: "--issuer=https://flag.example/realms/g",
			get:  func(c Config) any { return c.IssuerURL },
			want: [4]any{"", "https://file.example/realms/f", "https://env.example/realms/e", "https://flag.example/realms/g"},
			// No issuer at all is a validation error.
			defaultInvalid: true,
		},
		{
			name:    "client id",
			fileKey: "client_id", fileVal: `"from-file"`,
			envKey: "TOKENKEEPER_CLIENT_ID", envVal: "from-env",
			flag: "--client-id=from-flag",
			get:  func(c Config) any { return c.ClientID },
			want: [4]any{"jupyterhub", "from-file", "from-env", "from-flag"},
		},
		{
			name:    "refresh window",
			fileKey: "refresh_window", fileVal: `"2m"`,
			envKey: "TOKENKEEPER_REFRESH_WINDOW", envVal: "3m",
			flag: "--refresh-window=4m",
			get:  func(c Config) any { return time.Duration(c.RefreshWindow) },
			want: [4]any{time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute},
		},
		{
			name:    "sweep interval",
			fileKey: "sweep_interval", fileVal: `"20s"`,
			envKey: "TOKENKEEPER_SWEEP_INTERVAL", envVal: "25s",
			flag: "--sweep-interval=30s",
			get:  func(c Config) any { return time.Duration(c.SweepInterval) },
			want: [4]any{15 * time.Second, 20 * time.Second, 25 * time.Second, 30 * time.Second},
		},
		{
			name:    "concurrency",
			fileKey: "concurrency", fileVal: `2`,
			envKey: "TOKENKEEPER_CONCURRENCY", envVal: "3",
			flag: "--concurrency=4",
			get:  func(c Config) any { return c.Concurrency },
			want: [4]any{8, 2, 3, 4},
		},
		{
			name:    "database",
			fileKey: "database", fileVal: `"file.db"`,
			envKey: "TOKENKEEPER_DATABASE", envVal: "env.db",
			flag: "--db=flag.db",
			get:  func(c Config) any { return c.Database },
			want: [4]any{"tokenkeeper.db", "file.db", "env.db", "flag.db"},
		},
		{
			name:    "keep",
			fileKey: "keep", fileVal: `"all"`,
			envKey: "TOKENKEEPER_KEEP", envVal: "running",
			flag: "--keep=all",
			get:  func(c Config) any { return c.Keep },
			want: [4]any{KeepRunning, KeepAll, KeepRunning, KeepAll},
		},
		{
			name:    "log level",
			fileKey: "log_level", fileVal: `"debug"`,
			envKey: "TOKENKEEPER_LOG_LEVEL", envVal: "warn",
			flag: "--log-level=error",
			get:  func(c Config) any { return c.LogLevel },
			want: [4]any{"info", "debug", "warn", "error"},
		},
	}
	layers := [4]string{"default", "file", "env", "flag"}
	for _, tt := range tests {
		for layer, layerName := range layers {
			t.Run(tt.name+"/"+layerName, func(t *testing.T) {
				env := validEnv()
				delete(env, tt.envKey)
				var args []string
				if layer >= 1 {
					path := writeFile(t, "tokenkeeper.json", fmt.Sprintf(`{%q: %s}`, tt.fileKey, tt.fileVal))
					args = append(args, "--config="+path)
				}
				if layer >= 2 {
					env[tt.envKey] = tt.envVal
				}
				if layer >= 3 {
					args = append(args, tt.flag)
				}
				c, _, err := Load(args, envOf(env), &bytes.Buffer{})
				if wantErr := layer == 0 && tt.defaultInvalid; (err != nil) != wantErr {
					t.Errorf("Load(%q) error = %v, want error %t", args, err, wantErr)
				}
				if got := tt.get(c); got != tt.want[layer] {
					t.Errorf("Load(%q): %s = %v, want %v", args, tt.name, got, tt.want[layer])
				}
			})
		}
	}
}

func TestLoadHTTPTimeoutFromFileAndEnv(t *testing.T) {
	path := writeFile(t, "c.json", `{"http_timeout": "20s"}`)
	c := mustLoad(t, []string{"--config", path}, validEnv())
	if got, want := time.Duration(c.HTTPTimeout), 20*time.Second; got != want {
		t.Errorf("HTTPTimeout from file = %v, want %v", got, want)
	}
	env := validEnv()
	env["TOKENKEEPER_HTTP_TIMEOUT"] = "30s"
	c = mustLoad(t, []string{"--config", path}, env)
	if got, want := time.Duration(c.HTTPTimeout), 30*time.Second; got != want {
		t.Errorf("HTTPTimeout from env over file = %v, want %v", got, want)
	}
}

func TestLoadConfigFileLocation(t *testing.T) {
	envFile := writeFile(t, "env.json", `{"database": "named-by-env.db"}`)
	flagFile := writeFile(t, "flag.json", `{"database": "named-by-flag.db"}`)
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{name: "TOKENKEEPER_CONFIG", env: envFile, want: "named-by-env.db"},
		{name: "flag", args: []string{"--config", flagFile}, want: "named-by-flag.db"},
		{name: "flag over TOKENKEEPER_CONFIG", args: []string{"--config", flagFile}, env: envFile, want: "named-by-flag.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env["TOKENKEEPER_CONFIG"] = tt.env
			c := mustLoad(t, tt.args, env)
			if c.Database != tt.want {
				t.Errorf("Load(%q) with TOKENKEEPER_CONFIG=%q: Database = %q, want %q", tt.args, tt.env, c.Database, tt.want)
			}
		})
	}
}

func TestLoadCheckConfigOption(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want Options
	}{
		{name: "absent", want: Options{}},
		{name: "set", args: []string{"--check-config"}, want: Options{CheckConfig: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, opts, err := Load(tt.args, envOf(validEnv()), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("Load(%q) error: %v", tt.args, err)
			}
			if opts != tt.want {
				t.Errorf("Load(%q) options = %+v, want %+v", tt.args, opts, tt.want)
			}
		})
	}
}

func TestLoadHubEnvironment(t *testing.T) {
	env := validEnv()
	env["JUPYTERHUB_API_URL"] = "https://hub.internal:8081/hub/api"
	env["JUPYTERHUB_SERVICE_URL"] = "http://127.0.0.1:18023"
	env["JUPYTERHUB_SERVICE_PREFIX"] = "/services/keeper/"
	env["JUPYTERHUB_SERVICE_NAME"] = "keeper"
	env["JUPYTERHUB_BASE_URL"] = "/jhub/"
	env["JUPYTERHUB_CLIENT_ID"] = "service-keeper-x"
	env["JUPYTERHUB_OAUTH_CALLBACK_URL"] = "/services/keeper/callback"
	c := mustLoad(t, nil, env)
	want := Hub{
		APIURL:           "https://hub.internal:8081/hub/api",
		APIToken:         "hub-api-token",
		ServiceURL:       "http://127.0.0.1:18023",
		Prefix:           "/services/keeper/",
		Name:             "keeper",
		AccessScopes:     []string{"access:services", "access:services!service=keeper"},
		BaseURL:          "/jhub/",
		ClientID:         "service-keeper-x",
		OAuthCallbackURL: "/services/keeper/callback",
	}
	if diff := cmp.Diff(want, c.Hub); diff != "" {
		t.Errorf("Load: Hub mismatch (-want +got):\n%s", diff)
	}
	if got := c.Hub.APIToken.Reveal(); got != "hub-api-token" {
		t.Errorf("Hub.APIToken.Reveal() = %q, want %q", got, "hub-api-token")
	}
}

// TestLoadHubBaseURL checks that JUPYTERHUB_BASE_URL alone (a sidecar's
// environment) gives the service prefix and hub API URL JupyterHub would,
// and that the hub's own variables still win.
func TestLoadHubBaseURL(t *testing.T) {
	tests := []struct {
		name           string
		env            map[string]string
		prefix, apiURL string
	}{
		{name: "no base URL", prefix: "/services/tokenkeeper/", apiURL: "http://127.0.0.1:8081/hub/api"},
		{name: "root", env: map[string]string{"JUPYTERHUB_BASE_URL": "/"},
			prefix: "/services/tokenkeeper/", apiURL: "http://127.0.0.1:8081/hub/api"},
		{name: "jhub", env: map[string]string{"JUPYTERHUB_BASE_URL": "/jhub/"},
			prefix: "/jhub/services/tokenkeeper/", apiURL: "http://127.0.0.1:8081/jhub/hub/api"},
		{name: "slashes added as JupyterHub adds them", env: map[string]string{"JUPYTERHUB_BASE_URL": "jhub"},
			prefix: "/jhub/services/tokenkeeper/", apiURL: "http://127.0.0.1:8081/jhub/hub/api"},
		{name: "service name", env: map[string]string{"JUPYTERHUB_BASE_URL": "/a/b/", "JUPYTERHUB_SERVICE_NAME": "keeper"},
			prefix: "/a/b/services/keeper/", apiURL: "http://127.0.0.1:8081/a/b/hub/api"},
		{name: "the hub's variables win", env: map[string]string{
			"JUPYTERHUB_BASE_URL":       "/jhub/",
			"JUPYTERHUB_SERVICE_PREFIX": "/jhub/services/other/",
			"JUPYTERHUB_API_URL":        "http://127.0.0.1:9000/jhub/hub/api",
		}, prefix: "/jhub/services/other/", apiURL: "http://127.0.0.1:9000/jhub/hub/api"},
		{name: "TOKENKEEPER_HUB_API_URL wins", env: map[string]string{
			"JUPYTERHUB_BASE_URL": "/jhub/", "TOKENKEEPER_HUB_API_URL": "http://127.0.0.1:9000/jhub/hub/api",
		}, prefix: "/jhub/services/tokenkeeper/", apiURL: "http://127.0.0.1:9000/jhub/hub/api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			c := mustLoad(t, nil, env)
			if c.Hub.Prefix != tt.prefix || c.Hub.APIURL != tt.apiURL {
				t.Errorf("Load with %v: prefix %q, API URL %q; want %q, %q", tt.env, c.Hub.Prefix, c.Hub.APIURL, tt.prefix, tt.apiURL)
			}
		})
	}
}

func TestLoadAccessScopes(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    []string
		wantErr bool
	}{
		{name: "unset uses the service name", value: "", want: []string{"access:services", "access:services!service=tokenkeeper"}},
		{name: "JSON list", value: `["access:services!service=tokenkeeper", "access:services"]`, want: []string{"access:services!service=tokenkeeper", "access:services"}},
		{name: "one scope", value: `["access:services!service=tokenkeeper"]`, want: []string{"access:services!service=tokenkeeper"}},
		{name: "not JSON", value: "access:services", wantErr: true},
		{name: "object", value: `{"a": 1}`, wantErr: true},
		{name: "list of numbers", value: `[1, 2]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] = tt.value
			c, _, err := Load(nil, envOf(env), &bytes.Buffer{})
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "JUPYTERHUB_OAUTH_ACCESS_SCOPES") {
					t.Errorf("Load with JUPYTERHUB_OAUTH_ACCESS_SCOPES=%q: error = %v, want one naming the variable", tt.value, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load with JUPYTERHUB_OAUTH_ACCESS_SCOPES=%q: %v", tt.value, err)
			}
			if diff := cmp.Diff(tt.want, c.Hub.AccessScopes); diff != "" {
				t.Errorf("Load with JUPYTERHUB_OAUTH_ACCESS_SCOPES=%q: AccessScopes mismatch (-want +got):\n%s", tt.value, diff)
			}
		})
	}
}

func TestLoadClientSecret(t *testing.T) {
	secretFile := writeFile(t, "secret", "  from-file\n")
	otherFile := writeFile(t, "other", "from-other-file")
	tests := []struct {
		name string
		file string // JSON config file content; empty for none
		env  map[string]string
		want Secret
	}{
		{
			name: "environment",
			env:  map[string]string{"TOKENKEEPER_CLIENT_SECRET": "from-env"},
			want: "from-env",
		},
		{
			name: "client_secret_file in the JSON file, trimmed",
			file: fmt.Sprintf(`{"client_secret_file": %q}`, secretFile),
			want: "from-file",
		},
		{
			name: "TOKENKEEPER_CLIENT_SECRET_FILE",
			env:  map[string]string{"TOKENKEEPER_CLIENT_SECRET_FILE": secretFile},
			want: "from-file",
		},
		{
			name: "TOKENKEEPER_CLIENT_SECRET_FILE over the JSON file",
			file: fmt.Sprintf(`{"client_secret_file": %q}`, otherFile),
			env:  map[string]string{"TOKENKEEPER_CLIENT_SECRET_FILE": secretFile},
			want: "from-file",
		},
		{
			name: "environment over file",
			file: fmt.Sprintf(`{"client_secret_file": %q}`, secretFile),
			env:  map[string]string{"TOKENKEEPER_CLIENT_SECRET": "from-env"},
			want: "from-env",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			delete(env, "TOKENKEEPER_CLIENT_SECRET")
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = []string{"--config", writeFile(t, "c.json", tt.file)}
			}
			c := mustLoad(t, args, env)
			if got := c.ClientSecret.Reveal(); got != tt.want.Reveal() {
				t.Errorf("Load: ClientSecret.Reveal() = %q, want %q", got, tt.want.Reveal())
			}
		})
	}
}

func TestLoadClientSecretNeverFromFlagOrJSON(t *testing.T) {
	tests := []struct {
		name string
		args []string
		file string
	}{
		{name: "flag --client-secret", args: []string{"--client-secret=from-flag"}},
		{name: "flag -client_secret", args: []string{"-client_secret", "from-flag"}},
		{name: "JSON key client_secret", file: `{"client_secret": "from-json"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			delete(env, "TOKENKEEPER_CLIENT_SECRET")
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "c.json", tt.file))
			}
			var stderr bytes.Buffer
			c, _, err := Load(args, envOf(env), &stderr)
			if err == nil {
				t.Fatalf("Load(%q) error = nil, want one", args)
			}
			if c.ClientSecret != "" {
				t.Errorf("Load(%q): ClientSecret.Reveal() = %q, want empty", args, c.ClientSecret.Reveal())
			}
			if tt.file == "" && !strings.Contains(stderr.String(), "flag provided but not defined") {
				t.Errorf("Load(%q) wrote %q to stderr, want the flag package's unknown-flag message", args, stderr.String())
			}
		})
	}
}

func TestLoadHelpListsNoSecretFlag(t *testing.T) {
	var stderr bytes.Buffer
	_, _, err := Load([]string{"-h"}, envOf(validEnv()), &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load(-h) error = %v, want flag.ErrHelp", err)
	}
	usage := stderr.String()
	if !strings.Contains(usage, "-issuer") {
		t.Errorf("Load(-h) usage = %q, want it to list -issuer", usage)
	}
	for _, l := range strings.Split(usage, "\n") {
		if strings.HasPrefix(l, "  -") && strings.Contains(strings.ToLower(l), "secret") {
			t.Errorf("Load(-h) usage lists the flag %q, want no secret flag", l)
		}
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string // substring of the error
	}{
		{name: "unknown key", content: `{"issuer": "https://kc.example.org/realms/jupyter"}`, want: `unknown key "issuer"`},
		{name: "hub section is not a file setting", content: `{"Hub": {"APIURL": "http://x"}}`, want: `unknown key "Hub"`},
		{name: "misspelled key", content: `{"sweep_intervall": "30s"}`, want: `unknown key "sweep_intervall"`},
		{name: "bad duration", content: `{"refresh_window": "soon"}`, want: `config file: refresh_window: "soon" must be a duration such as 30s`},
		{name: "number for duration", content: `{"refresh_window": 30}`, want: `config file: refresh_window: want a duration string such as "30s", not a JSON number`},
		{name: "string for int", content: `{"concurrency": "8"}`, want: "config file: concurrency: want a number, not a JSON string"},
		{name: "number in a list", content: `{"audiences": [1]}`, want: "config file: audiences: want a string, not a JSON number"},
		{name: "not an object", content: `["issuer_url"]`, want: "config file: want an object, not a JSON array"},
		{name: "truncated", content: `{"database": "x.db"`, want: "config file: the JSON ends early"},
		{name: "syntax error", content: "{\n  \"keep\": \"all\",\n  \"database\" x\n}", want: "config file: line 3, column 14: invalid character 'x'"},
		{name: "syntax error on the first line", content: `{"keep": all}`, want: "config file: line 1, column 10: invalid character 'a'"},
		{name: "trailing object", content: `{"database": "x.db"} {"keep": "all"}`, want: "trailing data"},
		{name: "null", content: `null`, want: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "c.json", tt.content)
			_, _, err := Load([]string{"--config", path}, envOf(validEnv()), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load with file %q: error = %v, want one containing %q", tt.content, err, tt.want)
			}
		})
	}
}

func TestLoadMissingFiles(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "config file", args: []string{"--config", filepath.Join(dir, "absent.json")}, want: "config file"},
		{
			name: "client secret file",
			env:  map[string]string{"TOKENKEEPER_CLIENT_SECRET": "", "TOKENKEEPER_CLIENT_SECRET_FILE": filepath.Join(dir, "absent")},
			want: "client_secret_file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			_, _, err := Load(tt.args, envOf(env), &bytes.Buffer{})
			if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%q) error = %v, want os.ErrNotExist mentioning %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestLoadReportsEveryProblem feeds a configuration that is wrong in many
// ways at once and expects every problem in the one error.
func TestLoadReportsEveryProblem(t *testing.T) {
	env := map[string]string{
		"JUPYTERHUB_SERVICE_PREFIX":  "/services/tokenkeeper",
		"JUPYTERHUB_API_URL":         "hub.internal:8081",
		"TOKENKEEPER_KEEP":           "sometimes",
		"TOKENKEEPER_LOG_LEVEL":      "loud",
		"TOKENKEEPER_CONCURRENCY":    "1000",
		"TOKENKEEPER_REFRESH_WINDOW": "soon",
		"TOKENKEEPER_CLIENT_ID":      "",
	}
	path := writeFile(t, "c.json", `{"sweep_interval": "10ms", "client_id": "", "database": ""}`)
	_, _, err := Load([]string{"--config", path, "--issuer", "ftp://kc.example.org"}, envOf(env), &bytes.Buffer{})
	if err == nil {
		t.Fatal("Load(bad configuration) error = nil, want every problem")
	}
	msg := err.Error()
	for _, want := range []string{
		"issuer_url (TOKENKEEPER_ISSUER_URL):",
		"client_id (TOKENKEEPER_CLIENT_ID):",
		"client secret:",
		"JUPYTERHUB_API_TOKEN:",
		"JUPYTERHUB_API_URL:",
		"JUPYTERHUB_SERVICE_PREFIX:",
		"TOKENKEEPER_REFRESH_WINDOW:",
		"sweep_interval:",
		"concurrency:",
		"database (TOKENKEEPER_DATABASE):",
		"keep:",
		"log_level:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Load(bad configuration) error does not mention %q; error:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n < 12 {
		t.Errorf("Load(bad configuration) reported %d problems, want at least 12:\n%s", n, msg)
	}
}

// TestLoadReportsFileAndEnvProblemsTogether checks that a broken file does
// not hide problems found elsewhere.
func TestLoadReportsFileAndEnvProblemsTogether(t *testing.T) {
	env := validEnv()
	env["TOKENKEEPER_CONCURRENCY"] = "many"
	env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] = "access:services"
	path := writeFile(t, "c.json", `{"unknown_key": true}`)
	_, _, err := Load([]string{"--config", path}, envOf(env), &bytes.Buffer{})
	if err == nil {
		t.Fatal("Load error = nil, want problems")
	}
	for _, want := range []string{`unknown key "unknown_key"`, "TOKENKEEPER_CONCURRENCY", "JUPYTERHUB_OAUTH_ACCESS_SCOPES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load error does not mention %q; error:\n%v", want, err)
		}
	}
}

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := Default()
		c.IssuerURL = "https://kc.example.org/realms/jupyter"
		c.ClientSecret = "s"
		c.Hub.APIToken = "t"
		c.StateKey = stateKeyBase64
		return c
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; empty for valid
	}{
		{name: "valid", modify: func(*Config) {}},
		{name: "http issuer", modify: func(c *Config) { c.IssuerURL = "http://127.0.0.1:8080/realms/jupyter" }},
		{name: "issuer without scheme", modify: func(c *Config) { c.IssuerURL = "kc.example.org/realms/jupyter" }, want: "issuer_url"},
		{name: "issuer without host", modify: func(c *Config) { c.IssuerURL = "https:///realms/jupyter" }, want: "issuer_url"},
		{name: "issuer not a URL", modify: func(c *Config) { c.IssuerURL = "https://kc example.org/\x7f" }, want: "issuer_url"},
		{name: "empty client id", modify: func(c *Config) { c.ClientID = "" }, want: "client_id"},
		{name: "no secret", modify: func(c *Config) { c.ClientSecret = "" }, want: "client secret"},
		{name: "no hub token", modify: func(c *Config) { c.Hub.APIToken = "" }, want: "JUPYTERHUB_API_TOKEN"},
		{name: "service url", modify: func(c *Config) { c.Hub.ServiceURL = "" }, want: "JUPYTERHUB_SERVICE_URL"},
		{name: "prefix without leading slash", modify: func(c *Config) { c.Hub.Prefix = "services/tokenkeeper/" }, want: "JUPYTERHUB_SERVICE_PREFIX"},
		{name: "zero refresh window", modify: func(c *Config) { c.RefreshWindow = 0 }, want: "refresh_window"},
		{name: "negative refresh window", modify: func(c *Config) { c.RefreshWindow = Duration(-time.Second) }, want: "refresh_window"},
		{name: "sweep interval 1s", modify: func(c *Config) { c.SweepInterval = Duration(time.Second) }},
		{name: "sweep interval below 1s", modify: func(c *Config) { c.SweepInterval = Duration(999 * time.Millisecond) }, want: "sweep_interval"},
		{name: "zero http timeout", modify: func(c *Config) { c.HTTPTimeout = 0 }, want: "http_timeout"},
		{name: "concurrency 1", modify: func(c *Config) { c.Concurrency = 1 }},
		{name: "concurrency 256", modify: func(c *Config) { c.Concurrency = 256 }},
		{name: "concurrency 0", modify: func(c *Config) { c.Concurrency = 0 }, want: "concurrency"},
		{name: "concurrency 257", modify: func(c *Config) { c.Concurrency = 257 }, want: "concurrency"},
		{name: "refresh token max reuse 1", modify: func(c *Config) { c.RefreshTokenMaxReuse = 1 }},
		{name: "negative refresh token max reuse", modify: func(c *Config) { c.RefreshTokenMaxReuse = -1 }, want: "refresh_token_max_reuse"},
		{name: "keep all", modify: func(c *Config) { c.Keep = KeepAll }},
		{name: "keep unknown", modify: func(c *Config) { c.Keep = "Running" }, want: "keep"},
		{name: "log level warn", modify: func(c *Config) { c.LogLevel = "warn" }},
		{name: "log level unknown", modify: func(c *Config) { c.LogLevel = "verbose" }, want: "log_level"},

		{name: "http issuer on a remote host", modify: func(c *Config) { c.IssuerURL = "http://kc.example.org/realms/jupyter" }, want: "issuer_url"},
		{name: "http issuer on localhost", modify: func(c *Config) { c.IssuerURL = "http://localhost:8080/realms/jupyter" }},
		{name: "http issuer on 127.0.0.0/8", modify: func(c *Config) { c.IssuerURL = "http://127.9.8.7:8080/realms/jupyter" }},
		{name: "http issuer on ::1", modify: func(c *Config) { c.IssuerURL = "http://[::1]:8080/realms/jupyter" }},
		{name: "http issuer on a private address", modify: func(c *Config) { c.IssuerURL = "http://10.0.0.5/realms/jupyter" }, want: "issuer_url"},
		{name: "http issuer on a mapped address", modify: func(c *Config) { c.IssuerURL = "http://[::ffff:10.0.0.5]/realms/jupyter" }, want: "issuer_url"},
		{name: "http issuer on a mapped loopback address", modify: func(c *Config) { c.IssuerURL = "http://[::ffff:127.0.0.1]/realms/jupyter" }},
		{name: "http issuer on a host named like loopback", modify: func(c *Config) { c.IssuerURL = "http://127.0.0.1.example.org/realms/jupyter" }, want: "issuer_url"},
		{name: "http issuer allowed insecure", modify: func(c *Config) {
			c.IssuerURL, c.AllowInsecureHTTP = "http://kc.example.org/realms/jupyter", true
		}},
		{name: "http hub API on a remote host", modify: func(c *Config) { c.Hub.APIURL = "http://hub:8081/hub/api" }, want: "JUPYTERHUB_API_URL"},
		{name: "http hub API allowed insecure", modify: func(c *Config) { c.Hub.APIURL, c.AllowInsecureHTTP = "http://hub:8081/hub/api", true }},
		{name: "https hub API", modify: func(c *Config) { c.Hub.APIURL = "https://hub:8081/hub/api" }},
		{name: "http job API on a remote host", modify: func(c *Config) {
			c.ServiceAccountClientID, c.ServiceAccountSecret, c.JobAPIURL = "sa", "s", "http://firecrest.example.org"
		}, want: "job_api_url"},
		{name: "http job API allowed insecure", modify: func(c *Config) {
			c.ServiceAccountClientID, c.ServiceAccountSecret, c.JobAPIURL = "sa", "s", "http://firecrest.example.org"
			c.AllowInsecureHTTP = true
		}},

		{name: "end sessions without the admin client", modify: func(c *Config) {
			c.EndKeycloakSessions, c.ServiceAccountClientID, c.ServiceAccountSecret = true, "sa", "s"
		}, want: "end_keycloak_sessions"},
		{name: "end sessions with the admin client", modify: func(c *Config) {
			c.EndKeycloakSessions, c.AdminClientID, c.AdminClientSecret = true, "admin", "s"
		}},
		{name: "admin client without a secret", modify: func(c *Config) { c.AdminClientID = "admin" }, want: "admin client"},
		{name: "admin client is the service account", modify: func(c *Config) {
			c.AdminClientID, c.AdminClientSecret, c.ServiceAccountClientID, c.ServiceAccountSecret = "sa", "s", "sa", "s"
		}, want: "admin_client_id"},
		{name: "audiences without a service account", modify: func(c *Config) { c.ServiceTokenAudiences = []string{"trino"} }, want: "service_token_audiences"},
		{name: "audiences", modify: func(c *Config) {
			c.ServiceAccountClientID, c.ServiceAccountSecret, c.ServiceTokenAudiences = "sa", "s", []string{"trino", "minio"}
		}},
		{name: "blank audience", modify: func(c *Config) {
			c.ServiceAccountClientID, c.ServiceAccountSecret, c.ServiceTokenAudiences = "sa", "s", []string{"trino", ""}
		}, want: "service_token_audiences"},
		{name: "audience with a space", modify: func(c *Config) {
			c.ServiceAccountClientID, c.ServiceAccountSecret, c.ServiceTokenAudiences = "sa", "s", []string{"tri no"}
		}, want: "service_token_audiences"},
		{name: "user audiences", modify: func(c *Config) { c.Audiences = []string{"trino", "minio"} }},
		{name: "blank user audience", modify: func(c *Config) { c.Audiences = []string{"trino", ""} }, want: "audiences: \"\""},
		{name: "user audience with a comma", modify: func(c *Config) { c.Audiences = []string{"tri,no"} }, want: "audiences"},
		{name: "identity providers", modify: func(c *Config) { c.IdentityProviders = []string{"github", "google-2", "egi.eu", "a_b"} }},
		{name: "blank identity provider", modify: func(c *Config) { c.IdentityProviders = []string{""} }, want: "identity_providers"},
		{name: "identity provider with a slash", modify: func(c *Config) { c.IdentityProviders = []string{"../admin"} }, want: "identity_providers"},
		{name: "identity provider dot-dot", modify: func(c *Config) { c.IdentityProviders = []string{".."} }, want: "identity_providers"},
		{name: "identity provider with a query", modify: func(c *Config) { c.IdentityProviders = []string{"gh?x=1"} }, want: "identity_providers"},
		{name: "identity provider too long", modify: func(c *Config) { c.IdentityProviders = []string{strings.Repeat("a", 65)} }, want: "identity_providers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "5m", want: 5 * time.Minute},
		{in: "1h2m3s", want: time.Hour + 2*time.Minute + 3*time.Second},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "30", wantErr: true},
		{in: "", wantErr: true},
		{in: "soon", wantErr: true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("UnmarshalText(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if time.Duration(d) != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, time.Duration(d), tt.want)
		}
		b, err := d.MarshalText()
		if err != nil {
			t.Errorf("MarshalText(%v) error: %v", d, err)
		}
		var back Duration
		if err := back.Set(string(b)); err != nil || back != d {
			t.Errorf("Set(MarshalText(%q)) = %v, %v; want %v, nil", tt.in, back, err, d)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, in := range []string{"debug", "info", "warn", "error", "INFO"} {
		if _, err := ParseLevel(in); err != nil {
			t.Errorf("ParseLevel(%q) error = %v, want nil", in, err)
		}
	}
	for _, in := range []string{"", "verbose", "trace"} {
		if _, err := ParseLevel(in); err == nil {
			t.Errorf("ParseLevel(%q) error = nil, want one", in)
		}
	}
}

// TestLoadConfigFileTrailingDelimiter expects a stray closing bracket after
// the object to be rejected like any other trailing data.
func TestLoadConfigFileTrailingDelimiter(t *testing.T) {
	for _, content := range []string{`{"database": "x.db"} }`, `{"database": "x.db"}]`} {
		path := writeFile(t, "c.json", content)
		_, _, err := Load([]string{"--config", path}, envOf(validEnv()), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "trailing data") {
			t.Errorf("Load with file %q: error = %v, want trailing data", content, err)
		}
	}
}

func TestLoadStateKey(t *testing.T) {
	b64File := writeFile(t, "key", stateKeyBase64+"\n")
	hexFile := writeFile(t, "hexkey", stateKeyHex)
	tests := []struct {
		name string
		file string // JSON config file content; empty for none
		env  map[string]string
	}{
		{name: "environment, base64", env: map[string]string{"TOKENKEEPER_STATE_KEY": stateKeyBase64}},
		{name: "environment, hex", env: map[string]string{"TOKENKEEPER_STATE_KEY": stateKeyHex}},
		{name: "state_key_file in the JSON file", file: fmt.Sprintf(`{"state_key_file": %q}`, b64File)},
		{name: "TOKENKEEPER_STATE_KEY_FILE", env: map[string]string{"TOKENKEEPER_STATE_KEY_FILE": hexFile}},
		{
			name: "environment over file",
			file: fmt.Sprintf(`{"state_key_file": %q}`, filepath.Join(t.TempDir(), "absent")),
			env:  map[string]string{"TOKENKEEPER_STATE_KEY": stateKeyHex},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			delete(env, "TOKENKEEPER_STATE_KEY")
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = []string{"--config", writeFile(t, "c.json", tt.file)}
			}
			c := mustLoad(t, args, env)
			keys, err := c.StateKeys()
			if err != nil || len(keys) != 1 || string(keys[0]) != stateKeyRaw {
				t.Errorf("Load: StateKeys() = %q, %v; want [%q], nil", keys, err, stateKeyRaw)
			}
		})
	}
}

func TestLoadStateKeyNeverFromFlagOrJSON(t *testing.T) {
	env := validEnv()
	delete(env, "TOKENKEEPER_STATE_KEY")
	for _, args := range [][]string{
		{"--state-key=" + stateKeyBase64},
		{"--config", writeFile(t, "c.json", fmt.Sprintf(`{"state_key": %q}`, stateKeyBase64))},
	} {
		c, _, err := Load(args, envOf(env), &bytes.Buffer{})
		if err == nil || c.StateKey != "" {
			t.Errorf("Load(%q) = StateKey %q, error %v; want no key and an error", args, c.StateKey.Reveal(), err)
		}
	}
}

func TestStateKeys(t *testing.T) {
	tests := []struct {
		name    string
		key     Secret
		wantErr string
	}{
		{name: "standard base64", key: stateKeyBase64},
		{name: "raw base64", key: Secret(strings.TrimRight(stateKeyBase64, "="))},
		{name: "hex", key: stateKeyHex},
		{name: "surrounding space", key: " " + stateKeyHex + "\n"},
		{name: "empty", key: "", wantErr: "required"},
		{name: "16 bytes", key: "MDEyMzQ1Njc4OWFiY2RlZg==", wantErr: "32 bytes"},
		{name: "short hex", key: Secret(stateKeyHex[:62]), wantErr: "32 bytes"},
		{name: "not encoded", key: stateKeyRaw, wantErr: "32 bytes"},
		{name: "second of two bad", key: stateKeyHex + "," + stateKeyRaw, wantErr: "key 2 of 2: must be 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := Config{StateKey: tt.key}.StateKeys()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("StateKeys(%q) error = %v, want one containing %q", tt.key.Reveal(), err, tt.wantErr)
				}
				if strings.Contains(fmt.Sprint(err), tt.key.Reveal()) && tt.key != "" {
					t.Errorf("StateKeys(%q) error %q repeats the key", tt.key.Reveal(), err)
				}
				return
			}
			if err != nil || len(keys) != 1 || string(keys[0]) != stateKeyRaw {
				t.Errorf("StateKeys(%q) = %q, %v; want [%q], nil", tt.key.Reveal(), keys, err, stateKeyRaw)
			}
		})
	}
}

func TestStateKeysNewestFirst(t *testing.T) {
	older := strings.Repeat("ab", 32)
	keys, err := Config{StateKey: Secret(stateKeyBase64 + ",\n " + older)}.StateKeys()
	if err != nil || len(keys) != 2 || string(keys[0]) != stateKeyRaw || fmt.Sprintf("%x", keys[1]) != older {
		t.Errorf("StateKeys(new, old) = %x, %v; want [new old]", keys, err)
	}
}

func TestLoadEnvValueErrors(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{name: "TOKENKEEPER_REVOKE_TOKENS", value: "yes", want: `TOKENKEEPER_REVOKE_TOKENS: "yes" is not a boolean (true or false)`},
		{name: "TOKENKEEPER_CONCURRENCY", value: "eight", want: `TOKENKEEPER_CONCURRENCY: "eight" must be a number`},
		{name: "TOKENKEEPER_CONCURRENCY", value: "99999999999999999999", want: `TOKENKEEPER_CONCURRENCY: "99999999999999999999" is out of range`},
		{name: "TOKENKEEPER_HUB_MAX_RPS", value: "fast", want: `TOKENKEEPER_HUB_MAX_RPS: "fast" must be a number`},
		{name: "TOKENKEEPER_REFRESH_WINDOW", value: "30", want: `TOKENKEEPER_REFRESH_WINDOW: "30" must be a duration such as 30s`},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			env := validEnv()
			env[tt.name] = tt.value
			_, _, err := Load(nil, envOf(env), &bytes.Buffer{})
			var verr *ValueError
			if !errors.As(err, &verr) {
				t.Fatalf("Load error = %v, want a *ValueError", err)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Contains(got, tt.want) {
				t.Errorf("Load error lines = %q, want one to be %q", got, tt.want)
			}
		})
	}
}

// TestSettingsListEveryVariable: --help's list names every variable that
// Load reads.
func TestSettingsListEveryVariable(t *testing.T) {
	read := map[string]bool{}
	c := Default()
	loadEnv(&c, func(name string) string { read[name] = true; return "" })
	listed := map[string]bool{}
	for _, s := range settings {
		if s.env != "" {
			listed[s.env] = true
		}
	}
	if diff := cmp.Diff(read, listed); diff != "" {
		t.Errorf("variables read (-) and listed (+) differ:\n%s", diff)
	}
}

func TestLoadBooleansAndHubURLOverride(t *testing.T) {
	env := validEnv()
	env["TOKENKEEPER_REVOKE_TOKENS"] = "false"
	env["TOKENKEEPER_STOP_SERVERS"] = "true"
	env["JUPYTERHUB_API_URL"] = "https://hub.public:8000/hub/api"
	env["TOKENKEEPER_HUB_API_URL"] = "https://hub.internal:8081/hub/api"
	c := mustLoad(t, nil, env)
	if c.RevokeTokens || !c.StopServers {
		t.Errorf("Load: RevokeTokens, StopServers = %t, %t; want false, true", c.RevokeTokens, c.StopServers)
	}
	if want := "https://hub.internal:8081/hub/api"; c.Hub.APIURL != want {
		t.Errorf("Load: Hub.APIURL = %q, want %q (TOKENKEEPER_HUB_API_URL over JUPYTERHUB_API_URL)", c.Hub.APIURL, want)
	}
	env["TOKENKEEPER_STOP_SERVERS"] = "maybe"
	if _, _, err := Load(nil, envOf(env), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "TOKENKEEPER_STOP_SERVERS") {
		t.Errorf("Load with TOKENKEEPER_STOP_SERVERS=maybe: error = %v, want one naming the variable", err)
	}
}

func TestLoadServiceAccountSecret(t *testing.T) {
	secretFile := writeFile(t, "sa", "sa-from-file\n")
	tests := []struct {
		name string
		args []string
		file string
		env  map[string]string
		want string
		err  bool
	}{
		{name: "environment", env: map[string]string{"TOKENKEEPER_SERVICE_ACCOUNT_SECRET": "sa-from-env"}, want: "sa-from-env"},
		{name: "file", file: fmt.Sprintf(`{"service_account_secret_file": %q}`, secretFile), want: "sa-from-file"},
		{name: "not from JSON", file: `{"service_account_secret": "sa-from-json"}`, err: true},
		{name: "not from a flag", args: []string{"--service-account-secret=sa-from-flag"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env["TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID"] = "tokenkeeper-sa"
			for k, v := range tt.env {
				env[k] = v
			}
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "c.json", tt.file))
			}
			c, _, err := Load(args, envOf(env), &bytes.Buffer{})
			if (err != nil) != tt.err {
				t.Fatalf("Load(%q) error = %v, want error %t", args, err, tt.err)
			}
			if got := c.ServiceAccountSecret.Reveal(); got != tt.want {
				t.Errorf("Load(%q): ServiceAccountSecret.Reveal() = %q, want %q", args, got, tt.want)
			}
		})
	}
}

func TestLoadDerivedTokenLists(t *testing.T) {
	tests := []struct {
		name          string
		env           map[string]string
		file          string
		wantAudiences []string
		wantProviders []string
	}{
		{name: "environment", env: map[string]string{
			"TOKENKEEPER_AUDIENCES": "trino, minio", "TOKENKEEPER_IDENTITY_PROVIDERS": " external ,github,",
		}, wantAudiences: []string{"trino", "minio"}, wantProviders: []string{"external", "github"}},
		{name: "file", file: `{"audiences": ["trino"], "identity_providers": ["external"]}`,
			wantAudiences: []string{"trino"}, wantProviders: []string{"external"}},
		{name: "environment over file", env: map[string]string{"TOKENKEEPER_IDENTITY_PROVIDERS": "github"},
			file:          `{"audiences": ["trino"], "identity_providers": ["external"]}`,
			wantAudiences: []string{"trino"}, wantProviders: []string{"github"}},
		{name: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = []string{"--config", writeFile(t, "c.json", tt.file)}
			}
			c := mustLoad(t, args, env)
			if diff := cmp.Diff(tt.wantAudiences, c.Audiences); diff != "" {
				t.Errorf("Audiences mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantProviders, c.IdentityProviders); diff != "" {
				t.Errorf("IdentityProviders mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadAdminClientAndAudiences(t *testing.T) {
	secretFile := writeFile(t, "admin", "admin-from-file\n")
	tests := []struct {
		name          string
		env           map[string]string
		file          string
		wantSecret    string
		wantAudiences []string
		wantInsecure  bool
	}{
		{name: "environment", env: map[string]string{
			"TOKENKEEPER_ADMIN_CLIENT_SECRET":     "admin-from-env",
			"TOKENKEEPER_SERVICE_TOKEN_AUDIENCES": " trino, minio ,,",
			"TOKENKEEPER_ALLOW_INSECURE_HTTP":     "true",
		}, wantSecret: "admin-from-env", wantAudiences: []string{"trino", "minio"}, wantInsecure: true},
		{name: "file", file: fmt.Sprintf(`{"admin_client_secret_file": %q, "service_token_audiences": ["trino"], "allow_insecure_http": true}`, secretFile),
			wantSecret: "admin-from-file", wantAudiences: []string{"trino"}, wantInsecure: true},
		{name: "environment over file", env: map[string]string{"TOKENKEEPER_SERVICE_TOKEN_AUDIENCES": "minio"},
			file:       fmt.Sprintf(`{"admin_client_secret_file": %q, "service_token_audiences": ["trino"]}`, secretFile),
			wantSecret: "admin-from-file", wantAudiences: []string{"minio"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env["TOKENKEEPER_ADMIN_CLIENT_ID"] = "tokenkeeper-admin"
			env["TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID"] = "tokenkeeper-sa"
			env["TOKENKEEPER_SERVICE_ACCOUNT_SECRET"] = "sa"
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = []string{"--config", writeFile(t, "c.json", tt.file)}
			}
			c := mustLoad(t, args, env)
			if c.AdminClientID != "tokenkeeper-admin" || c.AdminClientSecret.Reveal() != tt.wantSecret {
				t.Errorf("admin client = %q, %q; want tokenkeeper-admin, %q", c.AdminClientID, c.AdminClientSecret.Reveal(), tt.wantSecret)
			}
			if diff := cmp.Diff(tt.wantAudiences, c.ServiceTokenAudiences); diff != "" {
				t.Errorf("ServiceTokenAudiences mismatch (-want +got):\n%s", diff)
			}
			if c.AllowInsecureHTTP != tt.wantInsecure {
				t.Errorf("AllowInsecureHTTP = %t, want %t", c.AllowInsecureHTTP, tt.wantInsecure)
			}
		})
	}
}

// TestLoadListsClientProblemsWithTheOthers checks that the admin-client and
// https problems are reported together with every other problem.
func TestLoadListsClientProblemsWithTheOthers(t *testing.T) {
	env := validEnv()
	env["TOKENKEEPER_END_KEYCLOAK_SESSIONS"] = "true"
	env["TOKENKEEPER_ISSUER_URL"] = "http://kc.example.org/realms/jupyter"
	env["TOKENKEEPER_KEEP"] = "sometimes"
	_, _, err := Load(nil, envOf(env), &bytes.Buffer{})
	if err == nil {
		t.Fatal("Load error = nil, want problems")
	}
	for _, want := range []string{"end_keycloak_sessions: needs admin_client_id", "issuer_url (TOKENKEEPER_ISSUER_URL):", "want https", "keep:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load error does not mention %q; error:\n%v", want, err)
		}
	}
}

// TestLoadConfigFileReportsEveryProblem: an unknown key and a wrongly typed
// value are both reported, not just the first.
func TestLoadConfigFileReportsEveryProblem(t *testing.T) {
	path := writeFile(t, "c.json", `{"sweep_intervall": "30s", "concurrency": "8", "keep": "all", "revoke_tokens": "yes"}`)
	_, _, err := Load([]string{"--config", path}, envOf(validEnv()), &bytes.Buffer{})
	for _, want := range []string{`unknown key "sweep_intervall"`, "concurrency: want a number, not a JSON string",
		"revoke_tokens: want true or false, not a JSON string"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load error = %v, want one containing %q", err, want)
		}
	}
}

// TestExitsOnError: the setting comes from the file or the variable, the
// variable winning, and the variable counts even when the configuration
// failed to load before the environment was read (a bad flag) or is bad.
func TestExitsOnError(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		wantErr bool
		want    bool
	}{
		{name: "default", want: false},
		{name: "variable", env: map[string]string{ExitOnErrorVar: "true"}, want: true},
		{name: "file", file: `{"exit_on_error": true}`, want: true},
		{name: "variable over file", env: map[string]string{ExitOnErrorVar: "false"}, file: `{"exit_on_error": true}`, want: false},
		{name: "bad configuration", env: map[string]string{ExitOnErrorVar: "1", "TOKENKEEPER_KEEP": "sometimes"}, wantErr: true, want: true},
		{name: "bad configuration, file", env: map[string]string{"TOKENKEEPER_KEEP": "sometimes"}, file: `{"exit_on_error": true}`, wantErr: true, want: true},
		{name: "bad flag", args: []string{"--no-such-flag"}, env: map[string]string{ExitOnErrorVar: "true"}, wantErr: true, want: true},
		{name: "not a boolean", env: map[string]string{ExitOnErrorVar: "yes"}, wantErr: true, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, "c.json", tt.file)}, args...)
			}
			c, _, err := Load(args, envOf(env), &bytes.Buffer{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Load(%q) error = %v, want an error: %t", args, err, tt.wantErr)
			}
			if got := c.ExitsOnError(envOf(env)); got != tt.want {
				t.Errorf("ExitsOnError = %t, want %t", got, tt.want)
			}
		})
	}
}

// TestServicePrefix: the prefix a bad configuration's 503 handler answers
// under follows JUPYTERHUB_BASE_URL like the daemon's own.
func TestServicePrefix(t *testing.T) {
	env := map[string]string{"JUPYTERHUB_SERVICE_NAME": "tokenkeeper", "JUPYTERHUB_BASE_URL": "/jhub/",
		"JUPYTERHUB_OAUTH_ACCESS_SCOPES": "not json"}
	if got, want := ServicePrefix(func(k string) string { return env[k] }), "/jhub/services/tokenkeeper/"; got != want {
		t.Errorf("ServicePrefix = %q, want %q", got, want)
	}
}

func TestLoadSpawnSecret(t *testing.T) {
	const secret = "Qm9vdHN0cmFwLXNwYXduLXNlY3JldC0wMTIzNDU2Nzg5"
	file := writeFile(t, "spawn", secret+"\n")
	tests := []struct {
		name    string
		file    string // JSON config file content; empty for none
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "unset: the path is off"},
		{name: "environment", env: map[string]string{"TOKENKEEPER_SPAWN_SECRET": secret}, want: secret},
		{name: "spawn_secret_file in the JSON file", file: fmt.Sprintf(`{"spawn_secret_file": %q}`, file), want: secret},
		{name: "TOKENKEEPER_SPAWN_SECRET_FILE", env: map[string]string{"TOKENKEEPER_SPAWN_SECRET_FILE": file}, want: secret},
		{name: "environment over file", file: fmt.Sprintf(`{"spawn_secret_file": %q}`, filepath.Join(t.TempDir(), "absent")),
			env: map[string]string{"TOKENKEEPER_SPAWN_SECRET": secret}, want: secret},
		{name: "too short", env: map[string]string{"TOKENKEEPER_SPAWN_SECRET": "short"}, wantErr: "spawn secret: 5 characters"},
		{name: "not in the JSON file", file: fmt.Sprintf(`{"spawn_secret": %q}`, secret), wantErr: "spawn_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = []string{"--config", writeFile(t, "c.json", tt.file)}
			}
			var out bytes.Buffer
			c, _, err := Load(args, envOf(env), &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: error = %v, want one naming %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Load's error shows the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := c.SpawnSecret.Reveal(); got != tt.want {
				t.Errorf("SpawnSecret = %q, want %q", got, tt.want)
			}
			if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, secret) || strings.Contains(out.String(), secret) {
				t.Error("the configuration's printed form shows the spawn secret")
			}
		})
	}
}
