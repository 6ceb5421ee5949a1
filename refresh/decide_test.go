package refresh

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// The safety rules are properties of the pure decisions, checked here over
// every combination of small inputs: no fakes, no timers.

var decideNow = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// decideTokens is an auth_state holding refresh token rt whose refresh token
// expires at exp (zero: no expiry).
func decideTokens(rt string, exp time.Time) AuthState {
	return AuthState{Refresh: config.Secret(rt), RefreshExpiry: exp, Session: "s1", Subject: "sub1",
		AccessClaims: Claims{IssuedAt: decideNow.Add(-time.Minute), Expiry: decideNow.Add(time.Minute)}}
}

// forEachUpdateView calls f with every view over small domains: about
// 590,000 of them.
func forEachUpdateView(f func(updateView)) {
	held := digest("rt1")
	journals := []*journalView{nil, {Spent: held}, {Spent: digest("rt0")}, {Spent: held, OpenErr: errors.New("no key")}}
	parses := []error{nil, ErrNoTokens, &MalformedError{Reason: "bad"}}
	fences := [][2]bool{{false, false}, {true, false}, {true, true}}
	expiries := []time.Time{{}, decideNow.Add(time.Hour), decideNow.Add(-time.Hour)}
	intents := []struct {
		in  store.Intent
		has bool
	}{{has: false}, {store.Intent{Spent: digest("rt0"), Spends: 1}, true}, {store.Intent{Spent: held, Spends: 1}, true},
		{store.Intent{Spent: held, Spends: 2}, true}}
	errs := []error{nil, errors.New("x")}
	for _, j := range journals {
		for _, pe := range parses {
			for _, fe := range fences {
				for _, exp := range expiries {
					for _, in := range intents {
						for bits := range 1 << 8 {
							b := func(i int) bool { return bits&(1<<i) != 0 }
							for _, backoff := range errs {
								for _, held := range errs {
									for maxReuse := range 2 {
										v := updateView{Now: decideNow, Margin: expirySkew, Journal: j, ParseErr: pe, Fenced: fe[0], FenceMatches: fe[1],
											Intent: in.in, HasIntent: in.has, Backoff: backoff, Held: held, MaxReuse: maxReuse,
											Admin: b(0), RefreshAdmins: b(1), EndedOnHeld: b(2), IdleDue: b(3), Need: b(4),
											Stopping: b(5)}
										if b(6) {
											v.IntentErr = errors.New("store")
										}
										if pe == nil {
											v.St = decideTokens("rt1", exp)
										}
										if b(7) && pe != nil {
											continue // b(7) only varies nothing else here
										}
										f(v)
									}
								}
							}
						}
					}
				}
			}
		}
	}
}

// spends reports whether a step sends the refresh token to Keycloak.
func spends(s updateStep) bool { return s == stepGrant || s == stepRetrySpend }

// TestDecideUpdateSafety checks decideUpdate's safety rules on every view.
func TestDecideUpdateSafety(t *testing.T) {
	rules := []struct {
		name string
		ok   func(v updateView, s updateStep) bool
	}{
		{"a journaled write-back is finished or dropped before anything else", func(v updateView, s updateStep) bool {
			return v.Journal == nil || s == stepDropJournal || s == stepReplay
		}},
		{"a journal entry is replayed only while the hub holds the token its grant spent", func(v updateView, s updateStep) bool {
			return s != stepReplay || (v.Journal.OpenErr == nil && v.Journal.Spent == v.held())
		}},
		{"a logged-out session's journaled tokens are never written", func(v updateView, s updateStep) bool {
			return s != stepReplay || !(v.Fenced && v.FenceMatches)
		}},
		{"no grant while a journal entry is pending", func(v updateView, s updateStep) bool {
			return !spends(s) || v.Journal == nil
		}},
		{"no grant while a logout of the user is recorded", func(v updateView, s updateStep) bool {
			return !spends(s) || !v.Fenced
		}},
		{"no grant while a logout of these tokens is pending", func(v updateView, s updateStep) bool {
			return !spends(s) || !v.EndedOnHeld
		}},
		{"no grant for a hub admin the hub refreshes", func(v updateView, s updateStep) bool {
			return !spends(s) || !v.Admin || v.RefreshAdmins
		}},
		{"no grant with an expired refresh token", func(v updateView, s updateStep) bool {
			return !spends(s) || !expired(v.St, v.Now, v.Margin)
		}},
		{"no grant while stopping, backing off or held for an operator", func(v updateView, s updateStep) bool {
			return !spends(s) || (!v.Stopping && v.Backoff == nil && v.Held == nil)
		}},
		{"no grant with unusable tokens or an unread intent", func(v updateView, s updateStep) bool {
			return !spends(s) || (v.ParseErr == nil && v.IntentErr == nil)
		}},
		{"a fresh grant only when no intent stands and the caller needs it", func(v updateView, s updateStep) bool {
			return s != stepGrant || (!v.HasIntent && v.Need)
		}},
		{"a token of unknown outcome is spent again only within Max Reuse", func(v updateView, s updateStep) bool {
			return s != stepRetrySpend || (v.HasIntent && v.Intent.Spent == v.held() && v.Intent.Spends <= v.MaxReuse)
		}},
		{"a token of unknown outcome beyond Max Reuse is never spent, only introspected", func(v updateView, s updateStep) bool {
			beyond := v.HasIntent && v.Intent.Spent == v.held() && v.Intent.Spends > v.MaxReuse
			return !beyond || !spends(s)
		}},
		{"a logout clears only the session it names", func(v updateView, s updateStep) bool {
			return s != stepLogout || (v.Fenced && v.FenceMatches && v.ParseErr == nil)
		}},
		{"a hub admin's auth_state is never cleared", func(v updateView, s updateStep) bool {
			return s != stepLogout || !v.Admin || v.RefreshAdmins
		}},
		{"a logout is finished only after auth_state was cleared", func(v updateView, s updateStep) bool {
			return s != stepFinishLogout || (v.Fenced && errors.Is(v.ParseErr, ErrNoTokens))
		}},
	}
	n := 0
	forEachUpdateView(func(v updateView) {
		n++
		s := decideUpdate(v)
		for _, rule := range rules {
			if !rule.ok(v, s) {
				t.Fatalf("%s: broken by step %d for %s", rule.name, s, describeView(v))
			}
		}
	})
	if n < 100_000 {
		t.Fatalf("only %d views checked", n)
	}
}

