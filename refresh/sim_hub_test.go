package refresh

// The model JupyterHub: users with auth_state in OAuthenticator's layout,
// running servers, browser-session tokens, hub admins (whom a non-admin
// service may not modify), failing reads and writes, and logins that replace
// auth_state with a new session's tokens. A read sees the state at the
// moment its answer leaves the hub; a write takes effect the moment it is
// sent. Every auth_state has a version; the hub remembers which version
// tokenkeeper last read, to tell tokenkeeper's lost updates from changes it
// could not have seen.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

type simHubUser struct {
	name           string
	admin, running bool
	keptSince      time.Time // since when tokenkeeper has had to keep the user fresh
	state          json.RawMessage
	version        int
	cleared        bool // the auth_state was cleared and nobody logged in since
	clearedAt      int  // the version the clear made
	clearedBy      string
	extChange      int       // the version of the latest change made by someone other than tokenkeeper
	tkRead         int       // the version tokenkeeper's latest read saw
	tkReadAt       time.Time // when that read's answer left the hub
	login          *simSession
	browser        []hubclient.Token
	refreshing     bool      // OAuthenticator is refreshing the user's tokens
	lastActivity   time.Time // the hub's last_activity: logins and server starts move it
	tokens         simTokens // what state holds
	tkStopped      time.Time // when tokenkeeper last stopped the user's running server
	userStopped    time.Time // when the user last stopped it
}

// setState replaces the auth_state and parses it once.
func (u *simHubUser) setState(state json.RawMessage) {
	u.state = state
	u.tokens = simParse(state)
}

// simTokens is what the models read from an auth_state, parsed without the
// engine's help: the session, the refresh token and the access token's
// expiry. ok is false when the auth_state holds no tokens.
type simTokens struct {
	sid, refresh string
	expiry       time.Time
	ok           bool
}

func simParse(state json.RawMessage) simTokens {
	var st struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
	}
	if json.Unmarshal(state, &st) != nil || st.Access == "" || st.Refresh == "" {
		return simTokens{}
	}
	parts := strings.Split(st.Access, ".")
	var c struct {
		Exp int64  `json:"exp"`
		Sid string `json:"sid"`
	}
	if len(parts) != 3 {
		return simTokens{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return simTokens{}
	}
	return simTokens{sid: c.Sid, refresh: st.Refresh, expiry: time.Unix(c.Exp, 0), ok: true}
}

// simHubFailure makes the hub answer 503 to op ("read", "write" or "list")
// for user ("" for everyone) between from and until. An ambiguous write
// failure takes effect although the caller sees an error.
type simHubFailure struct {
	op, user    string
	from, until time.Time
	ambiguous   bool
}

type simHub struct {
	w        *simWorld
	users    map[string]*simHubUser
	names    []string // sorted
	failures []simHubFailure
	// until is when the last failure ends, by user ("" for everyone).
	until map[string]time.Time
}

// simHubConn is one caller's connection to the hub.
type simHubConn struct {
	h *simHub
	p *simProc
}

func newSimHub(w *simWorld) *simHub {
	return &simHub{w: w, users: map[string]*simHubUser{}, until: map[string]time.Time{}}
}

// fail adds a failure and forgets those that are over.
func (h *simHub) fail(f simHubFailure) {
	h.failures = append(slices.DeleteFunc(h.failures, func(o simHubFailure) bool { return o.until.Before(f.from) }), f)
	h.until[f.user] = latest(h.until[f.user], f.until)
}

func (h *simHub) add(u *simHubUser) {
	h.users[u.name] = u
	h.names = append(h.names, u.name)
	slices.Sort(h.names)
}

// failing returns the failure that op on user meets now, if any.
func (h *simHub) failing(op, user string) *simHubFailure {
	now := time.Now()
	for i, f := range h.failures {
		if f.op == op && (f.user == "" || f.user == user) && !now.Before(f.from) && now.Before(f.until) {
			return &h.failures[i]
		}
	}
	return nil
}

// impaired is when the last hub failure that concerns user ends.
func (h *simHub) impaired(user string) time.Time { return latest(h.until[""], h.until[user]) }

func simHubError(method, path string, status int, msg string) error {
	return &hubclient.APIError{Method: method, Path: path, Status: status, Message: msg}
}

func simHubNetError(method, path string, err error) error {
	return fmt.Errorf("hubclient: %s %s: %w", method, path, err)
}

// wait takes the latency of one call concerning user; it fails for a dead
// caller and when ctx ends first.
func (c *simHubConn) wait(ctx context.Context, method, path, user string) error {
	w := c.h.w
	w.mu.Lock()
	if c.p.dead {
		w.mu.Unlock()
		return errProcessGone
	}
	lat := w.latency("hub", user, c.p)
	w.mu.Unlock()
	if err := sleepCtx(ctx, lat); err != nil {
		return simHubNetError(method, path, err)
	}
	return nil
}

