package refresh

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Keycloak stamps every token with its own clock, which may differ from
// tokenkeeper's (and the hub's) by tens of seconds. The refresher judges
// every token time (due, expiry, idle end) against now(): its own clock
// moved onto Keycloak's by the offset the grants it makes show.

// minSkew is the least clock offset applied: a token's iat is in whole
// seconds, so smaller differences are noise.
const minSkew = 2 * time.Second

// unknownSkew widens the expiry margin until the first grant since the
// start has shown Keycloak's clock: that much offset either way is allowed.
const unknownSkew = 30 * time.Second

// kcClock estimates how far Keycloak's clock is ahead of tokenkeeper's.
// A token's iat is Keycloak's time when it made the token, in whole
// seconds, after the grant was sent and before the answer's arrival here,
// so each grant bounds the offset: above iat minus the arrival, below iat
// plus a second minus the sending. The largest of the recent lower bounds
// is the closest estimate from below; the smallest of the upper bounds says
// how far off it may be, which a slow answer makes more than minSkew.
type kcClock struct {
	offset atomic.Int64 // Keycloak's clock minus ours, in nanoseconds
	// ahead is how far Keycloak's clock may be ahead of now(), in
	// nanoseconds: the upper bound the grants show, minus the offset.
	ahead  atomic.Int64
	known  atomic.Bool
	mu     sync.Mutex
	recent []clockSample // the latest bounds seen, at most clockSamples
	// low is the largest iat minus reading time of the tokens read from
	// the hub: Keycloak's clock is at least that far ahead of ours (it
	// made them before they were read). lowSeen says whether there is one.
	low     time.Duration
	lowSeen bool
}

// read notes a token Keycloak issued at iat (its clock), read from the hub
// at at (ours): before a grant shows the clock, it bounds how far behind
// ours Keycloak's can be.
func (c *kcClock) read(iat, at time.Time) {
	if iat.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := iat.Sub(at); !c.lowSeen || d > c.low {
		c.low, c.lowSeen = d, true
	}
}

// clockSamples is how many grants the estimate looks at.
const clockSamples = 16

// clockSample is what one grant shows of Keycloak's clock minus ours: more
// than lo, less than hi.
type clockSample struct{ lo, hi time.Duration }

// issued notes a token Keycloak issued at iat (its clock, whole seconds) in
// answer to a grant sent at sent that arrived here at arrived (both ours).
// The estimate moves at the next apply.
func (c *kcClock) issued(iat, sent, arrived time.Time) {
	if iat.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recent = append(c.recent, clockSample{lo: iat.Sub(arrived), hi: iat.Add(time.Second).Sub(sent)})
	if len(c.recent) > clockSamples {
		c.recent = c.recent[1:]
	}
}

// apply moves the estimate to what the recent tokens show. The refresher
// applies it once per sweep, so that the clock it judges by moves at one
// known moment, not in the middle of other decisions.
func (c *kcClock) apply() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recent) == 0 {
		return
	}
	off := slices.MaxFunc(c.recent, func(a, b clockSample) int { return cmp.Compare(a.lo, b.lo) }).lo
	hi := slices.MinFunc(c.recent, func(a, b clockSample) int { return cmp.Compare(a.hi, b.hi) }).hi
	if off.Abs() < minSkew {
		off = 0
	}
	c.offset.Store(int64(off))
	c.ahead.Store(int64(hi - off))
	c.known.Store(true)
}

// now is t on Keycloak's clock, as far as it is known.
func (c *kcClock) now(t time.Time) time.Time { return t.Add(time.Duration(c.offset.Load())) }

// margin is how far past a token time the refresher waits before it calls
// it passed: expirySkew once Keycloak's clock is known; before, as much
// more as Keycloak's clock may be behind ours (the tokens read from the hub
// bound it), at most unknownSkew.
func (c *kcClock) margin() time.Duration {
	if c.known.Load() {
		return expirySkew
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lowSeen {
		return expirySkew + unknownSkew
	}
	return expirySkew + min(max(-c.low, 0), unknownSkew)
}

// unknown is unknownSkew until a grant has shown Keycloak's clock, then 0:
// how much sooner a refresh is due, since Keycloak may be that far ahead.
func (c *kcClock) unknown() time.Duration {
	if c.known.Load() {
		return 0
	}
	return unknownSkew
}

// early is how much sooner than its exp a token is taken to expire when it
// is served: unknownSkew until a grant has shown Keycloak's clock, so that
// a token Keycloak may already call expired is not handed out, and after
// that what the estimate may be off by: how far ahead of it the grants
// allow Keycloak's clock to be (an answer's travel time, and the second an
// iat drops), and at least minSkew (offsets under it are not applied).
func (c *kcClock) early() time.Duration {
	if c.known.Load() {
		return max(minSkew, time.Duration(c.ahead.Load()))
	}
	return unknownSkew
}

// servingNow is now for deciding whether a token may still be served.
func (r *Refresher) servingNow() time.Time { return r.now().Add(r.kc.early()) }

// now is the refresher's clock on Keycloak's time (Options.Now moved by the
// offset the grants showed); every token time is judged against it.
func (r *Refresher) now() time.Time { return r.kc.now(r.opts.Now()) }
