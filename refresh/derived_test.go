package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

var (
	trino    = Target{Kind: KindAudience, Name: "trino"}
	external = Target{Kind: KindProvider, Name: "external"}
)

// deriveCall is one call of a fake DeriveFunc.
type deriveCall struct {
	Access string
	Name   string
}

// deriver stands for keycloak.Client's Exchange or ProviderToken: it answers
// with a JWT for the name asked, issued now, living life and numbered by
// call, unless answer gives something else.
type deriver struct {
	now  func() time.Time
	life time.Duration
	// answer, when set and returning non-nil, answers the n-th call (from 1).
	answer func(n int) (*oauth2.Token, error)
	// started, when set, gets the number of each call as it starts; gate,
	// when set, is waited on before answering.
	started chan int
	gate    chan struct{}

	mu      sync.Mutex
	calls   []deriveCall
	answers []string // the access token each call answered with, "" for an error
}

func (d *deriver) derive(_ context.Context, access config.Secret, name string) (*oauth2.Token, error) {
	d.mu.Lock()
	d.calls = append(d.calls, deriveCall{Access: access.Reveal(), Name: name})
	n := len(d.calls)
	d.mu.Unlock()
	if d.started != nil {
		d.started <- n
	}
	if d.gate != nil {
		<-d.gate
	}
	now := d.now()
	tok := &oauth2.Token{TokenType: "Bearer",
		AccessToken: jwt(map[string]any{"iat": now.Unix(), "exp": now.Add(d.life).Unix(), "aud": name, "n": n})}
	var err error
	if d.answer != nil {
		if t, e := d.answer(n); t != nil || e != nil {
			tok, err = t, e
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers = append(d.answers, "")
	if err == nil {
		d.answers[len(d.answers)-1] = tok.AccessToken
	}
	return tok, err
}

// answered returns the access token the n-th call (from 1) answered with.
func (d *deriver) answered(t *testing.T, n int) string {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if n > len(d.answers) {
		t.Fatalf("no answer %d: %d answers", n, len(d.answers))
	}
	return d.answers[n-1]
}

func (d *deriver) made() []deriveCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]deriveCall(nil), d.calls...)
}

// derivedFixture is a refresher that exchanges for trino and hands out the
// tokens of the identity provider external.
type derivedFixture struct {
	*fixture
	x, p *deriver
	reg  *prometheus.Registry
}

func newDerivedFixture(t *testing.T, life time.Duration, mutate ...func(*Options)) *derivedFixture {
	t.Helper()
	d := &derivedFixture{x: &deriver{life: life}, p: &deriver{life: life}, reg: prometheus.NewRegistry()}
	d.fixture = newFixture(t, append([]func(*Options){func(o *Options) {
		o.Exchange, o.Audiences = d.x.derive, []string{"trino"}
		o.ProviderToken, o.Providers = d.p.derive, []string{"external"}
		o.Metrics = NewMetrics(d.reg)
	}}, mutate...)...)
	d.x.now, d.p.now = d.clock, d.clock
	return d
}

// stateWithSession is an auth_state whose access token, issued at iat and
// living life, belongs to session sid ("" leaves sid out) and carries jti.
func stateWithSession(iat time.Time, life time.Duration, refresh, sid, jti string) json.RawMessage {
	claims := map[string]any{"iat": iat.Unix(), "exp": iat.Add(life).Unix(), "jti": jti}
	if sid != "" {
		claims["sid"] = sid
	}
	at := jwt(claims)
	b, _ := json.Marshal(map[string]any{
		"access_token": at, "refresh_token": refresh, "id_token": nil, "scope": []string{"openid"},
		"token_response": map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(life.Seconds())},
		"oauth_user":     map[string]any{"preferred_username": "u"},
	})
	return b
}

func (f *fixture) setState(name string, st json.RawMessage) {
	f.hub.mu.Lock()
	defer f.hub.mu.Unlock()
	f.hub.states[name] = st
}

