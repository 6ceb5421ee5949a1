//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The tests in this file put a proxy between tokenkeeper and Keycloak that
// loses the answer of one refresh grant after Keycloak has carried it out,
// as a load balancer's 502 or a reset connection does. They restart the hub
// (and change the realm's Max Reuse), so they do not call t.Parallel.

// kcProxyOffset is the Keycloak proxy's port, above the stack's port base.
const kcProxyOffset = 60

// throughKeycloakProxy starts a Keycloak proxy and restarts the hub so that
// tokenkeeper's Keycloak traffic, and only tokenkeeper's, goes through it,
// with env added to tokenkeeper's settings. When the test ends the hub
// returns to the stack's own settings, then the proxy stops.
func throughKeycloakProxy(t *testing.T, env ...string) *KeycloakProxy {
	t.Helper()
	// The port is the stack's own, but when the stack's ports lie in the
	// kernel's ephemeral range an outgoing connection may hold it for a
	// while; then the kernel picks a free one.
	var kcp *KeycloakProxy
	err := Poll(context.Background(), 10*time.Second, 500*time.Millisecond, func() (bool, error) {
		var err error
		kcp, err = StartKeycloakProxy(fmt.Sprintf("127.0.0.1:%d", stack.cfg.PortBase+kcProxyOffset), stack.KeycloakURL())
		return err == nil, nil
	})
	if err != nil {
		if kcp, err = StartKeycloakProxy("127.0.0.1:0", stack.KeycloakURL()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(kcp.Close)
	restartHub(t, append([]string{"TOKENKEEPER_ISSUER_URL=" + kcp.Issuer()}, env...)...)
	waitHealthy(t)
	return kcp
}

// unknownLine is tokenkeeper's "refresh grant outcome unknown" log line.
type unknownLine struct {
	Msg      string `json:"msg"`
	User     string `json:"user"`
	Spends   *int   `json:"spends"`
	MaxReuse *int   `json:"max_reuse"`
	Err      string `json:"err"`
}

// String shows the line's fields, and the first line of its error.
func (l unknownLine) String() string {
	deref := func(p *int) string {
		if p == nil {
			return "none"
		}
		return fmt.Sprint(*p)
	}
	err, _, _ := strings.Cut(l.Err, "\n")
	return fmt.Sprintf("%q user=%s spends=%s max_reuse=%s err=%q", l.Msg, l.User, deref(l.Spends), deref(l.MaxReuse), err)
}

// outcomeUnknownLines returns tokenkeeper's "refresh grant outcome unknown"
// lines about user written at or after since.
func outcomeUnknownLines(t *testing.T, user string, since time.Time) []unknownLine {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	var out []unknownLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			unknownLine
			Time time.Time `json:"time"`
		}
		if !bytes.HasPrefix(sc.Bytes(), []byte("{")) || json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if l.Msg == "refresh grant outcome unknown" && l.User == user && !l.Time.Before(since) {
			out = append(out, l.unknownLine)
		}
	}
	return out
}

