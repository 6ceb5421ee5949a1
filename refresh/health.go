package refresh

import (
	"slices"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// ProblemClass names a kind of problem health reports. Health shows the class
// and a fixed text, never internal error text; the logs have the details.
type ProblemClass string

// Problem classes.
const (
	// ProblemKeycloakClient: Keycloak refuses tokenkeeper's client (wrong
	// secret, disabled client or realm, wrong issuer); refreshing is stopped.
	ProblemKeycloakClient ProblemClass = "keycloak_client"
	// ProblemHubUnreachable: the hub's user list cannot be read.
	ProblemHubUnreachable ProblemClass = "hub_unreachable"
	// ProblemLogoutsPaused: the mass-failure guard paused logouts.
	ProblemLogoutsPaused ProblemClass = "logouts_paused"
	// ProblemStuckUsers: the hub refuses to store some users' new tokens,
	// which are kept in the journal.
	ProblemStuckUsers ProblemClass = "stuck_users"
	// ProblemHubBudget: hub_max_rps cannot refresh every due user before
	// their access token expires.
	ProblemHubBudget ProblemClass = "hub_budget"
	// ProblemSweepPanicked: a sweep panicked (a bug; the log has its
	// stack) within the last sweepPanicShown.
	ProblemSweepPanicked ProblemClass = "sweep_panicked"
	// ProblemNoSessionID: some users' tokens carry no sid (a client
	// without Keycloak's basic scope, lightweight access tokens), so a
	// back-channel logout of one of their sessions logs out all of them.
	ProblemNoSessionID ProblemClass = "tokens_without_sid"
	// ProblemKeycloakUnreachable: every grant has failed without an
	// answer from Keycloak (refused, unresolvable, timed out, a proxy's
	// page) for unreachableFor.
	ProblemKeycloakUnreachable ProblemClass = "keycloak_unreachable"
	// ProblemKeycloakSlow: grants fail without an answer from Keycloak,
	// for less than unreachableFor so far.
	ProblemKeycloakSlow ProblemClass = "keycloak_unanswered"
	// ProblemExcessScopes: tokenkeeper's hub token holds powerful scopes
	// its settings do not need (Detail names them).
	ProblemExcessScopes ProblemClass = "excess_scopes"
)

// sweepPanicShown is how long health shows a sweep's panic: long enough
// for an admin or a probe to see one that a later sweep did not repeat.
const sweepPanicShown = 10 * time.Minute

// Problem is one reason tokenkeeper cannot fully do its job.
type Problem struct {
	Class ProblemClass
	// Users counts the users affected, where that applies.
	Users int
	// Detail names what the problem is about where that is no secret: the
	// excess scopes.
	Detail string
}

// Health is tokenkeeper's state as a whole.
type Health struct {
	Problems []Problem
}

// Health states.
const (
	HealthOK        = "ok"
	HealthDegraded  = "degraded"  // some users are stuck; everyone else is served
	HealthUnhealthy = "unhealthy" // refreshing or logging out is stopped
)

// degrading are the problems that leave every user served.
var degrading = []ProblemClass{ProblemStuckUsers, ProblemHubBudget, ProblemNoSessionID, ProblemExcessScopes, ProblemKeycloakSlow}

// State is HealthOK with no problems, HealthDegraded when the only problems
// are degrading ones (stuck users, a short hub budget, tokens without sid,
// excess scopes), and HealthUnhealthy otherwise.
func (h Health) State() string {
	state := HealthOK
	for _, p := range h.Problems {
		if !slices.Contains(degrading, p.Class) {
			return HealthUnhealthy
		}
		state = HealthDegraded
	}
	return state
}

// Health reports what stops tokenkeeper from doing its job, if anything.
func (r *Refresher) Health() Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	var h Health
	for _, p := range []struct {
		err   error
		class ProblemClass
	}{{r.operator, ProblemKeycloakClient}, {r.hubErr, ProblemHubUnreachable}} {
		if p.err != nil {
			h.Problems = append(h.Problems, Problem{Class: p.class})
		}
	}
	if r.guard.tripped {
		h.Problems = append(h.Problems, Problem{Class: ProblemLogoutsPaused, Users: r.held})
	}
	stuck := 0
	for _, u := range r.users {
		if u.Status == store.StatusStuck {
			stuck++
		}
	}
	if stuck > 0 {
		h.Problems = append(h.Problems, Problem{Class: ProblemStuckUsers, Users: stuck})
	}
	if p, ok := r.keycloakProblem(); ok {
		h.Problems = append(h.Problems, p)
	}
	if len(r.opts.ExcessScopes) > 0 {
		h.Problems = append(h.Problems, Problem{Class: ProblemExcessScopes, Detail: strings.Join(r.opts.ExcessScopes, ", ")})
	}
	if len(r.noSID) > 0 {
		h.Problems = append(h.Problems, Problem{Class: ProblemNoSessionID, Users: len(r.noSID)})
	}
	if r.short > 0 {
		h.Problems = append(h.Problems, Problem{Class: ProblemHubBudget, Users: r.short})
	}
	if !r.panicked.IsZero() && r.now().Sub(r.panicked) < sweepPanicShown {
		h.Problems = append(h.Problems, Problem{Class: ProblemSweepPanicked})
	}
	return h
}
