package refresh

import (
	"hash/fnv"
	"math/rand/v2"
	"time"
)

// Schedule fractions of an access token's lifetime: a token is refreshed
// between ⅔ and 80 % of its life, at a point fixed per user and token so that
// users who logged in together do not refresh in lockstep.
const (
	dueFractionMin = 2.0 / 3
	dueFractionMax = 0.8
)

// Due returns when the access token described by c should be refreshed. It is
// always strictly before c.Expiry: at ⅔–80 % of the lifetime (jittered by
// user and token), earlier if less than window would then be left, but never
// before half the lifetime, so a window longer than the token's life does not
// refresh it continuously.
func Due(user string, c Claims, window time.Duration) time.Time {
	issued := c.IssuedAt
	if issued.IsZero() || !issued.Before(c.Expiry) {
		issued = c.Expiry.Add(-2 * window)
	}
	life := c.Expiry.Sub(issued)
	frac := dueFractionMin + jitter(user, issued)*(dueFractionMax-dueFractionMin)
	due := issued.Add(time.Duration(float64(life) * frac))
	if byWindow := c.Expiry.Add(-window); byWindow.Before(due) {
		due = byWindow
	}
	if half := issued.Add(life / 2); due.Before(half) {
		due = half
	}
	return due
}

// jitter returns a number in [0, 1) fixed by user and issue time.
func jitter(user string, issued time.Time) float64 {
	h := fnv.New64a()
	h.Write([]byte(user))
	h.Write([]byte(issued.UTC().Format(time.RFC3339Nano)))
	return float64(h.Sum64()>>11) / (1 << 53)
}

// Backoff bounds for transient failures.
const (
	backoffBase = 2 * time.Second
	backoffCap  = 5 * time.Minute
)

// Retry returns when to try again after the n-th consecutive transient
// failure (n ≥ 1): exponential from 2 s, capped at 5 min, with jitter that
// only shortens the wait, and never later than shortly before expiry while
// the access token is still valid.
func Retry(now time.Time, n int, expiry time.Time, r *rand.Rand) time.Time {
	d := backoffBase << min(max(n-1, 0), 16)
	d = min(d, backoffCap)
	d -= time.Duration(r.Float64() * 0.25 * float64(d))
	next := now.Add(d)
	if lastChance := expiry.Add(-backoffBase); now.Before(lastChance) && next.After(lastChance) {
		next = lastChance
	}
	return next
}