// loseNextGrant logs user in (a new Keycloak user), starts their server so
// that tokenkeeper keeps their tokens fresh, and has kcp lose the answer of
// tokenkeeper's next refresh grant for them. It returns the lost grant and
// the refresh token it spent, which the hub held.
func loseNextGrant(t *testing.T, kcp *KeycloakProxy, user string, how LostAnswer) (Grant, string) {
	t.Helper()
	ctx := context.Background()
	if err := stack.CreateKeycloakUser(ctx, user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	sub, err := stack.KeycloakUserID(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	login(t, user)
	startServer(t, user)
	stopServerAtEnd(t, user)
	spent := mustRefreshToken(t, user)
	loss := kcp.LoseAnswer(how, func(g Grant) bool { return g.Subject == sub })
	// The login's access token lives 30 s; tokenkeeper refreshes it within
	// the last 5 s, a sweep (2 s) later at most.
	select {
	case <-loss.Done():
	case <-time.After(90 * time.Second):
		t.Fatalf("no refresh grant for %s came through the Keycloak proxy within 90 s (grants seen: %d)", user, len(kcp.Grants()))
	}
	lost := loss.Grant()
	if lost.Status != http.StatusOK {
		t.Fatalf("Keycloak answered the grant whose answer the proxy lost with %d, want 200: the test needs a grant that took effect", lost.Status)
	}
	if lost.Client != "jupyterhub" || !strings.HasPrefix(lost.UserAgent, "Go-http-client/") {
		t.Errorf("the lost grant came from client %q with User-Agent %q, want tokenkeeper's: jupyterhub, Go-http-client", lost.Client, lost.UserAgent)
	}
	if lost.Token != TokenDigest(spent) {
		t.Fatalf("the lost grant spent a refresh token other than the one the hub held before it")
	}
	return lost, spent
}

// grantsWith returns the grants kcp forwarded that spent the token with digest.
func grantsWith(kcp *KeycloakProxy, digest string) []Grant {
	var out []Grant
	for _, g := range kcp.Grants() {
		if g.Token == digest {
			out = append(out, g)
		}
	}
	return out
}

// TestLostGrantAnswerKeepsSessionWithMaxReuse1 loses, at a proxy between
// tokenkeeper and Keycloak, the answer (a 502 page) of a refresh grant that
// Keycloak carried out, with the realm's Max Reuse 1 and tokenkeeper's
// refresh_token_max_reuse 1 as README recommends. tokenkeeper logs the
// unknown outcome, spends the same refresh token once more at once, which
// Keycloak accepts as the one allowed reuse, and writes the retry's tokens
// back: the session lives at Keycloak, the hub holds a working refresh
// token, refreshing goes on and nobody is logged out.
func TestLostGrantAnswerKeepsSessionWithMaxReuse1(t *testing.T) {
	ctx := context.Background()
	const user = "xlost1"
	since, expiries := time.Now(), refreshExpiries(t, []string{user})
	kcp := throughKeycloakProxy(t)
	lost, spent := loseNextGrant(t, kcp, user, BadGateway)

	// The same token is spent again, through the proxy, and Keycloak
	// accepts it.
	var retry Grant
	err := Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		gs := grantsWith(kcp, lost.Token)
		if len(gs) < 2 {
			return false, nil
		}
		retry = gs[1]
		return true, nil
	})
	if err != nil {
		t.Fatalf("tokenkeeper did not spend the refresh token again after the lost answer: %v", err)
	}
	if retry.Status != http.StatusOK || retry.Lost {
		t.Fatalf("the retry with the same refresh token: Keycloak answered %d (lost %v), want 200 (Max Reuse 1 allows one reuse)", retry.Status, retry.Lost)
	}
	if n := len(grantsWith(kcp, lost.Token)); n != 2 {
		t.Errorf("the refresh token was spent %d times, want 2 (1 + Max Reuse)", n)
	}

	// The hub holds the retry's tokens: a refresh token Keycloak accepts.
	var held string
	err = Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		held = mustRefreshToken(t, user)
		return held != spent, nil
	})
	if err != nil {
		t.Fatalf("auth_state still holds the refresh token whose grant's answer was lost: %v", err)
	}
	if !introspectRefresh(t, held) {
		t.Error("introspection of the refresh token in auth_state after the retry: inactive, want active")
	}
	if introspectRefresh(t, spent) {
		t.Error("introspection of the refresh token spent by the lost grant and the retry: active, want inactive (spent 1 + Max Reuse times)")
	}
	at, _ := accessToken(t, user)
	assertUserinfoOK(t, at)

	// The session lives at Keycloak, with the hub's client in it.
	sessions, err := stack.KeycloakSessions(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 || !slices.Contains(mapValues(sessions[0].Clients), "jupyterhub") {
		t.Errorf("Keycloak sessions of %s after the retry: %+v, want one with the jupyterhub client", user, sessions)
	}

	// tokenkeeper goes on refreshing: the next grant spends the retry's
	// refresh token (or a later one) and Keycloak answers it.
	next := waitNewToken(t, user, at, 60*time.Second)
	assertUserinfoOK(t, next)
	var later []Grant
	for _, g := range kcp.Grants() {
		if g.At.After(retry.At) && g.Subject == lost.Subject {
			later = append(later, g)
		}
	}
	if len(later) == 0 {
		t.Fatal("no grant for the user came through the proxy after the retry, though auth_state changed")
	}
	if later[0].Token != TokenDigest(held) || later[0].Status != http.StatusOK {
		t.Errorf("the grant after the retry: %+v, want one that spends the retry's refresh token, answered 200", later[0])
	}

	// The log names the unknown outcome, within Max Reuse 1.
	lines := outcomeUnknownLines(t, user, since)
	if len(lines) != 1 {
		t.Fatalf("tokenkeeper logged %d \"refresh grant outcome unknown\" lines for %s, want 1: %+v", len(lines), user, lines)
	}
	if l := lines[0]; l.Spends == nil || *l.Spends != 1 || l.MaxReuse == nil || *l.MaxReuse != 1 || !strings.Contains(l.Err, "502") {
		t.Errorf("\"refresh grant outcome unknown\" line: %+v, want spends 1, max_reuse 1 and the proxy's 502", l)
	}

	t.Logf("the lost grant was answered 200 by Keycloak at %s and lost as a 502; the retry with the same token was answered %d %s later; the next grant %d; tokenkeeper logged %v",
		lost.At.Format(time.TimeOnly), retry.Status, retry.At.Sub(lost.At).Round(time.Millisecond), later[0].Status, lines[0])

	// Nobody was logged out, and the session was never taken for ended.
	if ended := byUser(linesSince(t, since, "logged out", "keycloak session ended"), user); len(ended) != 0 {
		t.Errorf("%s's session taken for ended or logged out: %+v", user, ended)
	}
	assertNoOtherLogout(t, since, expiries, nil)
	assertNotLoggedOut(t, user)
	if status, body := health(t); status != http.StatusOK {
		t.Errorf("health after the recovered grant: %d %v, want 200", status, body)
	}
}

