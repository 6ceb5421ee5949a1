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
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
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
  tokenkeeper doctor [flags]   check, with the same settings, what they depend on
                               (Keycloak, the realm, the hub, the database) and
                               print a checklist with a fix for each failure

Settings come from defaults, the JSON file (--config), TOKENKEEPER_*
variables and these flags, each overriding the one before. Client
credentials and keys come only from the environment or files.

flags:
`

// settings lists each setting's JSON key and TOKENKEEPER_* variable, in the
// order --help shows them; a secret has a variable but no JSON key, and
// guard_min and guard_fraction have no variable.
var settings = []struct{ key, env string }{
	{"issuer_url", "TOKENKEEPER_ISSUER_URL"},
	{"client_id", "TOKENKEEPER_CLIENT_ID"},
	{"", "TOKENKEEPER_CLIENT_SECRET"},
	{"client_secret_file", "TOKENKEEPER_CLIENT_SECRET_FILE"},
	{"", "TOKENKEEPER_STATE_KEY"},
	{"state_key_file", "TOKENKEEPER_STATE_KEY_FILE"},
	{"", "TOKENKEEPER_SPAWN_SECRET"},
	{"spawn_secret_file", "TOKENKEEPER_SPAWN_SECRET_FILE"},
	{"refresh_window", "TOKENKEEPER_REFRESH_WINDOW"},
	{"sweep_interval", "TOKENKEEPER_SWEEP_INTERVAL"},
	{"concurrency", "TOKENKEEPER_CONCURRENCY"},
	{"hub_max_rps", "TOKENKEEPER_HUB_MAX_RPS"},
	{"database", "TOKENKEEPER_DATABASE"},
	{"keep", "TOKENKEEPER_KEEP"},
	{"http_timeout", "TOKENKEEPER_HTTP_TIMEOUT"},
	{"log_level", "TOKENKEEPER_LOG_LEVEL"},
	{"", "TOKENKEEPER_HUB_API_URL"},
	{"revoke_tokens", "TOKENKEEPER_REVOKE_TOKENS"},
	{"stop_servers", "TOKENKEEPER_STOP_SERVERS"},
	{"refresh_admins", "TOKENKEEPER_REFRESH_ADMINS"},
	{"refresh_token_max_reuse", "TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE"},
	{"guard_min", ""},
	{"guard_fraction", ""},
	{"service_account_client_id", "TOKENKEEPER_SERVICE_ACCOUNT_CLIENT_ID"},
	{"", "TOKENKEEPER_SERVICE_ACCOUNT_SECRET"},
	{"service_account_secret_file", "TOKENKEEPER_SERVICE_ACCOUNT_SECRET_FILE"},
	{"service_token_audiences", "TOKENKEEPER_SERVICE_TOKEN_AUDIENCES"},
	{"audiences", "TOKENKEEPER_AUDIENCES"},
	{"identity_providers", "TOKENKEEPER_IDENTITY_PROVIDERS"},
	{"admin_client_id", "TOKENKEEPER_ADMIN_CLIENT_ID"},
	{"", "TOKENKEEPER_ADMIN_CLIENT_SECRET"},
	{"admin_client_secret_file", "TOKENKEEPER_ADMIN_CLIENT_SECRET_FILE"},
	{"job_api_url", "TOKENKEEPER_JOB_API_URL"},
	{"job_poll_interval", "TOKENKEEPER_JOB_POLL_INTERVAL"},
	{"end_keycloak_sessions", "TOKENKEEPER_END_KEYCLOAK_SESSIONS"},
	{"allow_insecure_http", "TOKENKEEPER_ALLOW_INSECURE_HTTP"},
	{"exit_on_error", ExitOnErrorVar},
}

// settingEnv returns the variable of the setting with JSON key key.
func settingEnv(key string) string {
	for _, s := range settings {
		if s.key == key {
			return s.env
		}
	}
	return ""
}

// named returns a setting's JSON key with its variable, as problems name it.
func named(key string) string {
	if env := settingEnv(key); env != "" {
		return key + " (" + env + ")"
	}
	return key
}

// printSettings writes every setting's JSON key, variable and default.
func printSettings(w io.Writer) {
	d := Default()
	fields := jsonFields(&d)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  JSON key\tvariable\tdefault")
	for _, s := range settings {
		key, env, def := s.key, s.env, ""
		if key == "" {
			key = "(secret, not in the file)"
		}
		if env == "" {
			env = "—"
		}
		if p, ok := fields[s.key]; ok {
			def = describeDefault(reflect.ValueOf(p).Elem())
		}
		if s.env == "TOKENKEEPER_HUB_API_URL" {
			key, def = "(hub API URL)", "JUPYTERHUB_API_URL"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", key, env, def)
	}
	tw.Flush()
}

// describeDefault formats a default value; the zero value shows as nothing.
func describeDefault(v reflect.Value) string {
	if v.IsZero() && (v.Kind() == reflect.String || v.Kind() == reflect.Slice) {
		return ""
	}
	return fmt.Sprint(v.Interface())
}

// Load builds the configuration from defaults, the JupyterHub environment,
// the JSON file named by --config (or TOKENKEEPER_CONFIG), TOKENKEEPER_*
// variables and flags, then validates it. Every problem found is reported in
// one error.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, Options, error) {
	c := Default()
	var opts Options
	fs := flag.NewFlagSet("tokenkeeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", getenv("TOKENKEEPER_CONFIG"), "JSON configuration `file` (TOKENKEEPER_CONFIG)")
	fs.BoolVar(&opts.CheckConfig, "check-config", false, "validate the configuration and exit")
	fs.BoolVar(&opts.Version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nsettings (JSON keys of the --config file, and variables):\n")
		printSettings(fs.Output())
	}
	f := Default()
	bindFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		return c, opts, &UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q: tokenkeeper takes only flags, and its subcommands are token and doctor (see tokenkeeper --help)", fs.Arg(0))
		return c, opts, &UsageError{Err: err}
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

// UsageError is a command line that could not be read: a bad flag or a
// stray argument.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }

func (e *UsageError) Unwrap() error { return e.Err }

// bindFlags binds the setting flags to f, which holds the defaults that
// --help shows. Each flag's text names its setting's variable.
func bindFlags(fs *flag.FlagSet, f *Config) {
	env := func(text, key string) string { return text + " (" + settingEnv(key) + ")" }
	fs.StringVar(&f.IssuerURL, "issuer", f.IssuerURL, env("Keycloak realm issuer `URL`, required", "issuer_url"))
	fs.StringVar(&f.ClientID, "client-id", f.ClientID, env("the hub's OAuth client `id` in Keycloak", "client_id"))
	fs.Var(&f.RefreshWindow, "refresh-window", env("refresh when less than this `duration` is left", "refresh_window"))
	fs.Var(&f.SweepInterval, "sweep-interval", env("`duration` between sweeps", "sweep_interval"))
	fs.IntVar(&f.Concurrency, "concurrency", f.Concurrency, env("requests in flight toward the hub and Keycloak", "concurrency"))
	fs.StringVar(&f.Database, "db", f.Database, env("SQLite database `file`", "database"))
	fs.StringVar(&f.Keep, "keep", f.Keep, env("whose tokens to keep fresh: running or all", "keep"))
	fs.StringVar(&f.LogLevel, "log-level", f.LogLevel, env("debug, info, warn or error", "log_level"))
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
		return fmt.Errorf("config file: %w", syntaxError(b, err))
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
	if !errors.As(err, &te) {
		return err
	}
	at := ""
	if te.Field != "" {
		at = te.Field + ": "
	}
	return &readableError{msg: fmt.Sprintf("%swant %s, not a JSON %s", at, jsonWant(te.Type), te.Value), err: err}
}

// readableError replaces a parser's message with one for the reader of the
// configuration, keeping the parser's error for errors.As.
type readableError struct {
	msg string
	err error
}

func (e *readableError) Error() string { return e.msg }

func (e *readableError) Unwrap() error { return e.err }

// jsonWant names, in JSON terms, what a Go type is read from.
func jsonWant(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[Duration]():
		return `a duration string such as "30s"`
	case t == reflect.TypeFor[map[string]json.RawMessage]():
		return "an object"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(jsonWant(t.Elem()), "a ") + "s"
	}
	return "another value"
}

// syntaxError gives the line and column of a JSON syntax error in b.
func syntaxError(b []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineColumn(b, se.Offset)
		return fmt.Errorf("line %d, column %d: %w", line, col, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &readableError{msg: "the JSON ends early (a missing } or \"?)", err: io.ErrUnexpectedEOF}
	}
	return typeError(err)
}

// lineColumn returns the 1-based line and column of the byte at offset in
// b; the offset of a json.SyntaxError counts the bytes read, the bad one
// included.
func lineColumn(b []byte, offset int64) (line, col int) {
	before := b[:max(0, min(int(offset)-1, len(b)))]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = 1 + len(before) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

// ServicePrefix is the service's URL prefix as the daemon derives it from
// JupyterHub's variables (JUPYTERHUB_SERVICE_PREFIX, else
// JUPYTERHUB_BASE_URL and the service's name), even when the rest of the
// configuration does not load.
func ServicePrefix(getenv func(string) string) string {
	c := Default()
	_ = loadHubEnv(&c, getenv) // only the access scopes can fail, and they play no part here
	return c.Hub.Prefix
}

// loadHubEnv reads what JupyterHub gives a managed service. Outside the hub
// (a sidecar) JUPYTERHUB_BASE_URL alone is enough for the hub's base URL:
// the service prefix and the default hub API URL follow it, as JupyterHub
// would set them.
func loadHubEnv(c *Config, getenv func(string) string) error {
	setString(&c.Hub.Name, getenv("JUPYTERHUB_SERVICE_NAME"))
	c.Hub.BaseURL = "/"
	if base := getenv("JUPYTERHUB_BASE_URL"); base != "" {
		base = strings.Trim(base, "/") + "/"
		if base != "/" {
			base = "/" + base
		}
		c.Hub.BaseURL = base
		c.Hub.Prefix = base + "services/" + url.PathEscape(c.Hub.Name) + "/"
		c.Hub.APIURL = "http://127.0.0.1:8081" + base + "hub/api"
	}
	setString(&c.Hub.APIURL, getenv("JUPYTERHUB_API_URL"))
	c.Hub.APIToken = Secret(getenv("JUPYTERHUB_API_TOKEN"))
	setString(&c.Hub.ServiceURL, getenv("JUPYTERHUB_SERVICE_URL"))
	setString(&c.Hub.Prefix, getenv("JUPYTERHUB_SERVICE_PREFIX"))
	c.Hub.ClientID = firstNonEmpty(getenv("JUPYTERHUB_CLIENT_ID"), "service-"+c.Hub.Name)
	c.Hub.OAuthCallbackURL = firstNonEmpty(getenv("JUPYTERHUB_OAUTH_CALLBACK_URL"), c.Hub.Prefix+"oauth_callback")
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
	c.SpawnSecret = Secret(firstNonEmpty(getenv("TOKENKEEPER_SPAWN_SECRET"), c.SpawnSecret.Reveal()))
	setString(&c.SpawnSecretFile, getenv("TOKENKEEPER_SPAWN_SECRET_FILE"))
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
				errs = append(errs, fmt.Errorf("%s: %w", name, &ValueError{Value: v, Want: "is not a boolean (true or false)", Err: err}))
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
			errs = append(errs, fmt.Errorf("TOKENKEEPER_HUB_MAX_RPS: %w", numberError(v, err)))
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
				errs = append(errs, fmt.Errorf("%s: %w", name, numberError(v, err)))
			}
			*n = parsed
		}
	}
	return errors.Join(errs...)
}

// ValueError is a setting's value that could not be read. Its message
// names the value and what is wanted, without Go's parser messages; Err is
// the parser's error.
type ValueError struct {
	Value string
	Want  string // e.g. "must be a number"
	Err   error
}

func (e *ValueError) Error() string { return fmt.Sprintf("%q %s", e.Value, e.Want) }

func (e *ValueError) Unwrap() error { return e.Err }

// numberError describes a strconv failure to read v as a number.
func numberError(v string, err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return &ValueError{Value: v, Want: "is out of range", Err: err}
	}
	return &ValueError{Value: v, Want: "must be a number", Err: err}
}

// loadSecretFiles reads secrets named by *_file settings, unless the
// environment already gave them.
func loadSecretFiles(c *Config) error {
	return errors.Join(
		readSecret(&c.ClientSecret, c.ClientSecretFile, "client_secret_file"),
		readSecret(&c.StateKey, c.StateKeyFile, "state_key_file"),
		readSecret(&c.SpawnSecret, c.SpawnSecretFile, "spawn_secret_file"),
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