// counter returns the value of tokenkeeper_derived_tokens_total{kind,outcome}.
func (d *derivedFixture) counter(t *testing.T, kind Kind, outcome string) float64 {
	t.Helper()
	families, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "tokenkeeper_derived_tokens_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == string(kind) && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestDerivedExchangesAFreshAccessToken(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice") // 10 s left
	d, err := f.r.Derived(context.Background(), "alice", trino, time.Minute)
	if err != nil {
		t.Fatalf("Derived(alice, trino) error: %v", err)
	}
	if n := f.grant.calls.Load(); n != 1 {
		t.Errorf("grants = %d, want 1: the exchange needs a fresh access token", n)
	}
	base := f.hub.state(t, "alice").Access.Reveal()
	if diff := cmp.Diff([]deriveCall{{Access: base, Name: "trino"}}, f.x.made()); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}
	if n := len(f.p.made()); n != 0 {
		t.Errorf("identity-provider token requests = %d, want 0", n)
	}
	want := Tokens{Access: config.Secret(f.x.answered(t, 1)), Type: "Bearer",
		Expiry: f.now.Add(5 * time.Minute), Issued: f.now, Session: "s1"}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("Derived(alice, trino) (-want +got):\n%s", diff)
	}
	if n := f.counter(t, KindAudience, "success"); n != 1 {
		t.Errorf("tokenkeeper_derived_tokens_total{audience,success} = %v, want 1", n)
	}
}

// TestDerivedRefusesTargetsNotAllowed: only the configured audiences and
// identity providers are served, and a refused target costs nothing.
func TestDerivedRefusesTargetsNotAllowed(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	tests := []struct {
		target Target
		want   error
	}{
		{Target{KindAudience, "minio"}, keycloak.ErrAudienceNotAllowed},
		{Target{KindAudience, "Trino"}, keycloak.ErrAudienceNotAllowed},
		{Target{KindAudience, ""}, keycloak.ErrAudienceNotAllowed},
		{Target{KindAudience, "external"}, keycloak.ErrAudienceNotAllowed},
		{Target{KindProvider, "trino"}, keycloak.ErrProviderNotAllowed},
		{Target{KindProvider, "github"}, keycloak.ErrProviderNotAllowed},
		{Target{"other", "trino"}, keycloak.ErrAudienceNotAllowed},
	}
	for _, tt := range tests {
		if _, err := f.r.Derived(context.Background(), "alice", tt.target, time.Minute); !errors.Is(err, tt.want) {
			t.Errorf("Derived(alice, %+v) error = %v, want %v", tt.target, err, tt.want)
		}
	}
	if n := int(f.hub.reads.Load()+f.grant.calls.Load()) + len(f.x.made()) + len(f.p.made()); n != 0 {
		t.Errorf("hub reads, grants and Keycloak requests for refused targets = %d, want 0", n)
	}

	// A list without its function allows nothing.
	g := newDerivedFixture(t, 5*time.Minute, func(o *Options) { o.Exchange, o.ProviderToken = nil, nil })
	g.addUser("alice", true, g.now, "rt-alice")
	for target, want := range map[Target]error{trino: keycloak.ErrAudienceNotAllowed, external: keycloak.ErrProviderNotAllowed} {
		if _, err := g.r.Derived(context.Background(), "alice", target, time.Minute); !errors.Is(err, want) {
			t.Errorf("Derived(alice, %+v) without a function: error = %v, want %v", target, err, want)
		}
	}
}

// TestDerivedCachedPerUserAndTarget: each user and target is asked of
// Keycloak once while its token has enough left, then again with a fresh
// access token.
func TestDerivedCachedPerUserAndTarget(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	f.addUser("bob", true, f.now, "rt-bob")
	ctx := context.Background()
	got := map[string]string{}
	for range 3 {
		for _, user := range []string{"alice", "bob"} {
			for _, target := range []Target{trino, external} {
				d, err := f.r.Derived(ctx, user, target, time.Minute)
				if err != nil {
					t.Fatalf("Derived(%s, %+v) error: %v", user, target, err)
				}
				key := user + " " + target.Name
				if prev, ok := got[key]; ok && prev != d.Access.Reveal() {
					t.Errorf("Derived(%s, %+v) changed while cached", user, target)
				}
				got[key] = d.Access.Reveal()
			}
		}
	}
	if nx, np := len(f.x.made()), len(f.p.made()); nx != 2 || np != 2 {
		t.Errorf("exchanges, provider tokens = %d, %d; want 2, 2 (one per user)", nx, np)
	}
	if len(map[string]bool{got["alice trino"]: true, got["bob trino"]: true, got["alice external"]: true, got["bob external"]: true}) != 4 {
		t.Errorf("derived tokens are not one per user and target: %v", got)
	}

	// With less than a minute left, both tokens are made anew.
	f.advance(4*time.Minute + 30*time.Second)
	if _, err := f.r.Derived(ctx, "alice", trino, time.Minute); err != nil {
		t.Fatal(err)
	}
	calls := f.x.made()
	if len(calls) != 3 || calls[2].Access != f.hub.state(t, "alice").Access.Reveal() {
		t.Errorf("exchanges after 4m30s = %+v, want a third with alice's refreshed access token", calls)
	}
}