func (c *simHubConn) list(ctx context.Context, active bool) ([]simUserView, error) {
	if err := c.wait(ctx, "GET", "/users", ""); err != nil {
		return nil, err
	}
	h := c.h
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	switch {
	case c.p.dead:
		return nil, errProcessGone
	case h.failing("list", "") != nil:
		return nil, simHubError("GET", "/users", http.StatusServiceUnavailable, "Service Unavailable")
	}
	var out []simUserView
	for _, name := range h.names {
		if u := h.users[name]; !active || u.running {
			out = append(out, u.view(false))
		}
	}
	return out, nil
}

func (c *simHubConn) read(ctx context.Context, name string) (simUserView, error) {
	path := "/users/" + name
	if err := c.wait(ctx, "GET", path, name); err != nil {
		return simUserView{}, err
	}
	h := c.h
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	u := h.users[name]
	switch {
	case c.p.dead:
		return simUserView{}, errProcessGone
	case h.failing("read", name) != nil:
		return simUserView{}, simHubError("GET", path, http.StatusServiceUnavailable, "Service Unavailable")
	case u == nil:
		return simUserView{}, simHubError("GET", path, http.StatusNotFound, "No such user")
	}
	if c.p.tk {
		u.tkRead, u.tkReadAt = u.version, time.Now()
	}
	return u.view(true), nil
}

// write is PATCH /users/{name} with an auth_state: it takes effect when sent.
func (c *simHubConn) write(ctx context.Context, name string, state json.RawMessage) error {
	w := c.h.w
	w.mu.Lock()
	err := c.apply(name, state)
	if err == errProcessGone {
		w.mu.Unlock()
		return err
	}
	lat := w.latency("hub", name, c.p)
	w.mu.Unlock()
	if serr := sleepCtx(ctx, lat); serr != nil && err == nil {
		return simHubNetError("PATCH", "/users/"+name, serr)
	}
	return err
}

func (c *simHubConn) apply(name string, state json.RawMessage) error {
	h, path := c.h, "/users/"+name
	u := h.users[name]
	switch {
	case c.p.dead:
		return errProcessGone
	case u == nil:
		return simHubError("PATCH", path, http.StatusNotFound, "No such user")
	case u.admin:
		return simHubError("PATCH", path, http.StatusForbidden, "Only admins can modify other admins")
	}
	f := h.failing("write", name)
	if f != nil && !f.ambiguous {
		return simHubError("PATCH", path, http.StatusServiceUnavailable, "Service Unavailable")
	}
	h.tkWrite(c.p, u, state)
	if f != nil {
		return simHubNetError("PATCH", path, context.DeadlineExceeded)
	}
	return nil
}

// tkWrite applies tokenkeeper's write and checks it: tokens never go back
// over an auth_state tokenkeeper cleared (d), and a live session is never
// cleared (a). A change by someone else inside the window between
// tokenkeeper's latest read and this write, issued the instant that read
// answered, is one no client of the hub's API can avoid (there is no
// compare-and-set): the session it overwrites is written off instead.
func (h *simHub) tkWrite(p *simProc, u *simHubUser, state json.RawMessage) {
	w := h.w
	next, cur := simParse(state), u.tokens
	raced := u.extChange > u.tkRead && u.tkReadAt.Equal(time.Now())
	switch {
	case next.ok && u.cleared:
		w.violate("d", "%s: %s wrote tokens of session %s (version %d) over the auth_state %s cleared at version %d; its latest read saw version %d",
			u.name, p.name, next.sid, u.version+1, u.clearedBy, u.clearedAt, u.tkRead)
	case next.ok && cur.ok && next.sid != cur.sid:
		h.overwrite(p, u, cur, raced)
	case !next.ok && cur.ok:
		h.clear(p, u, cur, raced)
	}
	u.version++
	u.cleared = !next.ok
	if u.cleared {
		state = json.RawMessage(`{}`)
		u.clearedAt, u.clearedBy = u.version, p.name
	}
	u.setState(state)
	w.note("hub PATCH %s v%d by %s: %s", u.name, u.version, p.name, h.describe(state))
}

// overwrite is tokenkeeper writing one session's tokens over another's.
func (h *simHub) overwrite(p *simProc, u *simHubUser, cur simTokens, raced bool) {
	s := h.w.kc.sessions[cur.sid]
	if raced && s != nil {
		s.writtenOff = "a login landed inside " + p.name + "'s read→write window"
		h.w.count("written off: login overwritten inside the read→write window")
	}
}

