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

// Schedule decides when a user's tokens are refreshed.
type Schedule struct {
	// Window is the least time left on the access token at which it is
	// refreshed. It is capped at a fifth of the token's lifetime, so that a
	// window longer than the token does not put everyone in lockstep.
	Window time.Duration
	// Margin is how long before the refresh token expires (the SSO idle or
	// maximum bound) the user is due at the latest: a sweep interval and the
	// time a grant takes.
	Margin time.Duration
}

// Due returns when the tokens described by c (the access token) and
// refreshExpiry (the refresh token's expiry, zero when unknown) should be
// refreshed: at a point between ⅔ and 80 % of the access token's lifetime,
// fixed per user and token so that users who logged in together do not
// refresh in lockstep, earlier when less than the window would then be
// left, and at the same fraction of the refresh token's lifetime, and at
// least Margin before it expires, when that comes first. It is always
// strictly before c.Expiry.
func (s Schedule) Due(user string, c Claims, refreshExpiry time.Time) time.Time {
	issued := c.IssuedAt
	if issued.IsZero() || !issued.Before(c.Expiry) {
		issued = c.Expiry.Add(-2 * s.Window)
	}
	frac := dueFractionMin + jitter(user, issued)*(dueFractionMax-dueFractionMin)
	due := dueWithin(issued, c.Expiry, frac, s.Window)
	if refreshExpiry.After(issued) {
		byRefresh := dueWithin(issued, refreshExpiry, frac, s.Window)
		if latest := refreshExpiry.Add(-s.Margin); latest.Before(byRefresh) {
			byRefresh = latest
		}
		if byRefresh.Before(issued) {
			byRefresh = issued
		}
		if byRefresh.Before(due) {
			due = byRefresh
		}
	}
	return due
}

// dueWithin returns the point at frac of the lifetime from issued to exp,
// or window before exp when that is earlier, the window being capped at a
// fifth of the lifetime.
func dueWithin(issued, exp time.Time, frac float64, window time.Duration) time.Time {
	life := exp.Sub(issued)
	due := issued.Add(time.Duration(float64(life) * frac))
	if byWindow := exp.Add(-min(window, life/5)); byWindow.Before(due) {
		due = byWindow
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