func TestDerivedConcurrentCallersShareOneExchange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newDerivedFixture(t, 5*time.Minute)
		f.addUser("alice", true, f.now, "rt-alice")
		f.x.gate = make(chan struct{})
		var wg sync.WaitGroup
		got := make([]Tokens, 50)
		errs := make([]error, 50)
		for i := range got {
			wg.Go(func() { got[i], errs[i] = f.r.Derived(context.Background(), "alice", trino, time.Minute) })
		}
		synctest.Wait()
		close(f.x.gate)
		wg.Wait()
		for i := range got {
			if errs[i] != nil || got[i].Access.Reveal() != f.x.answered(t, 1) {
				t.Fatalf("call %d = %v, want the one exchanged token", i, errs[i])
			}
		}
		if n := len(f.x.made()); n != 1 {
			t.Errorf("exchanges for 50 concurrent calls = %d, want 1", n)
		}
	})
}

// TestDerivedNotServedOnceTheSessionEnded: a cached derived token that is
// still valid is not served once the user's own refresh finds the session
// ended.
func TestDerivedNotServedOnceTheSessionEnded(t *testing.T) {
	f := newDerivedFixture(t, 10*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	ctx := context.Background()
	if _, err := f.r.Derived(ctx, "alice", trino, time.Minute); err != nil {
		t.Fatal(err)
	}
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	f.advance(4*time.Minute + 30*time.Second) // alice's own token needs a refresh; the derived one does not
	if d, err := f.r.Derived(ctx, "alice", trino, time.Minute); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Derived(alice, trino) after the session ended = %q, %v; want ErrSessionEnded", d.Access.Reveal(), err)
	}
	if n := len(f.x.made()); n != 1 {
		t.Errorf("exchanges = %d, want 1", n)
	}
}

// loggedInAgain is alice with a trino token made in session s1 (derived
// tokens live 10 minutes), who logs in again (session s2) 4m30s later, when
// her own s1 token needs a refresh.
func loggedInAgain(t *testing.T) *derivedFixture {
	t.Helper()
	f := newDerivedFixture(t, 10*time.Minute)
	f.setState("alice", stateWithSession(f.now, 5*time.Minute, "rt-1", "s1", "a"))
	f.hub.active["alice"] = true
	if _, err := f.r.Derived(context.Background(), "alice", trino, time.Minute); err != nil {
		t.Fatal(err)
	}
	f.advance(4*time.Minute + 30*time.Second)
	f.setState("alice", stateWithSession(f.now, 5*time.Minute, "rt-2", "s2", "b"))
	return f
}

