package refresh

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// TestKeycloakClock: the offset is the largest recent difference between a
// token's iat (whole seconds, Keycloak's clock) and its arrival here; under
// minSkew it is noise and not applied; until a grant shows it, the expiry
// margin allows unknownSkew more.
func TestKeycloakClock(t *testing.T) {
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		ahead time.Duration   // Keycloak's clock minus ours
		lat   []time.Duration // each answer's travel time
		want  time.Duration   // the offset applied, within a second
	}{
		{"same clock", 0, []time.Duration{20 * time.Millisecond, 900 * time.Millisecond}, 0},
		{"Keycloak 30 s ahead", 30 * time.Second, []time.Duration{10 * time.Millisecond, 3 * time.Second, 40 * time.Millisecond}, 30 * time.Second},
		{"Keycloak 30 s behind", -30 * time.Second, []time.Duration{10 * time.Millisecond, 2 * time.Second}, -30 * time.Second},
		{"a second is noise", 1500 * time.Millisecond, []time.Duration{10 * time.Millisecond}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c kcClock
			if c.margin() != expirySkew+unknownSkew {
				t.Fatalf("margin before any grant = %s, want %s", c.margin(), expirySkew+unknownSkew)
			}
			now := base
			for i, lat := range tt.lat {
				now = now.Add(time.Duration(i+1) * 7 * time.Second)
				iat := now.Add(tt.ahead).Truncate(time.Second) // Keycloak stamps whole seconds
				c.issued(iat, now, now.Add(lat))
				c.apply()
			}
			got := c.now(now).Sub(now)
			if d := got - tt.want; d > 0 || d < -time.Second {
				t.Errorf("offset = %s, want %s (to a second below)", got, tt.want)
			}
			if c.margin() != expirySkew {
				t.Errorf("margin after grants = %s, want %s", c.margin(), expirySkew)
			}
		})
	}
}

// TestServedTokensAllowForSlowGrants: a grant shows Keycloak's clock only
// as exactly as it was quick, since the token was made somewhere between the
// request and the answer. The soak found it (seed 4): after a restart, the
// only grant so far took 7 s, its iat minus the answer's arrival put
// Keycloak's clock 6 s behind ours instead of 2, and a token Keycloak had
// called expired a second before was served with "2 s to spare". Whatever
// the grants' travel times, a token expired on Keycloak's clock is not
// served, and one with minSkew, the request's travel and the second an iat
// drops to spare is.
func TestServedTokensAllowForSlowGrants(t *testing.T) {
	tests := []struct {
		name            string
		ahead           time.Duration // Keycloak's clock minus ours
		request, answer time.Duration // the grant's travel each way
	}{
		{"quick grant, same clock", 0, 20 * time.Millisecond, 20 * time.Millisecond},
		{"quick grant, Keycloak 2 s behind", -2 * time.Second, 20 * time.Millisecond, 20 * time.Millisecond},
		{"slow grant, Keycloak 2 s behind (soak seed 4)", -2 * time.Second, 3613 * time.Millisecond, 3613 * time.Millisecond},
		{"slow answer, Keycloak 30 s ahead", 30 * time.Second, 0, 8 * time.Second},
		{"slow request, Keycloak 15 s behind", -15 * time.Second, 6 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			kcNow := func() time.Time { return f.clock().Add(tt.ahead) }
			f.grant.now = kcNow
			r := f.newRefresher(t, func(o *Options) { o.KeycloakOffset = nil }) // just started: the clock is unknown
			r.grant = func(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
				f.advance(tt.request)
				tok, err := f.grant.grant(ctx, refresh)
				f.advance(tt.answer)
				return tok, err
			}
			f.addUser("alice", true, kcNow().Add(-290*time.Second), "rt-alice")
			if _, err := r.Fresh(context.Background(), "alice", time.Minute); err != nil {
				t.Fatal(err)
			}
			if f.grant.calls.Load() != 1 {
				t.Fatalf("grants = %d, want 1", f.grant.calls.Load())
			}
			r.kc.apply() // as the next sweep does
			spare := max(minSkew, tt.request+time.Second) + 10*time.Millisecond
			for _, left := range []time.Duration{-time.Second, 0, spare} {
				st := AuthState{AccessClaims: Claims{IssuedAt: kcNow().Add(-time.Minute), Expiry: kcNow().Add(left)}}
				_, err := r.current(st, ErrUnavailable)
				if served := err == nil; served != (left > 0) {
					t.Errorf("token with %s left on Keycloak's clock: served = %t (offset %s, early %s)",
						left, served, r.now().Sub(f.clock()), r.kc.early())
				}
			}
		})
	}
}

