package refresh

import (
	"errors"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// unreachableFor is how long Keycloak may fail every grant for transport
// reasons before health turns unhealthy; before that it is degraded. A
// Keycloak restart takes about a minute.
const unreachableFor = 2 * time.Minute

// transportFailure reports whether a grant failed without any answer from
// Keycloak: refused, unresolvable, reset, timed out, or a proxy's page in
// its place. Keycloak's own error answers and configuration problems are
// not.
func transportFailure(err error) bool {
	switch {
	case err == nil, errors.As(err, new(*keycloak.DiscoveryError)):
		return false
	case errors.As(err, new(*oauth2.RetrieveError)):
		return keycloak.Classify(err) == keycloak.Unknown // a proxy's page in Keycloak's place
	}
	return true
}

// noteKeycloak records the outcome of a grant: the first of a run of
// transport failures starts the unreachable time; any answer ends it.
func (r *Refresher) noteKeycloak(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !transportFailure(err):
		r.unreachable = time.Time{}
	case r.unreachable.IsZero():
		r.unreachable = r.now()
	}
}

// keycloakProblem is health's word on reaching Keycloak: degraded while
// grants fail for transport reasons, unhealthy past unreachableFor. The
// caller holds r.mu.
func (r *Refresher) keycloakProblem() (Problem, bool) {
	if r.unreachable.IsZero() {
		return Problem{}, false
	}
	class := ProblemKeycloakSlow
	if r.now().Sub(r.unreachable) >= unreachableFor {
		class = ProblemKeycloakUnreachable
	}
	return Problem{Class: class}, true
}