// TestLostGrantAnswerWithMaxReuse0 loses, at a proxy between tokenkeeper
// and Keycloak, the answer of a refresh grant that Keycloak carried out (the
// proxy closes the connection), with the realm's Max Reuse 0 and
// tokenkeeper's refresh_token_max_reuse 0. It checks what the documentation
// says then happens. README's troubleshooting table: "users logged out
// after a restart or a proxy error" with the log line "refresh grant
// outcome unknown" when the realm's Max Reuse is not 1. docs/keycloak.md
// (realm settings, linked from README's Keycloak checklist): with Max Reuse
// 0 tokenkeeper never spends the token again; Keycloak's introspection says
// whether the lost grant took effect; if it did, the user is logged out of
// the hub, and their SSO session lives on, so the next login needs no
// password.
func TestLostGrantAnswerWithMaxReuse0(t *testing.T) {
	ctx := context.Background()
	const user = "xlost0"
	since, expiries := time.Now(), refreshExpiries(t, []string{user})
	setRealm(t, map[string]any{"refreshTokenMaxReuse": 0})
	kcp := throughKeycloakProxy(t, "TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE=0")
	lost, spent := loseNextGrant(t, kcp, user, ConnectionClosed)
	browser := login(t, user)

	// README: the user is logged out of the hub. tokenkeeper waits until
	// the failed access token has expired (it lived 30 s and was refreshed
	// in its last seconds) and confirms the ending first.
	err := Poll(ctx, 60*time.Second+busySlack, 250*time.Millisecond, func() (bool, error) {
		return len(byUser(linesSince(t, since, "logged out"), user)) > 0, nil
	})
	if err != nil {
		t.Fatalf("README: with Max Reuse 0 a lost grant answer logs the user out; %s was not logged out: %v (lines: %+v)",
			user, err, byUser(linesSince(t, since), user))
	}
	if out := byUser(linesSince(t, since, "logged out"), user); len(out) != 1 {
		t.Errorf("%s logged out %d times: %+v, want once", user, len(out), out)
	}
	assertNoOtherLogout(t, since, expiries, []string{user})
	if st, err := stack.AuthState(ctx, user); err != nil || len(st) != 0 {
		t.Errorf("auth_state of %s after the logout: %d keys, %v; want it cleared", user, len(st), err)
	}

	// README: the log says why.
	lines := outcomeUnknownLines(t, user, since)
	if len(lines) != 1 {
		t.Errorf("tokenkeeper logged %d \"refresh grant outcome unknown\" lines for %s, want 1: %+v", len(lines), user, lines)
	} else if l := lines[0]; l.Spends == nil || *l.Spends != 1 || l.MaxReuse == nil || *l.MaxReuse != 0 {
		t.Errorf("\"refresh grant outcome unknown\" line: %+v, want spends 1 and max_reuse 0", l)
	}
	ended := byUser(linesSince(t, since, "keycloak session ended"), user)
	if len(ended) != 1 {
		t.Errorf("\"keycloak session ended\" lines for %s: %+v, want 1", user, ended)
	}
	for _, l := range lines {
		t.Logf("tokenkeeper logged %v", l)
	}
	for _, l := range append(ended, byUser(linesSince(t, since, "logged out"), user)...) {
		t.Logf("tokenkeeper logged %q at %s: %s", l.Msg, l.Time.Format(time.TimeOnly), l.Reason)
	}

	// docs/keycloak.md: the token is never spent again, and introspection
	// (which spends nothing) found the lost grant took effect.
	if gs := grantsWith(kcp, lost.Token); len(gs) != 1 {
		t.Errorf("the refresh token whose grant's answer was lost was spent %d times, want once: Max Reuse 0 allows no reuse", len(gs))
	}
	var probed []Introspection
	for _, in := range kcp.Introspections() {
		if in.Token == lost.Token && in.At.After(lost.At) {
			probed = append(probed, in)
		}
	}
	if len(probed) == 0 || probed[0].Status != http.StatusOK || probed[0].Active {
		t.Errorf("introspections of the spent refresh token after the lost answer: %+v, want Keycloak's answer inactive", probed)
	}
	t.Logf("the lost grant was answered 200 by Keycloak at %s and lost by closing the connection", lost.At.Format(time.TimeOnly))
	for _, in := range probed {
		t.Logf("tokenkeeper introspected its refresh token at %s: %d, active %v", in.At.Format(time.TimeOnly), in.Status, in.Active)
	}
	errs, err := stack.KeycloakEvents(ctx, "REFRESH_TOKEN_ERROR")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		if e.SessionID == lost.Session {
			t.Errorf("Keycloak refused a refresh grant of %s's session: %+v; want none (no reuse)", user, e)
		}
	}

	// docs/keycloak.md: the SSO session lives on, so the next login needs
	// no password.
	sessions, err := stack.KeycloakSessions(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 || sessions[0].ID != lost.Session {
		t.Errorf("Keycloak sessions of %s after the hub's logout: %+v, want the session %s living on", user, sessions, lost.Session)
	}
	page, at, err := getPage(ctx, browser, stack.HubURL()+"/hub/oauth_login")
	switch {
	case err != nil:
		t.Errorf("log %s in again: %v", user, err)
	case !strings.HasPrefix(at.String(), stack.HubURL()+"/") || formAction.MatchString(page):
		t.Errorf("log %s in again: ended at %s (login form shown: %v), want the hub without a password", user, at, formAction.MatchString(page))
	default:
		if rt := mustRefreshToken(t, user); rt == spent {
			t.Errorf("after logging in again auth_state holds the dead refresh token")
		}
	}
}
