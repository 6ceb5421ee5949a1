// Package config loads tokenkeeper's settings from what JupyterHub gives a
// managed service (JUPYTERHUB_* variables), an optional JSON file, TOKENKEEPER_*
// variables and flags, in that order of increasing precedence. Secrets come only
// from the environment or from files, never from flags.
package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Keep modes choose whose tokens are refreshed in the background.
const (
	// KeepRunning refreshes users with a running or starting server. Users who
	// walked away keep their Keycloak SSO idle timeout.
	KeepRunning = "running"
	// KeepAll refreshes every user who has tokens.
	KeepAll = "all"
)

// Hub is what JupyterHub passes to a managed service in its environment.
type Hub struct {
	// APIURL is JUPYTERHUB_API_URL, e.g. http://127.0.0.1:8081/hub/api.
	APIURL string
	// APIToken is JUPYTERHUB_API_TOKEN, the service's own hub token.
	APIToken Secret
	// ServiceURL is JUPYTERHUB_SERVICE_URL, where tokenkeeper listens.
	ServiceURL string
	// Prefix is JUPYTERHUB_SERVICE_PREFIX, e.g. /services/tokenkeeper/.
	Prefix string
	// Name is JUPYTERHUB_SERVICE_NAME.
	Name string
	// AccessScopes are the scopes that grant access to this service
	// (JUPYTERHUB_OAUTH_ACCESS_SCOPES); a caller needs one of them.
	AccessScopes []string
	// BaseURL is JUPYTERHUB_BASE_URL, the hub's base URL ("/" unless
	// configured); the hub's own pages are under BaseURL + "hub/".
	BaseURL string
	// ClientID is JUPYTERHUB_CLIENT_ID, the service's OAuth client at the
	// hub (service-NAME unless the hub says otherwise); its secret is
	// APIToken. The service page logs people in through it.
	ClientID string
	// OAuthCallbackURL is JUPYTERHUB_OAUTH_CALLBACK_URL, where the hub
	// sends the browser back with the code (Prefix + "oauth_callback"
	// unless the hub says otherwise).
	OAuthCallbackURL string
}

// HubPrefix is the path of the hub's own pages, e.g. /hub/ or /jhub/hub/.
func (h Hub) HubPrefix() string { return h.BaseURL + "hub/" }

