package sessionpage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// loginState is a state cookie's content.
type loginState struct {
	State    string `json:"s"`
	Verifier string `json:"v"`
	Next     string `json:"n"`
	Expires  int64  `json:"e"`
}

// maxStateCookies bounds the state cookies of logins never finished that
// a browser carries; beyond it they are all removed before a new one.
const maxStateCookies = 4

// startLogin sends the browser to the hub's authorize endpoint, to come
// back to next (a path under the prefix) once logged in.
func (p *Page) startLogin(c *gin.Context, next string) {
	st := loginState{
		State: random(16), Verifier: random(32), Next: safeNext(p.d.Prefix, next),
		Expires: p.d.Now().Add(stateLife).Unix(),
	}
	if names := stateCookies(c.Request); len(names) >= maxStateCookies {
		for _, n := range names {
			http.SetCookie(c.Writer, p.cookie(c.Request, n, "", -1))
		}
	}
	http.SetCookie(c.Writer, p.cookie(c.Request, stateCookieName(st.State), p.seal.seal("state", st), stateLife))
	status := http.StatusFound
	if c.Request.Method != http.MethodGet {
		status = http.StatusSeeOther
	}
	c.Redirect(status, p.authorizeURL(st))
	c.Abort()
}

// authorizeURL is the hub's authorize endpoint with st's request, as
// HubOAuth makes it (client_id, redirect_uri, response_type=code, state;
// no scope, so that the hub grants the client's allowed scopes the user
// holds) and with PKCE: an S256 code_challenge of st's verifier.
// JupyterHub 6 checks the verifier against the challenge at the token
// step (and may require PKCE: oauth_require_pkce). JupyterHub 5 does not
// store the challenge: its oauthlib checks code_challenge_method at this
// step and, with no challenge stored, ignores code_verifier at the token
// step. Sending PKCE to any JupyterHub 5 or 6 is therefore safe, as
// JupyterHub 6's own services do ("PKCE is ignored if unsupported by the
// Hub").
func (p *Page) authorizeURL(st loginState) string {
	sum := sha256.Sum256([]byte(st.Verifier))
	return p.authorize + "?" + url.Values{
		"client_id":             {p.d.ClientID},
		"redirect_uri":          {p.d.CallbackURL},
		"response_type":         {"code"},
		"state":                 {st.State},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}.Encode()
}

// random is n random bytes in base64url.
func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// stateCookieName is the name of the state cookie of state.
func stateCookieName(state string) string {
	return stateCookiePrefix + state[:min(len(state), 8)]
}

// stateCookies are the names of the state cookies r carries.
func stateCookies(r *http.Request) []string {
	var names []string
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, stateCookiePrefix) {
			names = append(names, c.Name)
		}
	}
	return names
}

// safeNext is next when it is a path under prefix that a browser cannot
// take for another host, else the own view: no open redirect.
func safeNext(prefix, next string) string {
	u, err := url.Parse(next)
	ok := err == nil && u.Scheme == "" && u.Host == "" && u.Opaque == "" && u.User == nil &&
		strings.HasPrefix(next, prefix) && !strings.HasPrefix(next, "//") &&
		!strings.ContainsAny(next, "\\\r\n\t") && !dotSegment(u.Path)
	if !ok {
		return prefix + "ui/"
	}
	return next
}