// clear is tokenkeeper logging the user out: the logout's actions and
// audit row are owed from now on (k).
func (h *simHub) clear(p *simProc, u *simHubUser, cur simTokens, raced bool) {
	w := h.w
	w.count("logouts")
	w.owed[u.name] = simLogout{at: time.Now(), sid: cur.sid, by: p.name, running: u.running, login: u.login}
	s := w.kc.sessions[cur.sid]
	if s == nil || !w.kc.live(s, time.Now()) || s.writtenOff != "" {
		return // a written-off session cannot be refreshed any more: logging it out is right
	}
	if raced {
		s.writtenOff = "a login landed inside " + p.name + "'s read→write window"
		w.count("written off: login cleared inside the read→write window")
		return
	}
	w.violate("a", "%s: %s cleared the auth_state while its session %s is live until %s (%s; started %s, last refreshed %s; tokenkeeper's latest read saw version %d of %d)",
		u.name, p.name, s.id, w.since(w.kc.end(s)), w.endReason(s), w.since(s.start), w.since(s.lastRefresh), u.tkRead, u.version)
}

// describe names the session and refresh token an auth_state holds.
func (h *simHub) describe(state json.RawMessage) string {
	st := simParse(state)
	if !st.ok {
		return "no tokens"
	}
	label := "unknown refresh token"
	if t := h.w.kc.refresh[st.refresh]; t != nil {
		label = t.label
	}
	return st.sid + "/" + label
}

// extWrite is a change by the hub itself: a login, or OAuthenticator's own
// refresh of an admin.
func (h *simHub) extWrite(u *simHubUser, state json.RawMessage, what string) {
	u.version++
	u.extChange, u.cleared = u.version, false
	u.setState(state)
	h.w.note("hub %s %s v%d: %s", what, u.name, u.version, h.describe(state))
}

// login is the user logging in to the hub through Keycloak.
func (h *simHub) login(u *simHubUser) *simSession {
	s, tok := h.w.kc.login(u.name)
	u.login, u.lastActivity = s, time.Now()
	sid := "browser-" + s.id
	u.browser = append(u.browser, hubclient.Token{ID: "t-" + s.id, SessionID: &sid, Kind: "api_token"})
	h.extWrite(u, simLayout(u.name, tok), "login")
	return s
}

func (c *simHubConn) tokens(ctx context.Context, user string) ([]hubclient.Token, error) {
	if err := c.wait(ctx, "GET", "/users/"+user+"/tokens", user); err != nil {
		return nil, err
	}
	c.h.w.mu.Lock()
	defer c.h.w.mu.Unlock()
	if u := c.h.users[user]; u != nil {
		return slices.Clone(u.browser), nil
	}
	return nil, simHubError("GET", "/users/"+user+"/tokens", http.StatusNotFound, "No such user")
}

func (c *simHubConn) deleteToken(ctx context.Context, user, id string) error {
	if err := c.wait(ctx, "DELETE", "/users/"+user+"/tokens/"+id, user); err != nil {
		return err
	}
	c.h.w.mu.Lock()
	defer c.h.w.mu.Unlock()
	if u := c.h.users[user]; u != nil && !c.p.dead {
		u.browser = slices.DeleteFunc(u.browser, func(t hubclient.Token) bool { return t.ID == id })
	}
	return nil
}

func (c *simHubConn) stopServer(ctx context.Context, user, server string) error {
	if err := c.wait(ctx, "DELETE", "/users/"+user+"/servers/"+server, user); err != nil {
		return err
	}
	c.h.w.mu.Lock()
	defer c.h.w.mu.Unlock()
	if u := c.h.users[user]; u != nil && !c.p.dead && u.running {
		u.running, u.tkStopped = false, time.Now()
		c.h.w.note("hub stopped %s's server for %s", user, c.p.name)
	}
	return nil
}

// simUserView is a user as the REST API answers: the adapter turns it into
// the hub client's type. Only GET /users/{name} carries the auth_state.
type simUserView struct {
	name, server string // server: the default server's URL, "" when none runs
	admin        bool
	lastActivity time.Time // a login and a server start move it
	state        json.RawMessage
}

func (u *simHubUser) view(withState bool) simUserView {
	v := simUserView{name: u.name, admin: u.admin, lastActivity: u.lastActivity}
	if u.running {
		v.server = "/user/" + u.name + "/"
	}
	if withState {
		v.state = append(json.RawMessage(nil), u.state...)
		if v.state == nil {
			v.state = json.RawMessage(`null`)
		}
	}
	return v
}

// simLayout is the auth_state GenericOAuthenticator stores after a login or
// its own refresh: the tokens, the scope, the whole token response and the
// user info.
func simLayout(user string, tok *oauth2.Token) json.RawMessage {
	resp := map[string]any{}
	for _, k := range []string{"access_token", "expires_in", "refresh_expires_in", "refresh_token", "token_type",
		"id_token", "not-before-policy", "session_state", "scope"} {
		resp[k] = tok.Extra(k)
	}
	scope, _ := tok.Extra("scope").(string)
	b, err := json.Marshal(map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "id_token": tok.Extra("id_token"),
		"scope": strings.Fields(scope), "token_response": resp,
		"oauth_user": map[string]any{"sub": simSub(user), "preferred_username": user, "email": user + "@example.org",
			"email_verified": true, "groups": []string{"/hpc"}},
	})
	if err != nil {
		panic(err)
	}
	return b
}