// Config is tokenkeeper's complete configuration.
type Config struct {
	Hub Hub `json:"-"`

	// IssuerURL is the Keycloak realm's issuer, e.g. https://kc.example.org/realms/jupyter.
	IssuerURL string `json:"issuer_url"`
	// ClientID is the hub's OAuth client: refresh tokens are bound to it.
	ClientID string `json:"client_id"`
	// ClientSecret is that client's secret (TOKENKEEPER_CLIENT_SECRET or ClientSecretFile).
	ClientSecret Secret `json:"-"`
	// ClientSecretFile names a file holding ClientSecret.
	ClientSecretFile string `json:"client_secret_file"`

	// RefreshWindow is the least time left on an access token at which it is refreshed.
	RefreshWindow Duration `json:"refresh_window"`
	// SweepInterval is how often the sweep looks for due users.
	SweepInterval Duration `json:"sweep_interval"`
	// Concurrency bounds requests in flight toward the hub and grants toward Keycloak.
	Concurrency int `json:"concurrency"`
	// HubMaxRPS caps tokenkeeper's requests to the hub per second, for every
	// kind of request together. The default, 25, is about a tenth of what a
	// hub answered for GET /users/{name} with auth_state on 2 cores (see
	// BENCHMARKS.md).
	HubMaxRPS float64 `json:"hub_max_rps"`
	// Database is the SQLite file holding per-user schedule state.
	Database string `json:"database"`
	// Keep is KeepRunning or KeepAll.
	Keep string `json:"keep"`
	// HTTPTimeout bounds each request to the hub and to Keycloak.
	HTTPTimeout Duration `json:"http_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`

	// StateKey encrypts the write-back journal (TOKENKEEPER_STATE_KEY or
	// StateKeyFile): 32 bytes, base64 or hex encoded.
	StateKey Secret `json:"-"`
	// StateKeyFile names a file holding StateKey.
	StateKeyFile string `json:"state_key_file"`

	// SpawnSecret is what the hub's pre-spawn hook sends to fetch the
	// spawning user's access token without a hub lookup of its token
	// (TOKENKEEPER_SPAWN_SECRET or SpawnSecretFile); empty turns that path
	// off.
	SpawnSecret Secret `json:"-"`
	// SpawnSecretFile names a file holding SpawnSecret.
	SpawnSecretFile string `json:"spawn_secret_file"`

	// RevokeTokens makes a logout revoke the user's browser-session hub tokens.
	RevokeTokens bool `json:"revoke_tokens"`
	// RefreshAdmins makes tokenkeeper refresh hub admins too. The hub lets
	// only admins write an admin's auth_state, so this needs tokenkeeper's
	// service to hold the admin role; without it the hub refreshes admins.
	RefreshAdmins bool `json:"refresh_admins"`
	// StopServers makes a logout stop the user's servers.
	StopServers bool `json:"stop_servers"`
	// GuardMin and GuardFraction pause logouts when at least GuardMin users
	// and GuardFraction of a sweep's users fail terminally at once; GuardMin 0
	// disables the guard.
	GuardMin      int     `json:"guard_min"`
	GuardFraction float64 `json:"guard_fraction"`
	// RefreshTokenMaxReuse is the realm's Refresh Token Max Reuse: how many
	// times Keycloak accepts a refresh token again after its first use. After
	// a grant whose answer was lost, tokenkeeper spends the same token again
	// only this many times; beyond it Keycloak would end the client's
	// session, so it asks Keycloak's introspection instead.
	RefreshTokenMaxReuse int `json:"refresh_token_max_reuse"`

	// ServiceAccountClientID is a confidential Keycloak client with service
	// accounts enabled, used for the service-token endpoint (CI callers) and
	// for the job API. Its token is handed out, so its service-account user
	// must hold no realm-management roles. Empty disables service-token and
	// job-status.
	ServiceAccountClientID string `json:"service_account_client_id"`
	// ServiceAccountSecret is its secret (TOKENKEEPER_SERVICE_ACCOUNT_SECRET or ServiceAccountSecretFile).
	ServiceAccountSecret Secret `json:"-"`
	// ServiceAccountSecretFile names a file holding ServiceAccountSecret.
	ServiceAccountSecretFile string `json:"service_account_secret_file"`
	// ServiceTokenAudiences are the audiences a caller of service-token may
	// narrow the service account's token to (?audience=A), through Keycloak's
	// standard token exchange. Others are refused. Empty allows none.
	ServiceTokenAudiences []string `json:"service_token_audiences"`

	// Audiences are the clients of the realm that fresh-token?audience=A
	// exchanges a user's access token for (Keycloak's standard token
	// exchange, with the hub's client). Others are refused. Empty allows none.
	Audiences []string `json:"audiences"`
	// IdentityProviders are the aliases of the external identity providers
	// whose stored tokens fresh-token?idp=ALIAS hands out (Keycloak identity
	// brokering). Others are refused. Empty allows none.
	IdentityProviders []string `json:"identity_providers"`

	// AdminClientID is a second confidential Keycloak client with service
	// accounts enabled, used only for Keycloak admin API calls (the sessions
	// shown by status, and end_keycloak_sessions). Its service-account user
	// holds the realm-management roles view-users and manage-users; its token
	// never leaves tokenkeeper. Empty disables admin calls.
	AdminClientID string `json:"admin_client_id"`
	// AdminClientSecret is its secret (TOKENKEEPER_ADMIN_CLIENT_SECRET or AdminClientSecretFile).
	AdminClientSecret Secret `json:"-"`
	// AdminClientSecretFile names a file holding AdminClientSecret.
	AdminClientSecretFile string `json:"admin_client_secret_file"`

	// JobAPIURL is a FirecREST v2 base URL for job-status checks; empty disables them.
	JobAPIURL string `json:"job_api_url"`
	// JobPollInterval is how long a job's status is cached.
	JobPollInterval Duration `json:"job_poll_interval"`
	// EndKeycloakSessions makes a logout also end the user's Keycloak sessions
	// (needs the admin client).
	EndKeycloakSessions bool `json:"end_keycloak_sessions"`

	// AllowInsecureHTTP allows http:// for the issuer, the hub API and the job
	// API on hosts other than loopback ones. Tokens and secrets then cross
	// the network in the clear: for test stacks only.
	AllowInsecureHTTP bool `json:"allow_insecure_http"`

	// ExitOnError makes tokenkeeper exit non-zero on a configuration or
	// startup problem even when JupyterHub's service variables are set, so
	// that a container orchestrator shows the failure and restarts it (a
	// Zero to JupyterHub sidecar). Never set it for a service JupyterHub
	// starts itself: JupyterHub shuts down when a managed service exits. A
	// bad configuration may stop the rest of it from loading, so set it as
	// the variable ExitOnErrorVar; see ExitsOnError.
	ExitOnError bool `json:"exit_on_error"`
}

