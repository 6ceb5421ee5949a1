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
		due := Due(user, c, window)
		if !due.Before(c.Expiry) {
			t.Fatalf("Due(%q, iat=%v life=%v, window=%v) = %v, want strictly before expiry %v",
				user, c.IssuedAt, life, window, due, c.Expiry)
		}
		if half := c.IssuedAt.Add(life / 2); due.Before(half) {
			t.Fatalf("Due(%q, iat=%v life=%v, window=%v) = %v, want not before half the lifetime %v",
				user, c.IssuedAt, life, window, due, half)
		}
		if again := Due(user, c, window); !again.Equal(due) {
			t.Fatalf("Due(%q, iat=%v life=%v, window=%v) = %v then %v, want the same time",
				user, c.IssuedAt, life, window, due, again)
		}
	}
}

// TestDueSmallWindow: when window leaves room (at most a fifth of the
// lifetime), Due is the jittered point between ⅔ and 80 % of the lifetime.
func TestDueSmallWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range scheduleCases {
		user, c, _ := randomToken(r)
		life := c.Expiry.Sub(c.IssuedAt)
		window := time.Duration(1 + r.Int64N(int64(life/5)))
		due := Due(user, c, window)
		frac := float64(due.Sub(c.IssuedAt)) / float64(life)
		// One nanosecond of slack for float rounding of life × ⅔.
		lo := 2.0/3 - 1/float64(life)
		if frac < lo || frac > 0.8 {
			t.Fatalf("Due(%q, life=%v, window=%v) is at %.9f of the lifetime, want within [⅔, 80 %%]",
				user, life, window, frac)
		}
	}
}

func TestDueWindowPullsEarlier(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	c := Claims{IssuedAt: iat, Expiry: iat.Add(10 * time.Minute)}
	tests := []struct {
		name   string
		window time.Duration
		want   time.Time
	}{
		// ⅓ of the life is 200 s: a 250 s window moves Due before the ⅔ mark.
		{name: "window beyond the jitter range", window: 250 * time.Second, want: c.Expiry.Add(-250 * time.Second)},
		{name: "window of half the lifetime", window: 5 * time.Minute, want: iat.Add(5 * time.Minute)},
		{name: "window longer than the lifetime", window: time.Hour, want: iat.Add(5 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, user := range []string{"alice", "bob", "carol"} {
				if got := Due(user, c, tt.window); !got.Equal(tt.want) {
					t.Errorf("Due(%q, 10m token, %v) = %v, want %v", user, tt.window, got, tt.want)
				}
			}
		})
	}
}

func TestDueUnknownIssueTime(t *testing.T) {
	exp := time.Unix(1_763_800_300, 0)
	tests := []struct {
		name string
		iat  time.Time
	}{
		{name: "no iat", iat: time.Time{}},
		{name: "iat equal to exp", iat: exp},
		{name: "iat after exp", iat: exp.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, window := range []time.Duration{time.Second, time.Minute, time.Hour} {
				got := Due("alice", Claims{IssuedAt: tt.iat, Expiry: exp}, window)
				// The lifetime is taken to be 2 × window: Due is window before expiry.
				if want := exp.Add(-window); !got.Equal(want) {
					t.Errorf("Due(alice, iat=%v exp=%v, %v) = %v, want %v", tt.iat, exp, window, got, want)
				}
			}
		})
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
		due := Due(user, c, time.Minute)
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
	if a, b := Due("alice", c, time.Minute), Due("bob", c, time.Minute); a.Equal(b) {
		t.Errorf("Due(alice) = Due(bob) = %v, want different times", a)
	}
}

func TestDueJitterChangesWithToken(t *testing.T) {
	iat := time.Unix(1_763_800_000, 0)
	distinct := map[float64]bool{}
	for i := range 100 {
		c := Claims{IssuedAt: iat.Add(time.Duration(i) * time.Minute), Expiry: iat.Add(time.Duration(i)*time.Minute + time.Hour)}
		distinct[Due("alice", c, time.Minute).Sub(c.IssuedAt).Seconds()] = true
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
