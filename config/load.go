package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Options are the command-line switches that are not settings.
type Options struct {
	// CheckConfig asks to validate the configuration and exit.
	CheckConfig bool
	// Version asks to print the version and exit.
	Version bool
}

// usage heads the flag list that --help prints.
const usage = `usage:
  tokenkeeper [flags]          run the service (JupyterHub starts it; see README)
  tokenkeeper --check-config   validate the configuration and exit
  tokenkeeper --version        print the version and exit
  tokenkeeper token [flags]    inside a single-user server: print a fresh access
                               token for its user (tokenkeeper token --help)

Settings come from defaults, the JSON file (--config), TOKENKEEPER_*
variables and these flags, each overriding the one before. Client
credentials and keys come only from the environment or files.

flags:
`

// Load builds the configuration from defaults, the JupyterHub environment,
// the JSON file named by --config (or TOKENKEEPER_CONFIG), TOKENKEEPER_*
// variables and flags, then validates it. Every problem found is reported in
// one error.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, Options, error) {
	c := Default()
	var opts Options
	fs := flag.NewFlagSet("tokenkeeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", getenv("TOKENKEEPER_CONFIG"), "JSON configuration `file`")
	fs.BoolVar(&opts.CheckConfig, "check-config", false, "validate the configuration and exit")
	fs.BoolVar(&opts.Version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var f Config
	bindFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		return c, opts, err
	}
	var errs []error
	if *path != "" {
		errs = append(errs, loadFile(&c, *path))
	}
	errs = append(errs, loadHubEnv(&c, getenv), loadEnv(&c, getenv))
	fs.Visit(func(fl *flag.Flag) { applyFlag(&c, &f, fl.Name) })
	errs = append(errs, loadSecretFiles(&c), c.Validate())
	return c, opts, errors.Join(errs...)
}

func bindFlags(fs *flag.FlagSet, f *Config) {
	fs.StringVar(&f.IssuerURL, "issuer", "", "Keycloak realm issuer `URL`")
	fs.StringVar(&f.ClientID, "client-id", "", "the hub's OAuth client `id` in Keycloak")
	fs.Var(&f.RefreshWindow, "refresh-window", "refresh when less than this `duration` is left")
	fs.Var(&f.SweepInterval, "sweep-interval", "`duration` between sweeps")
	fs.IntVar(&f.Concurrency, "concurrency", 0, "requests in flight toward the hub and Keycloak")
	fs.StringVar(&f.Database, "db", "", "SQLite database `file`")
	fs.StringVar(&f.Keep, "keep", "", "whose tokens to keep fresh: running or all")
	fs.StringVar(&f.LogLevel, "log-level", "", "debug, info, warn or error")
}

// applyFlag copies the flag named name from f into c.
func applyFlag(c, f *Config, name string) {
	switch name {
	case "issuer":
		c.IssuerURL = f.IssuerURL
	case "client-id":
		c.ClientID = f.ClientID
	case "refresh-window":
		c.RefreshWindow = f.RefreshWindow
	case "sweep-interval":
		c.SweepInterval = f.SweepInterval
	case "concurrency":
		c.Concurrency = f.Concurrency
	case "db":
		c.Database = f.Database
	case "keep":
		c.Keep = f.Keep
	case "log-level":
		c.LogLevel = f.LogLevel
	}
}

// loadFile reads a JSON file; unknown keys are errors.
func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return decodeFile(c, b)
}

// decodeFile decodes a JSON object into c key by key, so that every unknown
// key and every wrongly typed value is reported, not just the first.
func decodeFile(c *Config, b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("config file: trailing data after the JSON object")
	}
	if raw == nil {
		return errors.New("config file: not a JSON object")
	}
	fields := jsonFields(c)
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		dst, ok := fields[key]
		if !ok {
			errs = append(errs, fmt.Errorf("config file: unknown key %q", key))
			continue
		}
		if err := json.Unmarshal(raw[key], dst); err != nil {
			errs = append(errs, fmt.Errorf("config file: %s: %w", key, typeError(err)))
		}
	}
	return errors.Join(errs...)
}

// jsonFields maps each JSON key of Config to a pointer to its field.
func jsonFields(c *Config) map[string]any {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	fields := make(map[string]any, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = v.Field(i).Addr().Interface()
		}
	}
	return fields
}

// typeError says what was wrong with a value without Go's type names.
func typeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("a JSON %s is not allowed here", te.Value)
	}
	return err
}

func loadHubEnv(c *Config, getenv func(string) string) error {
	setString(&c.Hub.APIURL, getenv("JUPYTERHUB_API_URL"))
	c.Hub.APIToken = Secret(getenv("JUPYTERHUB_API_TOKEN"))
	setString(&c.Hub.ServiceURL, getenv("JUPYTERHUB_SERVICE_URL"))
	setString(&c.Hub.Prefix, getenv("JUPYTERHUB_SERVICE_PREFIX"))
	setString(&c.Hub.Name, getenv("JUPYTERHUB_SERVICE_NAME"))
	c.Hub.AccessScopes = []string{"access:services", "access:services!service=" + c.Hub.Name}
	if s := getenv("JUPYTERHUB_OAUTH_ACCESS_SCOPES"); s != "" {
		if err := json.Unmarshal([]byte(s), &c.Hub.AccessScopes); err != nil {
			return fmt.Errorf("JUPYTERHUB_OAUTH_ACCESS_SCOPES: want a JSON list: %w", err)
		}
	}
	return nil
}