// ExitOnErrorVar is the variable that sets ExitOnError.
const ExitOnErrorVar = "TOKENKEEPER_EXIT_ON_ERROR"

// ExitsOnError reports whether tokenkeeper is to exit on a configuration or
// startup problem: c.ExitOnError, or ExitOnErrorVar set to true in the
// environment. The variable is read here too, because c may come from a
// configuration that failed to load before the environment was read (a bad
// flag); a value that is not a boolean counts as false.
func (c Config) ExitsOnError(getenv func(string) string) bool {
	v, err := strconv.ParseBool(getenv(ExitOnErrorVar))
	return c.ExitOnError || err == nil && v
}

// Default returns the defaults; every default lives here.
func Default() Config {
	return Config{
		ClientID:        "jupyterhub",
		RefreshWindow:   Duration(60 * time.Second),
		SweepInterval:   Duration(15 * time.Second),
		Concurrency:     8,
		HubMaxRPS:       25,
		Database:        "tokenkeeper.db",
		Keep:            KeepRunning,
		HTTPTimeout:     Duration(10 * time.Second),
		LogLevel:        "info",
		RevokeTokens:    false,
		GuardMin:        5,
		GuardFraction:   0.5,
		JobPollInterval: Duration(30 * time.Second),
		Hub: Hub{
			APIURL:     "http://127.0.0.1:8081/hub/api",
			ServiceURL: "http://127.0.0.1:10101",
			Prefix:     "/services/tokenkeeper/",
			Name:       "tokenkeeper",
		},
	}
}

// minSpawnSecret is the fewest characters a spawn secret may have.
const minSpawnSecret = 32

// Validate returns every problem with c at once, joined, or nil.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := c.checkRemoteURL(c.IssuerURL); err != nil {
		bad("%s: %w", named("issuer_url"), err)
	}
	if c.ClientID == "" {
		bad("%s: required (the hub's OAuth client in Keycloak)", named("client_id"))
	}
	if c.ClientSecret == "" {
		bad("client secret: required: set TOKENKEEPER_CLIENT_SECRET or client_secret_file")
	}
	if c.Hub.APIToken == "" {
		bad("JUPYTERHUB_API_TOKEN: required (JupyterHub sets it for a managed service)")
	}
	if err := c.checkRemoteURL(c.Hub.APIURL); err != nil {
		bad("JUPYTERHUB_API_URL: %w", err)
	}
	if err := checkURL(c.Hub.ServiceURL); err != nil {
		bad("JUPYTERHUB_SERVICE_URL: %w", err)
	}
	if !strings.HasPrefix(c.Hub.Prefix, "/") || !strings.HasSuffix(c.Hub.Prefix, "/") {
		bad("JUPYTERHUB_SERVICE_PREFIX: %q must start and end with /", c.Hub.Prefix)
	}
	if c.RefreshWindow <= 0 {
		bad("refresh_window: must be positive, got %s", c.RefreshWindow)
	}
	if c.SweepInterval < Duration(time.Second) {
		bad("sweep_interval: must be at least 1s, got %s", c.SweepInterval)
	}
	if c.HTTPTimeout <= 0 {
		bad("http_timeout: must be positive, got %s", c.HTTPTimeout)
	}
	if c.HubMaxRPS <= 0 || c.HubMaxRPS > 10000 {
		bad("hub_max_rps: must be above 0 and at most 10000, got %g", c.HubMaxRPS)
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		bad("concurrency: must be between 1 and 256, got %d", c.Concurrency)
	}
	if c.Database == "" {
		bad("%s: required", named("database"))
	}
	if c.Keep != KeepRunning && c.Keep != KeepAll {
		bad("keep: must be %q or %q, got %q", KeepRunning, KeepAll, c.Keep)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("log_level: %w", err)
	}
	if _, err := c.StateKeys(); err != nil {
		bad("state key: %w", err)
	}
	errs = append(errs, c.validateClients()...)
	if c.RefreshTokenMaxReuse < 0 {
		bad("refresh_token_max_reuse: must be ≥ 0 (the realm's Refresh Token Max Reuse), got %d", c.RefreshTokenMaxReuse)
	}
	if c.GuardMin < 0 || c.GuardFraction < 0 || c.GuardFraction > 1 {
		bad("guard: guard_min must be ≥ 0 and guard_fraction between 0 and 1")
	}
	return errors.Join(errs...)
}

