package refresh

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// scheduleCases is how many random tokens the property tests try.
const scheduleCases = 10_000

// randomToken returns a token issued at a whole second (as JWT claims are)
// with a lifetime from 1 s to 24 h, and a refresh window in (0, 48 h].
func randomToken(r *rand.Rand) (user string, c Claims, window time.Duration) {
	iat := time.Unix(1_600_000_000+r.Int64N(400_000_000), 0)
	life := time.Duration(1+r.Int64N(86_400)) * time.Second
	switch r.IntN(3) {
	case 0: // anything up to twice the longest lifetime
		window = time.Duration(1 + r.Int64N(int64(48*time.Hour)))
	case 1: // a typical setting
		window = time.Duration(1+r.Int64N(300)) * time.Second
	default: // tiny
		window = time.Duration(1 + r.Int64N(int64(time.Millisecond)))
	}
	return fmt.Sprintf("user-%d", r.IntN(1000)), Claims{IssuedAt: iat, Expiry: iat.Add(life)}, window
}

func TestDueProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range scheduleCases {
		user, c, window := randomToken(r)
		life := c.Expiry.Sub(c.IssuedAt)
		sched := Schedule{Window: window, Margin: time.Duration(r.Int64N(int64(time.Minute)))}
		var rexp time.Time
		if r.IntN(2) == 0 {
			rexp = c.IssuedAt.Add(time.Duration(1+r.Int64N(int64(2*life/time.Second))) * time.Second)
		}
		due := sched.Due(user, c, rexp)
		if !due.Before(c.Expiry) {
			t.Fatalf("Due(%q, iat=%v life=%v, window=%v) = %v, want strictly before expiry %v",
				user, c.IssuedAt, life, window, due, c.Expiry)
		}
		if due.Before(c.IssuedAt) {
			t.Fatalf("Due(%q, iat=%v life=%v) = %v, want not before issue", user, c.IssuedAt, life, due)
		}
		if !rexp.IsZero() && !due.Before(rexp) && rexp.Sub(c.IssuedAt) > sched.Margin {
			t.Fatalf("Due(%q, life=%v, refresh exp=+%v, margin=%v) = +%v, want before the refresh token expires",
				user, life, rexp.Sub(c.IssuedAt), sched.Margin, due.Sub(c.IssuedAt))
		}
		if rexp.IsZero() {
			if frac := float64(due.Sub(c.IssuedAt)) / float64(life); frac < 2.0/3-1/float64(life) || frac > 0.8 {
				t.Fatalf("Due(%q, life=%v, window=%v) at %.9f of the lifetime, want within [⅔, 80 %%]: the window never undoes the jitter",
					user, life, window, frac)
			}
		}
		if again := sched.Due(user, c, rexp); !again.Equal(due) {
			t.Fatalf("Due(%q) = %v then %v, want the same time", user, due, again)
		}
	}
}

// TestDueRealmShapes checks the schedule against realm settings admins use:
// access tokens shorter and longer than SSO idle, from 30 s to 1 h.
func TestDueRealmShapes(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	sched := Schedule{Window: time.Minute, Margin: 45 * time.Second}
	tests := []struct {
		name          string
		access, idle  time.Duration
		earliest, max time.Duration // bounds of Due after issue
	}{
		{name: "30 s tokens, 60 s window", access: 30 * time.Second, idle: 30 * time.Minute, earliest: 20 * time.Second, max: 24 * time.Second},
		{name: "5 min tokens", access: 5 * time.Minute, idle: 30 * time.Minute, earliest: 200 * time.Second, max: 240 * time.Second},
		{name: "300 s tokens, 120 s idle", access: 5 * time.Minute, idle: 2 * time.Minute, earliest: 75 * time.Second, max: 75 * time.Second},
		{name: "1 h tokens, 10 min idle", access: time.Hour, idle: 10 * time.Minute, earliest: 400 * time.Second, max: 480 * time.Second},
		{name: "1 h tokens, 8 h idle", access: time.Hour, idle: 8 * time.Hour, earliest: 40 * time.Minute, max: 48 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Claims{IssuedAt: iat, Expiry: iat.Add(tt.access)}
			for i := range 100 {
				due := sched.Due(fmt.Sprintf("u%d", i), c, iat.Add(tt.idle)).Sub(iat)
				if due < tt.earliest || due > tt.max {
					t.Fatalf("Due = issue+%v, want within [%v, %v]", due, tt.earliest, tt.max)
				}
			}
		})
	}
}