// TestDerivedFromANewSessionIsMadeAgain: a user who logged in again gets a
// token derived from the new session, not the one cached for the old.
func TestDerivedFromANewSessionIsMadeAgain(t *testing.T) {
	f := loggedInAgain(t)
	ctx := context.Background()
	d, err := f.r.Derived(ctx, "alice", trino, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	calls := f.x.made()
	if len(calls) != 2 || calls[1].Access != f.hub.state(t, "alice").Access.Reveal() {
		t.Fatalf("exchanges = %+v, want a second with the new session's access token", calls)
	}
	if d.Access.Reveal() != f.x.answered(t, 2) || d.Session != "s2" {
		t.Errorf("Derived(alice, trino) after a new login = session %q, the old token %t; want the new session's", d.Session,
			d.Access.Reveal() == f.x.answered(t, 1))
	}
}

// TestLogoutDropsDerivedTokens: a logout drops the user's derived tokens
// (and only theirs), and none is served after it.
func TestLogoutDropsDerivedTokens(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	f.addUser("bob", true, f.now, "rt-bob")
	ctx := context.Background()
	for _, user := range []string{"alice", "bob"} {
		for _, target := range []Target{trino, external} {
			if _, err := f.r.Derived(ctx, user, target, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.r.Logout(ctx, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	f.r.mu.Lock()
	alice, bob := len(f.r.derived["alice"]), len(f.r.derived["bob"])
	f.r.mu.Unlock()
	if alice != 0 || bob != 2 {
		t.Errorf("derived tokens held after alice's logout: alice %d, bob %d; want 0, 2", alice, bob)
	}
	for _, target := range []Target{trino, external} {
		if d, err := f.r.Derived(ctx, "alice", target, time.Minute); !errors.Is(err, ErrNoTokens) {
			t.Errorf("Derived(alice, %+v) after logout = %q, %v; want ErrNoTokens", target, d.Access.Reveal(), err)
		}
	}
}

// TestLogoutRacingAnExchangeLeavesNoDerivedToken: an exchange made with the
// access token of a session that is logged out while Keycloak answers is
// discarded, even when the tokens carry no sid and the user has logged in
// again meanwhile: neither its caller nor a later one gets it.
func TestLogoutRacingAnExchangeLeavesNoDerivedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newDerivedFixture(t, 5*time.Minute)
		f.setState("alice", stateWithSession(f.now, 5*time.Minute, "rt-1", "", "old"))
		f.hub.active["alice"] = true
		f.x.started, f.x.gate = make(chan int, 4), make(chan struct{})
		ctx := context.Background()
		var racing Tokens
		var racingErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			racing, racingErr = f.r.Derived(ctx, "alice", trino, time.Minute)
		}()
		<-f.x.started
		if err := f.r.Logout(ctx, "alice", "test"); err != nil {
			t.Fatal(err)
		}
		f.setState("alice", stateWithSession(f.now, 5*time.Minute, "rt-2", "", "new")) // logged in again
		close(f.x.gate)
		<-done
		if racingErr != nil || racing.Access.Reveal() != f.x.answered(t, 2) {
			t.Errorf("the racing call = %v, the old session's token %t; want the token made for the new login",
				racingErr, racing.Access.Reveal() == f.x.answered(t, 1))
		}
		later, err := f.r.Derived(ctx, "alice", trino, time.Minute)
		if err != nil || later.Access.Reveal() == f.x.answered(t, 1) {
			t.Errorf("a later call = %v, the old session's token %t; want the new login's", err, later.Access.Reveal() == f.x.answered(t, 1))
		}
		calls := f.x.made()
		if len(calls) != 2 || calls[1].Access != f.hub.state(t, "alice").Access.Reveal() {
			t.Errorf("exchanges = %+v, want the old session's and then the new one's", calls)
		}
	})
}

// TestDerivedKeycloakUnavailable: a refusal is returned as it is, even while
// a cached token is valid; while Keycloak cannot be reached the cached token
// is served as long as it is valid, with one request per call.
func TestDerivedKeycloakUnavailable(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	ctx := context.Background()
	first, err := f.r.Derived(ctx, "alice", trino, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f.advance(2*time.Minute + 40*time.Second) // 2m20s left: below half the lifetime

	refusal := &keycloak.ExchangeError{Audience: "trino", Status: 400, Code: "invalid_request",
		Description: "Requested audience not available: trino"}
	f.x.answer = func(int) (*oauth2.Token, error) { return nil, refusal }
	var xerr *keycloak.ExchangeError
	if d, err := f.r.Derived(ctx, "alice", trino, 3*time.Minute); !errors.As(err, &xerr) || xerr != refusal || d.Access != "" {
		t.Errorf("Derived when Keycloak refuses = %q, %v; want no token and its *keycloak.ExchangeError", d.Access.Reveal(), err)
	}

	unavailable := fmt.Errorf("token exchange for %q: %w", "trino", &oauth2.RetrieveError{Response: &http.Response{StatusCode: 503}})
	f.x.answer = func(int) (*oauth2.Token, error) { return nil, unavailable }
	d, err := f.r.Derived(ctx, "alice", trino, 3*time.Minute)
	if err != nil || d.Access != first.Access {
		t.Errorf("Derived while Keycloak is unavailable = %v; want the cached token", err)
	}
	f.advance(2*time.Minute + 30*time.Second) // the derived token expired; alice's own (refreshed) did not
	if d, err := f.r.Derived(ctx, "alice", trino, time.Minute); !errors.Is(err, ErrUnavailable) || !errors.Is(err, unavailable) {
		t.Errorf("Derived once the cached token expired = %q, %v; want ErrUnavailable wrapping Keycloak's error", d.Access.Reveal(), err)
	}
	got := []float64{f.counter(t, KindAudience, "success"), f.counter(t, KindAudience, "refused"), f.counter(t, KindAudience, "transient")}
	if !cmp.Equal(got, []float64{1, 1, 2}) {
		t.Errorf("tokenkeeper_derived_tokens_total{audience} success, refused, transient = %v, want [1 1 2]", got)
	}
}

// TestDerivedOfAnOldSessionNotServedWhileKeycloakIsUnavailable: with
// Keycloak unreachable, a token cached for the user's previous session is
// not served in place of one for the new session.
func TestDerivedOfAnOldSessionNotServedWhileKeycloakIsUnavailable(t *testing.T) {
	f := loggedInAgain(t)
	ctx := context.Background()
	f.x.answer = func(int) (*oauth2.Token, error) {
		return nil, &url.Error{Op: "Post", URL: "https://kc", Err: io.ErrUnexpectedEOF}
	}
	if d, err := f.r.Derived(ctx, "alice", trino, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Derived for the new session while Keycloak is unavailable = %q, %v; want ErrUnavailable", d.Access.Reveal(), err)
	}
}

// TestProviderTokenExpired: an identity provider's token that Keycloak
// holds only expired is refused and not kept.
func TestProviderTokenExpired(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	f.p.answer = func(int) (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: jwt(map[string]any{"exp": f.clock().Add(-time.Second).Unix()})}, nil
	}
	for range 2 {
		if _, err := f.r.Derived(context.Background(), "alice", external, time.Minute); !errors.Is(err, ErrProviderTokenExpired) {
			t.Errorf("Derived(alice, external) error = %v, want ErrProviderTokenExpired", err)
		}
	}
	if n := len(f.p.made()); n != 2 {
		t.Errorf("identity-provider token requests = %d, want 2 (an expired token is not kept)", n)
	}
}

func TestDerivedTokensExpiry(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	base := Tokens{Expiry: now.Add(time.Minute), Session: "s1"}
	tests := []struct {
		name string
		tok  *oauth2.Token
		want Tokens
	}{
		{name: "jwt", tok: &oauth2.Token{AccessToken: jwt(map[string]any{"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}),
			TokenType: "bearer", Expiry: now.Add(time.Hour)},
			want: Tokens{Type: "Bearer", Issued: now, Expiry: now.Add(5 * time.Minute), Session: "s1"}},
		{name: "opaque with an expiry", tok: &oauth2.Token{AccessToken: "gho_x", Expiry: now.Add(8 * time.Hour)},
			want: Tokens{Type: "Bearer", Expiry: now.Add(8 * time.Hour), Session: "s1"}},
		{name: "opaque without", tok: &oauth2.Token{AccessToken: "gho_x", TokenType: "token"},
			want: Tokens{Type: "token", Expiry: base.Expiry, Session: "s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Access = config.Secret(tt.tok.AccessToken)
			if diff := cmp.Diff(tt.want, derivedTokens(tt.tok, base)); diff != "" {
				t.Errorf("derivedTokens (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDerivedAfterStopAsksNothing(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	ctx := context.Background()
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Derived(ctx, "alice", external, time.Minute); !errors.Is(err, ErrStopping) {
		t.Errorf("Derived after Stop: error = %v, want ErrStopping", err)
	}
	if n := len(f.p.made()); n != 0 {
		t.Errorf("identity-provider token requests after Stop = %d, want 0", n)
	}
}

// TestUserGoneFromTheHubLeavesNoDerivedTokens: a sweep that finds a user
// gone forgets their derived tokens too.
func TestUserGoneFromTheHubLeavesNoDerivedTokens(t *testing.T) {
	f := newDerivedFixture(t, 5*time.Minute)
	f.addUser("alice", true, f.now, "rt-alice")
	ctx := context.Background()
	if _, err := f.r.Derived(ctx, "alice", trino, time.Minute); err != nil {
		t.Fatal(err)
	}
	f.hub.mu.Lock()
	delete(f.hub.states, "alice")
	f.hub.mu.Unlock()
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if n := len(f.r.derived); n != 0 {
		t.Errorf("derived tokens held for users the hub no longer has: %d, want 0", n)
	}
}

// TestFlightKeysNeverCollide: a user whose name holds NUL bytes cannot
// join another user's single flight, plain or derived, and receive that
// user's token.
func TestFlightKeysNeverCollide(t *testing.T) {
	trino := Target{Kind: KindAudience, Name: "trino"}
	keys := map[string]string{
		"alice":                      flightKey("alice", Target{}),
		"alice/trino":                flightKey("alice", trino),
		"alice\x00audience\x00trino": flightKey("alice\x00audience\x00trino", Target{}),
		"alice\x00/trino":            flightKey("alice\x00", trino),
		"alice\x00audience":          flightKey("alice\x00audience", Target{Kind: KindAudience, Name: ""}),
		"\x00":                       flightKey("\x00", Target{}),
		"":                           flightKey("", Target{}),
	}
	seen := map[string]string{}
	for who, k := range keys {
		if other, ok := seen[k]; ok {
			t.Errorf("%q and %q share the single-flight key %q", who, other, k)
		}
		seen[k] = who
	}
}
