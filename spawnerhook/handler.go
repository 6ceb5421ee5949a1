// Package spawnerhook serves tokenkeeper's HTTP API under the service prefix:
// fresh access tokens for spawners and notebooks, and health.
package spawnerhook

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

// ScopeTokens lets a caller ask for another user's access token.
const ScopeTokens = "custom:tokenkeeper:tokens"

// Deps are what the handlers need, as functions so tests can supply them.
type Deps struct {
	// Identify returns who owns a JupyterHub token.
	Identify func(ctx context.Context, token string) (hubclient.Identity, error)
	// Fresh returns a user's access token with at least minValid left.
	Fresh func(ctx context.Context, user string, minValid time.Duration) (refresh.Tokens, error)
	// Derived returns a token derived from a user's access token (for an
	// audience, or an identity provider's) with at least minValid left.
	Derived func(ctx context.Context, user string, t refresh.Target, minValid time.Duration) (refresh.Tokens, error)
	// Health reports what stops tokenkeeper from doing its job.
	Health func() refresh.Health
	// ReleaseGuard lets the logouts the mass-failure guard holds back go
	// ahead; nil disables the endpoint.
	ReleaseGuard func(ctx context.Context) error
	// ServiceToken returns the service account's token, narrowed to audience
	// unless that is ""; nil when no service account is configured.
	ServiceToken func(ctx context.Context, audience string) (*oauth2.Token, error)
	// JobStatus checks a job with the service account; nil when no job API is configured.
	JobStatus func(ctx context.Context, system, id string) (serviceaccount.JobStatus, error)
	// Status reports what tokenkeeper knows of a user.
	Status func(ctx context.Context, user string) (refresh.UserStatus, error)
	// Sessions lists a Keycloak user's sessions; nil when no service account is configured.
	Sessions func(ctx context.Context, subject string) ([]serviceaccount.Session, error)
	// Metrics serves Prometheus metrics; nil serves none.
	Metrics http.Handler
	// Requests counts and times the API's requests; nil records none.
	Requests *RequestMetrics
	// BackchannelLogout verifies a Keycloak logout token and logs its users out.
	BackchannelLogout func(ctx context.Context, raw string) ([]string, error)
	// AccessScopes grant access to the service; a caller needs one.
	AccessScopes []string
	// SpawnSecret, when not empty, is what the hub's pre-spawn hook sends
	// in SpawnSecretHeader to fetch the spawning user's access token
	// without a hub lookup of its token (see spawnHook).
	SpawnSecret string
	// WaitLogout waits until a user is logged out after since, or wait
	// passes (session-end); nil disables the endpoint.
	WaitLogout func(ctx context.Context, user string, since time.Time, wait time.Duration) (bool, time.Time)
	// TokenFiles records the token files servers report (token-files); nil
	// disables the endpoint.
	TokenFiles *TokenFiles
	// Shutdown ends when tokenkeeper stops: requests waiting in
	// session-end answer then.
	Shutdown context.Context
	// Page adds the service page's routes (package sessionpage) to the
	// prefix's group; browsers asking for the prefix root are sent to it.
	Page func(g *gin.RouterGroup)
	// Name and Version describe the service at the prefix root.
	Name, Version string
	Logger        *slog.Logger
	// Now is the clock.
	Now func() time.Time
}

type handler struct {
	Deps
	log    *slog.Logger
	prefix string
}

// NewHandler returns tokenkeeper's HTTP API mounted under prefix (which starts
// and ends with a slash, like JUPYTERHUB_SERVICE_PREFIX).
func NewHandler(prefix string, d Deps) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	if d.Requests != nil {
		// Ahead of Recovery, so that a request whose handler panicked
		// counts with the 500 Recovery answers.
		e.Use(d.Requests.observe)
	}
	e.Use(gin.Recovery())
	h := &handler{Deps: d, log: d.Logger, prefix: prefix}
	routes(e.Group(strings.TrimSuffix(prefix, "/")), h)
	if d.Requests != nil {
		d.Requests.start(e.Routes())
	}
	e.NoRoute(func(c *gin.Context) {
		c.JSON(http.StatusNotFound, errorBody{"not_found", "No such endpoint."})
	})
	return e
}