// TestDecideUpdateSettles: every step that decides again removes what chose
// it, so an update ends within maxSteps whatever it observed.
func TestDecideUpdateSettles(t *testing.T) {
	forEachUpdateView(func(v updateView) {
		for range maxSteps {
			switch decideUpdate(v) {
			case stepDropJournal, stepReplay:
				v.Journal = nil
			case stepDropFence:
				v.Fenced, v.FenceMatches = false, false
			case stepDropIntent:
				v.HasIntent = false
			case stepIdleCheck:
				v.IdleDue = false
			default:
				return
			}
		}
		t.Fatalf("no final step within %d for %s", maxSteps, describeView(v))
	})
}

// TestDecideWriteSafety: tokens are written back only while the hub holds
// the refresh token the grant spent, and never for a session logged out
// during the grant.
func TestDecideWriteSafety(t *testing.T) {
	spent := decideTokens("rt1", time.Time{})
	for _, readErr := range []error{nil, errors.New("hub down")} {
		for _, nowRT := range []string{"rt1", "rt2"} {
			for _, nowErr := range []error{nil, ErrNoTokens} {
				for _, fenced := range []bool{false, true} {
					v := writeView{ReadErr: readErr, NowErr: nowErr, Spent: spent, Fenced: fenced}
					if nowErr == nil {
						v.Now = decideTokens(nowRT, time.Time{})
					}
					got := decideWrite(v)
					safe := readErr == nil && nowErr == nil && nowRT == "rt1" && !fenced
					if (got == writeHub) != safe {
						t.Errorf("decideWrite(read %v, now %s/%v, fenced %t) = %d; writes back: %t, may: %t",
							readErr, nowRT, nowErr, fenced, got, got == writeHub, safe)
					}
					if readErr == nil && nowErr == nil && nowRT == "rt1" && fenced && got != writeFence {
						t.Errorf("a session logged out during the grant: got step %d, want the logout carried out", got)
					}
				}
			}
		}
	}
}

// TestDecideEndingSafety: an unexpected ending is logged out only once
// Keycloak confirms it and never while the guard holds; an expected one
// is logged out whenever it is due.
func TestDecideEndingSafety(t *testing.T) {
	for bits := range 1 << 5 {
		b := func(i int) bool { return bits&(1<<i) != 0 }
		v := endingView{Pending: b(0), Due: b(1), Expected: b(2), Confirmed: b(3), Tripped: b(4)}
		got := decideEnding(v)
		var want endingStep
		switch {
		case !v.Pending || !v.Due:
			want = endingWait
		case v.Expected:
			want = endingLogout
		case !v.Confirmed:
			want = endingConfirm
		case v.Tripped:
			want = endingHold
		default:
			want = endingLogout
		}
		if got != want {
			t.Errorf("decideEnding(%+v) = %d, want %d", v, got, want)
		}
		if got == endingLogout && !v.Expected && (v.Tripped || !v.Confirmed) {
			t.Errorf("decideEnding(%+v) logs out an unconfirmed or guarded unexpected ending", v)
		}
	}
}

func describeView(v updateView) string {
	j := "none"
	if v.Journal != nil {
		j = fmt.Sprintf("{spent %x opens %t}", v.Journal.Spent[:2], v.Journal.OpenErr == nil)
	}
	return fmt.Sprintf("journal %s parse %v fenced %t/%t admin %t/%t refresh-exp %s ended-on-held %t intent %t %+v (err %v) "+
		"backoff %v idle %t need %t stopping %t held %v max-reuse %d", j, v.ParseErr, v.Fenced, v.FenceMatches, v.Admin,
		v.RefreshAdmins, v.St.RefreshExpiry.Format(time.Kitchen), v.EndedOnHeld, v.HasIntent, v.Intent, v.IntentErr,
		v.Backoff, v.IdleDue, v.Need, v.Stopping, v.Held, v.MaxReuse)
}