// dotSegment reports whether path has a "." or ".." segment, which a
// browser would resolve to outside the prefix.
func dotSegment(path string) bool {
	for _, s := range strings.Split(path, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

// oauthCallback finishes a login: the hub sends the browser back with a
// code and the state, the page checks the state, exchanges the code and
// keeps the token in the session cookie.
func (p *Page) oauthCallback(c *gin.Context) {
	st, err := p.checkCallback(c)
	if err != nil {
		p.writeError(c, err)
		return
	}
	tok, err := p.exchange(c.Request.Context(), c.Query("code"), st.Verifier)
	if err != nil {
		p.writeError(c, err)
		return
	}
	p.setSession(c.Writer, c.Request, tok.AccessToken, sessionLife(tok.ExpiresIn))
	c.Redirect(http.StatusFound, safeNext(p.d.Prefix, st.Next))
}

// checkCallback checks the callback's state against the state cookie
// named by it (HubOAuthCallbackHandler's check), accepts a state once,
// and removes every state cookie.
func (p *Page) checkCallback(c *gin.Context) (loginState, error) {
	defer p.clearStateCookies(c)
	if e := c.Query("error"); e != "" {
		return loginState{}, badRequest("The hub did not log you in (" + oauthErrorCode(e) + "). Log in again.")
	}
	code, state := c.Query("code"), c.Query("state")
	if code == "" || state == "" || len(code) > 512 || len(state) > 512 {
		return loginState{}, badRequest("The hub's answer lacks the login's code or state. Log in again.")
	}
	st, err := p.openState(c.Request, state)
	if err != nil {
		return loginState{}, err
	}
	if !p.spent.spend(st.State, time.Unix(st.Expires, 0), p.d.Now()) {
		return loginState{}, forbidden("This login was already finished. Log in again.")
	}
	return st, nil
}

// openState returns the login state of the state cookie named by state,
// when it holds that state and has not expired.
func (p *Page) openState(r *http.Request, state string) (loginState, error) {
	refused := forbidden("The login's state does not match one this browser started in the last 10 minutes. Log in again.")
	ck, err := r.Cookie(stateCookieName(state))
	var st loginState
	if err != nil || p.seal.open("state", ck.Value, &st) != nil {
		return st, refused
	}
	if subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 || !p.d.Now().Before(time.Unix(st.Expires, 0)) {
		return st, refused
	}
	return st, nil
}

// clearStateCookies removes every state cookie the request carries.
func (p *Page) clearStateCookies(c *gin.Context) {
	for _, n := range stateCookies(c.Request) {
		http.SetCookie(c.Writer, p.cookie(c.Request, n, "", -1))
	}
}

// oauthErrorCode is an OAuth error code fit to show, else "error".
func oauthErrorCode(e string) string {
	if len(e) > 40 || strings.Trim(e, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return "error"
	}
	return e
}

// hubToken is the token endpoint's answer.
type hubToken struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// tokenError is a token endpoint's refusal or unreadable answer.
type tokenError struct {
	Status int
	Code   string // the OAuth error code, if the answer had one
}

func (e *tokenError) Error() string {
	return fmt.Sprintf("hub oauth token endpoint: status %d %s", e.Status, e.Code)
}

// exchange trades a code for the hub OAuth token at the hub's token
// endpoint, as HubOAuth does: client_id and client_secret (the service's
// API token) in the form, never HTTP Basic, which JupyterHub's request
// validator does not read; grant_type, code, redirect_uri, and the PKCE
// code_verifier.
func (p *Page) exchange(ctx context.Context, code, verifier string) (hubToken, error) {
	form := url.Values{
		"client_id": {p.d.ClientID}, "client_secret": {p.d.ClientSecret},
		"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {p.d.CallbackURL}, "code_verifier": {verifier},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return hubToken{}, fmt.Errorf("hub oauth token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := p.d.HTTPClient.Do(req)
	if err != nil {
		return hubToken{}, fmt.Errorf("hub oauth token request: %w", err)
	}
	defer resp.Body.Close()
	return readToken(resp)
}

// readToken reads the token endpoint's answer.
func readToken(resp *http.Response) (hubToken, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return hubToken{}, fmt.Errorf("hub oauth token answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return hubToken{}, &tokenError{Status: resp.StatusCode, Code: oauthErrorCode(e.Error)}
	}
	var t hubToken
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return hubToken{}, &tokenError{Status: resp.StatusCode, Code: "unreadable answer"}
	}
	return t, nil
}

// maxSpent bounds the states remembered as spent. Beyond it an
// arbitrary one is forgotten: a replay of that login then still needs
// its state cookie and a code the hub accepts, and the hub accepts a
// code once.
const maxSpent = 4096

// spentStates are the states of finished logins until they expire.
type spentStates struct {
	mu sync.Mutex // guards m
	m  map[string]time.Time
}

func newSpentStates() *spentStates { return &spentStates{m: make(map[string]time.Time)} }

// spend records state as spent until its expiry; false if it already was.
func (s *spentStates) spend(state string, until, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.m[state]; ok && now.Before(exp) {
		return false
	}
	if len(s.m) >= maxSpent {
		s.prune(now)
	}
	s.m[state] = until
	return true
}

// prune forgets expired states, and one more if none had. s.mu must be
// held.
func (s *spentStates) prune(now time.Time) {
	n := len(s.m)
	for k, exp := range s.m {
		if !now.Before(exp) {
			delete(s.m, k)
		}
	}
	for k := range s.m {
		if len(s.m) < n {
			break
		}
		delete(s.m, k)
	}
}