// maxBody bounds every request body (a back-channel logout token is about
// 1 KiB).
const maxBody = 16 << 10

// routes lists the whole API. Every request body is bounded; every endpoint
// but the unauthenticated ones (info, health, back-channel logout, metrics)
// needs a JupyterHub token holding one of the access scopes.
func routes(g *gin.RouterGroup, h *handler) {
	g.Use(limitBody)
	g.GET("/", h.info)
	g.GET("/health", h.health)
	g.POST("/backchannel-logout", h.backchannelLogout)
	if h.Metrics != nil {
		g.GET("/metrics", gin.WrapH(h.Metrics))
	}
	auth := g.Group("", h.authenticate)
	auth.GET("/fresh-token", h.freshToken)
	auth.GET("/service-token", h.serviceToken)
	auth.GET("/job-status", h.jobStatus)
	if h.Status != nil {
		auth.GET("/status", h.status)
	}
	if h.ReleaseGuard != nil {
		auth.POST("/guard/release", h.releaseGuard)
	}
	if h.TokenFiles != nil {
		auth.PUT("/token-files", h.reportTokenFiles)
	}
	if h.WaitLogout != nil {
		auth.GET("/session-end", h.sessionEnd)
	}
	if h.Page != nil {
		h.Page(g)
	}
}

// limitBody makes reading more than maxBody bytes of a request body fail
// with *http.MaxBytesError.
func limitBody(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxBody)
	c.Next()
}

// callerKey is where authenticate keeps the caller's identity.
const callerKey = "tokenkeeper.caller"

// SpawnSecretHeader carries the spawn secret: the hub's pre-spawn hook
// sends it, with ?user=NAME, to fetch the spawning user's access token.
const SpawnSecretHeader = "X-Tokenkeeper-Spawn-Secret"

// spawnHookKind is the Kind of the identity authenticate gives a request
// that carries the spawn secret. The hub never gives it to a token.
const spawnHookKind = "spawn-hook"

// authenticate identifies the caller and keeps its identity for the
// handler (caller): the hub's pre-spawn hook by the spawn secret (see
// spawnHook), anyone else by its JupyterHub token, which must hold one of
// the access scopes.
func (h *handler) authenticate(c *gin.Context) {
	if h.SpawnSecret != "" && len(c.Request.Header.Values(SpawnSecretHeader)) > 0 {
		h.spawnHook(c)
		return
	}
	id, err := h.identify(c)
	if err == nil && !slices.ContainsFunc(h.AccessScopes, func(s string) bool { return slices.Contains(id.Scopes, s) }) {
		err = forbidden("This token has no access to tokenkeeper (needs one of " + strings.Join(h.AccessScopes, ", ") + ").")
	}
	if err != nil {
		h.writeError(c, err)
		return
	}
	c.Set(callerKey, id)
	c.Next()
}

// spawnHook authenticates the hub's pre-spawn hook by the spawn secret,
// compared in constant time, with no hub lookup: under a flood of made-up
// tokens the lookups' queue is full, and a spawn must not wait in it. The
// secret grants one thing, the access token of the user the request names,
// as fresh-token serves it (no derived token, no other endpoint): what the
// hook puts into a new server's environment. A wrong secret is refused
// (401) and counted, and never falls back to the caller's JupyterHub token.
func (h *handler) spawnHook(c *gin.Context) {
	sent := c.Request.Header.Values(SpawnSecretHeader)
	if len(sent) != 1 || subtle.ConstantTimeCompare([]byte(sent[0]), []byte(h.SpawnSecret)) != 1 {
		// Counted, and logged at debug level only: a flood of wrong
		// secrets must not flood the log.
		h.Requests.spawnSecretRefused()
		h.log.Debug("request with a wrong spawn secret refused", "path", c.FullPath())
		h.writeError(c, spawnSecretInvalid())
		return
	}
	if !strings.HasSuffix(c.FullPath(), "/fresh-token") {
		h.writeError(c, forbidden("The spawn secret fetches only a user's access token from fresh-token."))
		return
	}
	c.Set(callerKey, hubclient.Identity{Kind: spawnHookKind})
	c.Next()
}