// validateClients checks the service-account and admin clients and what
// needs them.
func (c Config) validateClients() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if n := len(c.SpawnSecret.Reveal()); n > 0 && n < minSpawnSecret {
		bad("spawn secret: %d characters, want at least %d (configure() makes one of 43 with Python's secrets.token_urlsafe(32); or `openssl rand -hex 32`)", n, minSpawnSecret)
	}
	if c.ServiceAccountClientID != "" && c.ServiceAccountSecret == "" {
		bad("service account: set TOKENKEEPER_SERVICE_ACCOUNT_SECRET or service_account_secret_file")
	}
	if c.AdminClientID != "" && c.AdminClientSecret == "" {
		bad("admin client: set TOKENKEEPER_ADMIN_CLIENT_SECRET or admin_client_secret_file")
	}
	if c.AdminClientID != "" && c.AdminClientID == c.ServiceAccountClientID {
		bad("admin_client_id: must differ from service_account_client_id (the service account's token is handed out)")
	}
	if c.JobAPIURL != "" {
		if err := c.checkRemoteURL(c.JobAPIURL); err != nil {
			bad("job_api_url: %w", err)
		}
		if c.ServiceAccountClientID == "" {
			bad("job_api_url: needs service_account_client_id")
		}
	}
	if c.EndKeycloakSessions && c.AdminClientID == "" {
		bad("end_keycloak_sessions: needs admin_client_id (a client whose service account has manage-users)")
	}
	if len(c.ServiceTokenAudiences) > 0 && c.ServiceAccountClientID == "" {
		bad("service_token_audiences: needs service_account_client_id")
	}
	for _, a := range c.ServiceTokenAudiences {
		if !isClientID(a) {
			bad("service_token_audiences: %q is not a client id", a)
		}
	}
	for _, a := range c.Audiences {
		if !isClientID(a) {
			bad("audiences: %q is not a client id", a)
		}
	}
	for _, a := range c.IdentityProviders {
		if !isAlias(a) {
			bad("identity_providers: %q is not an identity provider alias (1 to 64 letters, digits, '.', '_' or '-')", a)
		}
	}
	return errs
}

// isClientID reports whether s can be a Keycloak client id in a list.
func isClientID(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\n,")
}

// isAlias reports whether s is an identity provider alias tokenkeeper puts
// into a URL path: 1 to 64 letters, digits, '.', '_' or '-', not "." or "..".
func isAlias(s string) bool {
	if s == "" || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkRemoteURL checks a URL that tokens and secrets are sent to: https,
// unless the host is a loopback one or AllowInsecureHTTP is set.
func (c Config) checkRemoteURL(s string) error {
	if err := checkURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s) // checked above
	if u.Scheme == "http" && !c.AllowInsecureHTTP && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q: want https (http is allowed only on loopback hosts, or with allow_insecure_http)", s)
	}
	return nil
}

// isLoopback reports whether host (without a port) is localhost or a
// loopback address (127.0.0.0/8, ::1).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: want an http or https URL with a host", s)
	}
	return nil
}

// Duration is a time.Duration written as "30s" or "5m" in JSON.
type Duration time.Duration

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses a duration such as "30s" or "5m"; a bad one is a
// *ValueError.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return &ValueError{Value: string(b), Want: "must be a duration such as 30s", Err: err}
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Set implements flag.Value.
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

// StateKeys decodes StateKey: one or more keys, newest first, separated by
// commas or white space, each 32 bytes as base64 (standard or URL, padded or
// not) or hex. New journal entries are sealed with the first key; older keys
// only open entries written before a rotation.
func (c Config) StateKeys() ([][]byte, error) {
	fields := strings.FieldsFunc(c.StateKey.Reveal(), func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return nil, errors.New("required: set TOKENKEEPER_STATE_KEY (e.g. from `openssl rand -base64 32`) or state_key_file")
	}
	keys := make([][]byte, 0, len(fields))
	var errs []error
	for i, f := range fields {
		k, err := decodeKey(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %d of %d: %w", i+1, len(fields), err))
		}
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

// decodeKey decodes one 32-byte key in hex or base64.
func decodeKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("must be 32 bytes, base64 or hex encoded")
}