// TestUnknownClockRefreshesSooner: until a grant has shown Keycloak's clock
// (here: a refresher with no KeycloakOffset), a kept user is due unknownSkew
// sooner than their schedule, and a token with less than unknownSkew left
// is not served; an idle user's ending waits unknownSkew longer.
func TestUnknownClockRefreshesSooner(t *testing.T) {
	f := newFixture(t)
	known := f.r
	unknown := f.newRefresher(t, func(o *Options) { o.KeycloakOffset = nil })
	st := AuthState{AccessClaims: Claims{IssuedAt: f.now, Expiry: f.now.Add(5 * time.Minute)}, RefreshExpiry: f.now.Add(30 * time.Minute)}
	if d := known.due("u", st).Sub(unknown.due("u", st)); d != unknownSkew {
		t.Errorf("due with the clock unknown is %s sooner, want %s", d, unknownSkew)
	}
	st.AccessClaims.Expiry = f.now.Add(20 * time.Second)
	if _, err := unknown.current(st, ErrUnavailable); err == nil {
		t.Error("a token with 20 s left was served while Keycloak's clock is unknown")
	}
	if _, err := known.current(st, ErrUnavailable); err != nil {
		t.Errorf("a token with 20 s left was refused with the clock known: %v", err)
	}
	if unknown.kc.margin() != expirySkew+unknownSkew || known.kc.margin() != expirySkew {
		t.Errorf("margins = %s unknown, %s known", unknown.kc.margin(), known.kc.margin())
	}
}

// TestTokensReadBoundTheMargin: before any grant, a token read from the hub
// shows Keycloak's clock is at most that far behind ours (it made the token
// before the read), so an ending waits only that much more than expirySkew.
func TestTokensReadBoundTheMargin(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		iats []time.Duration // each token's iat, from its read
		want time.Duration
	}{
		{"none read", nil, expirySkew + unknownSkew},
		{"a token made a second before its read", []time.Duration{-time.Minute, -time.Second}, expirySkew + time.Second},
		{"Keycloak ahead", []time.Duration{5 * time.Second}, expirySkew},
		{"only old tokens", []time.Duration{-time.Hour}, expirySkew + unknownSkew},
	}
	for _, tt := range tests {
		var c kcClock
		for _, d := range tt.iats {
			c.read(now.Add(d), now)
		}
		if got := c.margin(); got != tt.want {
			t.Errorf("%s: margin = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestAtSessionMax: a refresh that did not move the refresh token's expiry
// although time passed is at the session's maximum; one made seconds after
// the last, or one that moved the expiry with the time, is not.
func TestAtSessionMax(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tok := func(iat, exp time.Duration) AuthState {
		return AuthState{AccessClaims: Claims{IssuedAt: now.Add(iat)}, RefreshExpiry: now.Add(exp)}
	}
	tests := []struct {
		name      string
		st, next  AuthState
		atMaximum bool
	}{
		{"expiry unchanged after 20 s", tok(0, time.Hour), tok(20*time.Second, time.Hour), true},
		{"expiry moved with the time", tok(0, time.Minute), tok(20*time.Second, time.Minute+20*time.Second), false},
		{"a second later", tok(0, time.Minute), tok(time.Second, time.Minute+time.Second), false},
		{"no expiry known", AuthState{}, tok(20*time.Second, time.Hour), false},
	}
	for _, tt := range tests {
		if got := atSessionMax(tt.st, tt.next); got != tt.atMaximum {
			t.Errorf("%s: atSessionMax = %t, want %t", tt.name, got, tt.atMaximum)
		}
	}
}