// caller is the identity authenticate found.
func caller(c *gin.Context) hubclient.Identity {
	id, _ := c.Get(callerKey)
	return id.(hubclient.Identity)
}

// info describes the service; a browser (asking for HTML) is sent to the
// service page instead, when there is one.
func (h *handler) info(c *gin.Context) {
	if h.Page != nil && strings.Contains(c.GetHeader("Accept"), "text/html") {
		c.Header("Cache-Control", "no-store")
		c.Redirect(http.StatusFound, h.prefix+"ui/")
		return
	}
	c.JSON(http.StatusOK, gin.H{"name": h.Name, "version": h.Version})
}

// problemTexts are health's fixed texts per problem class; the details are
// in tokenkeeper's log, not in this unauthenticated answer.
var problemTexts = map[refresh.ProblemClass]string{
	refresh.ProblemKeycloakClient: "Keycloak refuses tokenkeeper's client; refreshing is stopped and nobody is logged out.",
	refresh.ProblemHubUnreachable: "The hub's API cannot be reached.",
	refresh.ProblemLogoutsPaused: "Logouts are paused: many sessions ended at once. " +
		"Nobody is logged out until an admin releases the guard.",
	refresh.ProblemStuckUsers: "The hub refuses to store some users' new tokens; they are kept in the journal.",
	refresh.ProblemHubBudget:  "hub_max_rps cannot refresh every due user before their token expires.",
	refresh.ProblemSweepPanicked: "A sweep failed on an internal error in the last 10 minutes; " +
		"the log has its stack. Please report it.",
	refresh.ProblemKeycloakUnreachable: "Keycloak has not answered tokenkeeper's grants for over 2 minutes " +
		"(refused, unresolvable, timed out, or a proxy's error page); nobody is logged out meanwhile.",
	refresh.ProblemKeycloakSlow: "Keycloak did not answer tokenkeeper's latest grants; retrying.",
	refresh.ProblemExcessScopes: "tokenkeeper's hub token holds scopes its settings do not need; " +
		"take them away in jupyterhub_config.py:",
	refresh.ProblemNoSessionID: "Some users' tokens carry no session id (sid): a back-channel logout of one " +
		"of their sessions logs out all of them. Give the hub's client Keycloak's basic scope.",
}

// ProblemText is health's fixed text for a problem class.
func ProblemText(c refresh.ProblemClass) string { return problemTexts[c] }

type problemBody struct {
	Class   string `json:"class"`
	Message string `json:"message"`
	Users   int    `json:"users,omitempty"`
}

// health answers 200 while every user is served (ok or degraded: some users
// stuck) and 503 while refreshing or logging out is stopped.
func (h *handler) health(c *gin.Context) {
	hl := h.Health()
	state := hl.State()
	problems := make([]problemBody, 0, len(hl.Problems))
	for _, p := range hl.Problems {
		msg := problemTexts[p.Class]
		if p.Detail != "" {
			msg += " " + p.Detail + "."
		}
		problems = append(problems, problemBody{Class: string(p.Class), Message: msg, Users: p.Users})
	}
	status := http.StatusOK
	if state == refresh.HealthUnhealthy {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, gin.H{"status": state, "problems": problems})
}

// tokenResponse is the body of a successful fresh-token call.
type tokenResponse struct {
	User             string `json:"user"`
	Audience         string `json:"audience,omitempty"`
	IdentityProvider string `json:"idp,omitempty"`
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresAt        string `json:"expires_at"`
	ExpiresIn        int64  `json:"expires_in"`
}

