// Package sessionpage serves tokenkeeper's page in the hub's Services menu:
// a user's own session (its state, when its tokens and its SSO session
// end, its token files, a "log out everywhere" button), and for the
// holders of ScopeSessions every user's, with health, the mass-failure
// guard and the logout audit.
//
// The page logs its visitors in through the hub's OAuth, as JupyterHub
// gives a managed service (HubOAuth's flow, in Go, with PKCE): a random
// state bound to the browser by a sealed state cookie, the code exchanged
// with the client's secret in the form. The hub OAuth token is kept in a
// sealed, HttpOnly cookie and identifies the visitor at each page load
// (one cached GET /user). Who may see and do what is decided
// from the scopes of that token alone. Every action is a POST carrying a
// CSRF token; every response is no-store with a strict
// Content-Security-Policy; no page holds a token value.
package sessionpage

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// ScopeSessions lets a hub OAuth token see every user's session on the
// page, refresh it and log the user out everywhere; filtered
// ("!user=NAME"), for that one user. Nobody holds it by default, hub
// admins included.
const ScopeSessions = "custom:tokenkeeper:sessions"

// ScopeGuard lets a hub OAuth token release the mass-failure guard: the
// scope of the API's guard/release.
const ScopeGuard = spawnerhook.ScopeGuard

// TokenFile is one token file a user's server keeps, as its keeper
// reported it to the API's token-files: name, mode and age, never contents.
type TokenFile = spawnerhook.TokenFile

// Deps are what the page needs, as functions so that tests can supply
// them. The functions marked optional may be nil; the others may not.
type Deps struct {
	// Identify returns who owns a hub OAuth token: hubclient's cached
	// GET /user. A token the hub refuses is a *hubclient.APIError with
	// status 401 or 403.
	Identify func(ctx context.Context, token string) (hubclient.Identity, error)
	// Sessions lists every user tokenkeeper's store holds.
	Sessions func(ctx context.Context) ([]refresh.SessionView, error)
	// Session returns one user's view; ok is false when the store does
	// not know the user.
	Session func(ctx context.Context, name string) (v refresh.SessionView, ok bool, err error)
	// Health reports what stops tokenkeeper from doing its job.
	Health func() refresh.Health
	// ProblemText is the fixed text of a health problem class (optional:
	// the class's name is shown).
	ProblemText func(refresh.ProblemClass) string
	// Guard returns the mass-failure guard's state.
	Guard func() refresh.GuardView
	// Audit returns the latest logout audit records, newest first.
	Audit func(ctx context.Context, limit int) ([]store.Logout, error)
	// RefreshNow refreshes a user's tokens now.
	RefreshNow func(ctx context.Context, name string) error
	// LogoutEverywhere logs a user out of the hub, of their Keycloak
	// session and of their token files, at the request of by.
	LogoutEverywhere func(ctx context.Context, name, by string) error
	// ReleaseGuard lets the logouts the guard holds back go ahead.
	ReleaseGuard func(ctx context.Context) error
	// TokenFiles lists the token files a user's servers keep (optional).
	TokenFiles func(user string) []TokenFile
	// KeycloakSessions lists a user's Keycloak sessions (optional: the
	// section is left out).
	KeycloakSessions func(ctx context.Context, user string) ([]serviceaccount.Session, error)
	// SSOLimits returns the realm's SSO session idle timeout and maximum
	// lifespan, for the Keycloak sessions' ends (optional; zero where
	// unknown).
	SSOLimits func(ctx context.Context) (idle, max time.Duration, err error)
	// Audiences and Providers are what users can get derived tokens for.
	Audiences, Providers []string
	// StopsServers says a logout stops the user's servers (the service's
	// stop_servers setting); the page says so before "log out everywhere".
	StopsServers bool
	// HubPrefix is the hub's prefix as the browser sees it, e.g. "/hub/"
	// or "/jhub/hub/": its login, stylesheet, logo and links are under it.
	HubPrefix string
	// Prefix is the service's prefix (JUPYTERHUB_SERVICE_PREFIX), e.g.
	// "/services/tokenkeeper/".
	Prefix string
	// HubAPIURL is the hub's API as tokenkeeper reaches it
	// (JUPYTERHUB_API_URL, e.g. "http://127.0.0.1:8081/hub/api"); its
	// token endpoint is HubAPIURL + "/oauth2/token".
	HubAPIURL string
	// ClientID is the service's OAuth client (JUPYTERHUB_CLIENT_ID);
	// ClientSecret is its secret, the service's JUPYTERHUB_API_TOKEN.
	ClientID, ClientSecret string
	// CallbackURL is the OAuth redirect URI the hub knows for the client
	// (JUPYTERHUB_OAUTH_CALLBACK_URL): a path under Prefix, or a URL
	// whose path is.
	CallbackURL string
	// HTTPClient reaches the token endpoint; it must not follow redirects
	// (optional: a client that does not, with a 10 s timeout).
	HTTPClient *http.Client
	// Key (32 bytes) seals the cookies and keys the CSRF tokens.
	Key []byte
	// Now is the clock (optional: time.Now).
	Now func() time.Time
	// Logger is the page's log (optional: discarded).
	Logger *slog.Logger
}