func TestDueWindowPullsEarlier(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	c := Claims{IssuedAt: iat, Expiry: iat.Add(time.Hour)}
	// A fifth of the life is 12 min: a 15 min window is capped there, which
	// is the 80 % mark, so the jitter below it stays.
	for _, user := range []string{"alice", "bob", "carol"} {
		plain := Schedule{}.Due(user, c, time.Time{})
		if got := (Schedule{Window: 15 * time.Minute}).Due(user, c, time.Time{}); !got.Equal(plain) {
			t.Errorf("Due(%q) with a window beyond a fifth of the life = %v, want the jittered %v", user, got, plain)
		}
	}
}

func TestDueUnknownIssueTime(t *testing.T) {
	exp := time.Unix(1_763_800_300, 0)
	for _, iat := range []time.Time{{}, exp, exp.Add(time.Hour)} {
		for _, window := range []time.Duration{time.Second, time.Minute, time.Hour} {
			got := Schedule{Window: window}.Due("alice", Claims{IssuedAt: iat, Expiry: exp}, time.Time{})
			// The lifetime is taken to be 2 × window, whose fifth caps the window.
			if lo, hi := exp.Add(-2*window*1/3), exp.Add(-2*window/5); got.Before(lo) || got.After(hi) {
				t.Errorf("Due(iat=%v exp=%v, %v) = %v, want within [%v, %v]", iat, exp, window, got, lo, hi)
			}
		}
	}
}

// TestDueJitterSpreadsUsers checks that users holding tokens issued at the
// same moment are not refreshed at the same moment.
func TestDueJitterSpreadsUsers(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	c := Claims{IssuedAt: iat, Expiry: iat.Add(time.Hour)}
	const users = 1000
	seen := make(map[time.Time]string, users)
	earliest, latest := c.Expiry, c.IssuedAt
	for i := range users {
		user := fmt.Sprintf("user%03d", i)
		due := Schedule{Window: time.Minute}.Due(user, c, time.Time{})
		if other, ok := seen[due]; ok {
			t.Errorf("Due(%q) = Due(%q) = %v, want different times", user, other, due)
		}
		seen[due] = user
		earliest, latest = minTime(earliest, due), maxTime(latest, due)
	}
	// The jitter spans ⅔..80 % of an hour, 8 minutes; 1000 users cover most of it.
	if spread := latest.Sub(earliest); spread < 7*time.Minute {
		t.Errorf("Due over %d users spans %v, want at least 7m of the 8m jitter range", users, spread)
	}
	if a, b := (Schedule{}).Due("alice", c, time.Time{}), (Schedule{}).Due("bob", c, time.Time{}); a.Equal(b) {
		t.Errorf("Due(alice) = Due(bob) = %v, want different times", a)
	}
}