// freshToken serves the user's access token, or with ?audience=A or
// ?idp=ALIAS a token derived from it.
func (h *handler) freshToken(c *gin.Context) {
	minValid, err := parseMinValid(c.Query("min_valid"))
	if err != nil {
		h.writeError(c, err)
		return
	}
	target, derived, err := parseTarget(c)
	if err != nil {
		h.writeError(c, err)
		return
	}
	user, err := authorize(caller(c), c.QueryArray("user"), derived)
	if err != nil {
		h.writeError(c, err)
		return
	}
	var t refresh.Tokens
	if derived {
		t, err = h.Derived(c.Request.Context(), user, target, minValid)
	} else {
		t, err = h.Fresh(c.Request.Context(), user, minValid)
	}
	if err != nil {
		h.writeError(c, err)
		return
	}
	resp := tokenResponse{
		User: user, AccessToken: t.Access.Reveal(), TokenType: t.Type,
		ExpiresAt: t.Expiry.UTC().Format(time.RFC3339),
		ExpiresIn: int64(t.Expiry.Sub(h.Now()).Seconds()),
	}
	switch target.Kind {
	case refresh.KindAudience:
		resp.Audience = target.Name
	case refresh.KindProvider:
		resp.IdentityProvider = target.Name
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
}

// parseTarget reads ?audience=A or ?idp=ALIAS, at most one of them, given
// once and not empty; derived is false when neither is.
func parseTarget(c *gin.Context) (t refresh.Target, derived bool, err error) {
	aud, idp := c.QueryArray("audience"), c.QueryArray("idp") // gin's parsed query, shared with c.Query
	switch {
	case len(aud) > 0 && len(idp) > 0:
		return t, false, badRequest("Ask for an audience or an identity provider, not both.")
	case len(aud) == 1 && aud[0] != "":
		return refresh.Target{Kind: refresh.KindAudience, Name: aud[0]}, true, nil
	case len(idp) == 1 && idp[0] != "":
		return refresh.Target{Kind: refresh.KindProvider, Name: idp[0]}, true, nil
	case len(aud)+len(idp) > 0:
		return t, false, badRequest("audience or idp must be given once, and not empty.")
	}
	return t, false, nil
}

func parseMinValid(s string) (time.Duration, error) {
	if s == "" {
		return 60 * time.Second, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 86400 {
		return 0, badRequest("min_valid must be a whole number of seconds from 0 to 86400")
	}
	return time.Duration(n) * time.Second, nil
}

// authorize returns whose token the caller id may have: its own, or, with
// ScopeTokens covering that user, the one it asks for. The pre-spawn hook
// (by the spawn secret) may have the access token of the one user it
// names, and no derived token.
func authorize(id hubclient.Identity, users []string, derived bool) (string, error) {
	asked := ""
	if len(users) > 0 {
		asked = users[0]
	}
	if id.Kind == spawnHookKind {
		switch {
		case derived:
			return "", forbidden("The spawn secret fetches only a user's own access token, not a derived one.")
		case len(users) != 1 || asked == "":
			return "", badRequest("The spawn hook must name the spawning user once: ?user=NAME.")
		}
		return asked, nil
	}
	own := ""
	if id.Kind == "user" {
		own = id.Name
	}
	switch {
	case asked == "" && own == "":
		return "", badRequest("Service tokens must name the user: ?user=NAME.")
	case asked == "" || asked == own:
		return own, nil
	case id.Allows(ScopeTokens, asked):
		return asked, nil
	default:
		return "", forbidden("This token may only fetch its own user's token (" + ScopeTokens + " is needed for others).")
	}
}

func (h *handler) identify(c *gin.Context) (hubclient.Identity, error) {
	token, ok := bearer(c.GetHeader("Authorization"))
	if !ok {
		return hubclient.Identity{}, unauthorized("Send a JupyterHub token: Authorization: token <token>.")
	}
	id, err := h.Identify(c.Request.Context(), token)
	var herr *hubclient.APIError
	if errors.As(err, &herr) && (herr.Status == http.StatusForbidden || herr.Status == http.StatusUnauthorized) {
		return id, unauthorized("The JupyterHub token is invalid or expired.")
	}
	return id, err
}

// bearer extracts the token from "token T" or "Bearer T".
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	token = strings.TrimSpace(token)
	if !ok || token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	if !strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	return token, true
}