// Page is the service's page. New makes one; Routes mounts it.
type Page struct {
	d         Deps
	log       *slog.Logger
	seal      sealer
	callback  string // the callback's path relative to Prefix
	authorize string // the hub's authorize endpoint, as the browser reaches it
	tokenURL  string
	views     map[string]*template.Template
	spent     *spentStates
}

// New checks d and returns the page. Key must be 32 bytes; Prefix and
// HubPrefix are paths that start and end with a slash; CallbackURL's
// path is under Prefix.
func New(d Deps) (*Page, error) {
	if err := check(d); err != nil {
		return nil, fmt.Errorf("sessionpage: %w", err)
	}
	callback, err := callbackPath(d.Prefix, d.CallbackURL)
	if err != nil {
		return nil, fmt.Errorf("sessionpage: %w", err)
	}
	seal, err := newSealer(d.Key)
	if err != nil {
		return nil, fmt.Errorf("sessionpage: %w", err)
	}
	views, err := parseViews()
	if err != nil {
		return nil, fmt.Errorf("sessionpage: %w", err)
	}
	d = withDefaults(d)
	return &Page{
		d: d, log: d.Logger, seal: seal, callback: callback,
		authorize: d.HubPrefix + "api/oauth2/authorize",
		tokenURL:  strings.TrimSuffix(d.HubAPIURL, "/") + "/oauth2/token",
		views:     views, spent: newSpentStates(),
	}, nil
}

// check lists what is missing or malformed in d.
func check(d Deps) error {
	var errs []error
	for _, m := range []struct {
		name    string
		missing bool
	}{
		{"Identify", d.Identify == nil}, {"Sessions", d.Sessions == nil}, {"Session", d.Session == nil},
		{"Health", d.Health == nil}, {"Guard", d.Guard == nil}, {"Audit", d.Audit == nil},
		{"RefreshNow", d.RefreshNow == nil}, {"LogoutEverywhere", d.LogoutEverywhere == nil},
		{"ReleaseGuard", d.ReleaseGuard == nil}, {"ClientID", d.ClientID == ""}, {"ClientSecret", d.ClientSecret == ""},
	} {
		if m.missing {
			errs = append(errs, fmt.Errorf("%s is missing", m.name))
		}
	}
	for _, p := range [][2]string{{"HubPrefix", d.HubPrefix}, {"Prefix", d.Prefix}} {
		if !strings.HasPrefix(p[1], "/") || !strings.HasSuffix(p[1], "/") || strings.HasPrefix(p[1], "//") {
			errs = append(errs, fmt.Errorf("%s %q must be a path starting and ending with a slash", p[0], p[1]))
		}
	}
	if u, err := url.Parse(d.HubAPIURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("HubAPIURL %q is not an http(s) URL", d.HubAPIURL))
	}
	if len(d.Key) != 32 {
		errs = append(errs, fmt.Errorf("the key has %d bytes, not 32", len(d.Key)))
	}
	return errors.Join(errs...)
}

// callbackPath is the callback's path relative to prefix, from the
// redirect URI the hub knows.
func callbackPath(prefix, callback string) (string, error) {
	u, err := url.Parse(callback)
	if err != nil {
		return "", fmt.Errorf("CallbackURL %q: %w", callback, err)
	}
	rel, ok := strings.CutPrefix(u.Path, prefix)
	if !ok || rel == "" || u.RawQuery != "" || strings.ContainsAny(rel, ":*") {
		return "", fmt.Errorf("CallbackURL %q is not a path under the prefix %q", callback, prefix)
	}
	return rel, nil
}

func withDefaults(d Deps) Deps {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if d.TokenFiles == nil {
		d.TokenFiles = func(string) []TokenFile { return nil }
	}
	return d
}

// Routes mounts the page on g, the group of the service's prefix
// without its trailing slash (as spawnerhook mounts its API): the OAuth
// callback, the views under ui/ and their actions. It panics when g is
// mounted elsewhere, since the callback the hub knows would then be
// missing.
func (p *Page) Routes(g *gin.RouterGroup) {
	if g.BasePath()+"/" != p.d.Prefix && g.BasePath() != p.d.Prefix {
		panic(fmt.Sprintf("sessionpage: Routes on %q, not on the prefix %q", g.BasePath(), p.d.Prefix))
	}
	r := g.Group("", securityHeaders)
	r.GET("/"+p.callback, p.oauthCallback)
	ui := r.Group("/ui", p.session)
	ui.GET("/", p.own)
	ui.GET("/users", p.users)
	ui.GET("/users/:name", p.user)
	ui.POST("/users/:name/logout", p.logout)
	ui.POST("/users/:name/refresh", p.refresh)
	ui.POST("/guard/release", p.releaseGuard)
}

// csp allows the hub's stylesheet and logo (same origin, through the
// proxy), forms posting back to the page, and nothing else: no script,
// no framing.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// securityHeaders are set on every response of the page, errors and
// redirects included, before the handler runs.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	c.Next()
}