func TestDueJitterChangesWithToken(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	distinct := map[float64]bool{}
	for i := range 100 {
		c := Claims{IssuedAt: iat.Add(time.Duration(i) * time.Minute), Expiry: iat.Add(time.Duration(i)*time.Minute + time.Hour)}
		distinct[Schedule{Window: time.Minute}.Due("alice", c, time.Time{}).Sub(c.IssuedAt).Seconds()] = true
	}
	if len(distinct) < 90 {
		t.Errorf("Due(alice) over 100 successive tokens took %d distinct offsets, want at least 90", len(distinct))
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// constSource is a rand.Source that always returns v.
type constSource uint64

func (s constSource) Uint64() uint64 { return uint64(s) }

func TestRetryGrowth(t *testing.T) {
	now := time.Unix(1_763_800_000, 0)
	far := now.Add(24 * time.Hour)
	want := []time.Duration{
		2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
		64 * time.Second, 128 * time.Second, 256 * time.Second, 5 * time.Minute, 5 * time.Minute,
	}
	noJitter := rand.New(constSource(0))
	for i, w := range want {
		n := i + 1
		if got := Retry(now, n, far, noJitter).Sub(now); got != w {
			t.Errorf("Retry(now, %d, +24h, no jitter) = now+%v, want now+%v", n, got, w)
		}
	}
	for _, n := range []int{17, 18, 64, 1000, math.MaxInt} {
		if got := Retry(now, n, far, noJitter).Sub(now); got != 5*time.Minute {
			t.Errorf("Retry(now, %d, +24h, no jitter) = now+%v, want now+5m", n, got)
		}
	}
	fullJitter := rand.New(constSource(math.MaxUint64))
	for i, w := range want {
		n := i + 1
		got := Retry(now, n, far, fullJitter).Sub(now)
		if lo := w * 3 / 4; got < lo || got > lo+time.Nanosecond {
			t.Errorf("Retry(now, %d, +24h, most jitter) = now+%v, want now+%v (75 %% of %v)", n, got, lo, w)
		}
	}
}

// TestRetryProperties: with random jitter the wait is 75–100 % of the
// exponential step, never over 5 min, always after now, and never past
// expiry − 2 s while the token is still valid.
func TestRetryProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	jitter := rand.New(rand.NewPCG(7, 8))
	for range scheduleCases {
		now := time.Unix(1_763_800_000, r.Int64N(int64(time.Second)))
		n := 1 + r.IntN(40)
		expiry := now.Add(time.Duration(r.Int64N(int64(20*time.Minute))) - 5*time.Minute)
		next := Retry(now, n, expiry, jitter)
		wait := next.Sub(now)
		step := min(2*time.Second<<min(n-1, 20), 5*time.Minute)
		lastChance := expiry.Add(-2 * time.Second)
		if wait > 5*time.Minute || wait > step {
			t.Fatalf("Retry(now, %d, now+%v) waits %v, want at most %v", n, expiry.Sub(now), wait, step)
		}
		if !next.After(now) {
			t.Fatalf("Retry(now, %d, now+%v) = now+%v, want after now", n, expiry.Sub(now), wait)
		}
		if now.Before(lastChance) {
			if next.After(lastChance) {
				t.Fatalf("Retry(now, %d, now+%v) = now+%v, want no later than expiry−2s (now+%v)",
					n, expiry.Sub(now), wait, lastChance.Sub(now))
			}
			if wait < step*3/4 && !next.Equal(lastChance) {
				t.Fatalf("Retry(now, %d, now+%v) waits %v, want at least %v or exactly expiry−2s",
					n, expiry.Sub(now), wait, step*3/4)
			}
		} else if wait < step*3/4 {
			// The token is (nearly) expired: plain backoff applies.
			t.Fatalf("Retry(now, %d, expired now+%v) waits %v, want at least %v", n, expiry.Sub(now), wait, step*3/4)
		}
	}
}

func TestRetryNearExpiry(t *testing.T) {
	now := time.Unix(1_763_800_000, 0)
	noJitter := rand.New(constSource(0))
	tests := []struct {
		name   string
		n      int
		expiry time.Time
		want   time.Time
	}{
		{name: "cut to expiry−2s", n: 5, expiry: now.Add(10 * time.Second), want: now.Add(8 * time.Second)},
		{name: "fits before expiry−2s", n: 2, expiry: now.Add(10 * time.Second), want: now.Add(4 * time.Second)},
		{name: "exactly at expiry−2s", n: 3, expiry: now.Add(10 * time.Second), want: now.Add(8 * time.Second)},
		{name: "capped step cut", n: 20, expiry: now.Add(time.Minute), want: now.Add(58 * time.Second)},
		{name: "inside the last 2s", n: 3, expiry: now.Add(time.Second), want: now.Add(8 * time.Second)},
		{name: "at expiry−2s", n: 1, expiry: now.Add(2 * time.Second), want: now.Add(2 * time.Second)},
		{name: "already expired", n: 4, expiry: now.Add(-time.Minute), want: now.Add(16 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Retry(now, tt.n, tt.expiry, noJitter)
			if !got.Equal(tt.want) {
				t.Errorf("Retry(now, %d, now+%v) = now+%v, want now+%v",
					tt.n, tt.expiry.Sub(now), got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}