func loadEnv(c *Config, getenv func(string) string) error {
	var errs []error
	setString(&c.IssuerURL, getenv("TOKENKEEPER_ISSUER_URL"))
	setString(&c.ClientID, getenv("TOKENKEEPER_CLIENT_ID"))
	c.ClientSecret = Secret(firstNonEmpty(getenv("TOKENKEEPER_CLIENT_SECRET"), c.ClientSecret.Reveal()))
	setString(&c.ClientSecretFile, getenv("TOKENKEEPER_CLIENT_SECRET_FILE"))
	setString(&c.Database, getenv("TOKENKEEPER_DATABASE"))
	setString(&c.Keep, getenv("TOKENKEEPER_KEEP"))
	setString(&c.LogLevel, getenv("TOKENKEEPER_LOG_LEVEL"))
	c.StateKey = Secret(firstNonEmpty(getenv("TOKENKEEPER_STATE_KEY"), c.StateKey.Reveal()))
	setString(&c.StateKeyFile, getenv("TOKENKEEPER_STATE_KEY_FILE"))
	setString(&c.Hub.APIURL, getenv("TOKENKEEPER_HUB_API_URL"))
	setString(&c.ServiceAccountClientID, getenv("TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID"))
	c.ServiceAccountSecret = Secret(firstNonEmpty(getenv("TOKENKEEPER_SERVICE_ACCOUNT_SECRET"), c.ServiceAccountSecret.Reveal()))
	setString(&c.ServiceAccountSecretFile, getenv("TOKENKEEPER_SERVICE_ACCOUNT_SECRET_FILE"))
	setString(&c.JobAPIURL, getenv("TOKENKEEPER_JOB_API_URL"))
	setString(&c.AdminClientID, getenv("TOKENKEEPER_ADMIN_CLIENT_ID"))
	c.AdminClientSecret = Secret(firstNonEmpty(getenv("TOKENKEEPER_ADMIN_CLIENT_SECRET"), c.AdminClientSecret.Reveal()))
	setString(&c.AdminClientSecretFile, getenv("TOKENKEEPER_ADMIN_CLIENT_SECRET_FILE"))
	for name, list := range map[string]*[]string{
		"TOKENKEEPER_SERVICE_TOKEN_AUDIENCES": &c.ServiceTokenAudiences,
		"TOKENKEEPER_AUDIENCES":               &c.Audiences,
		"TOKENKEEPER_IDENTITY_PROVIDERS":      &c.IdentityProviders,
	} {
		if v := getenv(name); v != "" {
			*list = splitList(v)
		}
	}
	for name, b := range map[string]*bool{
		"TOKENKEEPER_REVOKE_TOKENS":         &c.RevokeTokens,
		"TOKENKEEPER_REFRESH_ADMINS":        &c.RefreshAdmins,
		"TOKENKEEPER_STOP_SERVERS":          &c.StopServers,
		"TOKENKEEPER_END_KEYCLOAK_SESSIONS": &c.EndKeycloakSessions,
		"TOKENKEEPER_ALLOW_INSECURE_HTTP":   &c.AllowInsecureHTTP,
		ExitOnErrorVar:                      &c.ExitOnError,
	} {
		if v := getenv(name); v != "" {
			parsed, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*b = parsed
		}
	}
	for name, d := range map[string]*Duration{
		"TOKENKEEPER_REFRESH_WINDOW":    &c.RefreshWindow,
		"TOKENKEEPER_SWEEP_INTERVAL":    &c.SweepInterval,
		"TOKENKEEPER_HTTP_TIMEOUT":      &c.HTTPTimeout,
		"TOKENKEEPER_JOB_POLL_INTERVAL": &c.JobPollInterval,
	} {
		if v := getenv(name); v != "" {
			if err := d.UnmarshalText([]byte(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	if v := getenv("TOKENKEEPER_HUB_MAX_RPS"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("TOKENKEEPER_HUB_MAX_RPS: %w", err))
		}
		c.HubMaxRPS = n
	}
	for name, n := range map[string]*int{
		"TOKENKEEPER_CONCURRENCY":             &c.Concurrency,
		"TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE": &c.RefreshTokenMaxReuse,
	} {
		if v := getenv(name); v != "" {
			parsed, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*n = parsed
		}
	}
	return errors.Join(errs...)
}

// loadSecretFiles reads secrets named by *_file settings, unless the
// environment already gave them.
func loadSecretFiles(c *Config) error {
	return errors.Join(
		readSecret(&c.ClientSecret, c.ClientSecretFile, "client_secret_file"),
		readSecret(&c.StateKey, c.StateKeyFile, "state_key_file"),
		readSecret(&c.ServiceAccountSecret, c.ServiceAccountSecretFile, "service_account_secret_file"),
		readSecret(&c.AdminClientSecret, c.AdminClientSecretFile, "admin_client_secret_file"),
	)
}

func readSecret(dst *Secret, path, key string) error {
	if path == "" || *dst != "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	*dst = Secret(strings.TrimSpace(string(b)))
	return nil
}

func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// ParseLevel maps a level name to a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("unknown level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
