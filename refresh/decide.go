package refresh

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// The refresher's decisions are pure functions of what was observed:
// decideUpdate for one update of a user, decideWrite for the write-back of a
// grant's tokens, decideEnding for the logout of a session a grant found
// ended. The executors (update, writeBack, logoutEnded) only perform the
// step chosen and observe again. The safety rules are properties of these
// functions (decide_test.go checks them over every small input):
//   - a journaled write-back is finished or dropped before anything else,
//     and dropped when the session it refreshes was logged out;
//   - no grant while a logout of the session is recorded (a fence) or pending;
//   - a refresh token whose grants' outcomes are unknown is spent again only
//     within the realm's Max Reuse;
//   - no grant while stopping, backing off or held for an operator problem,
//     and none for a hub admin the hub refreshes;
//   - tokens are written back only while the hub still holds the refresh
//     token the grant spent, and never for a session logged out meanwhile;
//   - a logout clears only the session the decision was made on;
//   - an unexpected ending is logged out only once Keycloak confirms it, and
//     never while the mass-failure guard holds.

// journalView is a journaled write-back, as observed.
type journalView struct {
	// OpenErr is why no state key opens the entry.
	OpenErr error
	// Spent is the digest of the refresh token its grant spent.
	Spent store.Digest
	// State is the auth_state it holds, when it opens.
	State json.RawMessage
}

// updateView is what one update of a user observed: the hub's answer, the
// journal, the store's intent, the user's fences and schedule, the clock
// and the settings.
type updateView struct {
	Now time.Time
	// Admin is the hub's admin flag; St the parse of the auth_state the
	// hub holds and ParseErr why it holds no usable tokens.
	Admin    bool
	St       AuthState
	ParseErr error
	// Journal is the user's journaled write-back, if any.
	Journal *journalView
	// Fenced: a logout of one of the user's sessions is recorded;
	// FenceMatches: one names the session St belongs to.
	Fenced, FenceMatches bool
	// EndedOnHeld: a grant with the very refresh token the hub holds found
	// the session ended, and its logout is pending.
	EndedOnHeld bool
	// Intent is the user's intent to spend a refresh token, if HasIntent;
	// IntentErr is why it could not be read.
	Intent    store.Intent
	HasIntent bool
	IntentErr error
	// Backoff says why the user waits for their retry time, if they do.
	Backoff error
	// IdleDue: an idle user's scheduled look has come and introspection
	// can check their session.
	IdleDue bool
	// Need: the caller needs fresher tokens than St's.
	Need bool
	// Stopping: the refresher is stopping.
	Stopping bool
	// Held says why an operator problem holds grants back, if it does.
	Held error
	// Margin is how far past a token time Now must be to call it passed
	// (the clock skew allowed).
	Margin time.Duration
	// RefreshAdmins and MaxReuse are the settings.
	RefreshAdmins bool
	MaxReuse      int
}

// held is the digest of the refresh token the hub holds.
func (v updateView) held() store.Digest { return digest(v.St.Refresh.Reveal()) }

// updateStep is what an update does next.
type updateStep int

const (
	// stepDropJournal: drop a journal entry that no key opens or whose
	// grant spent a token the hub no longer holds; decide again.
	stepDropJournal updateStep = iota
	// stepReplay: write the journaled tokens to the hub; decide again on them.
	stepReplay
	// stepFinishLogout: a logout cleared auth_state and stopped; finish it.
	stepFinishLogout
	// stepUnusable: auth_state holds no usable tokens.
	stepUnusable
	// stepDropFence: the user holds a newer session than the logouts
	// recorded; drop them and decide again.
	stepDropFence
	// stepAdminFenced: a hub admin's session was logged out; the hub ends
	// it itself, and nothing of it is served.
	stepAdminFenced
	// stepLogout: carry out the recorded logout of the session the hub holds.
	stepLogout
	// stepHubAdmin: a hub admin, whose tokens the hub refreshes.
	stepHubAdmin
	// stepExpired: the refresh token has expired: an expected ending.
	stepExpired
	// stepEndedPending: the logout of these tokens' session is pending.
	stepEndedPending
	// stepIntentUnread: the intent could not be read; serve the current token.
	stepIntentUnread
	// stepDropIntent: the intent is for a token the hub no longer holds;
	// drop it and decide again.
	stepDropIntent
	// stepWaitIntent: an unknown outcome waits for the retry time.
	stepWaitIntent
	// stepRetrySpend: an unknown outcome within Max Reuse: spend again.
	stepRetrySpend
	// stepProbe: an unknown outcome beyond Max Reuse: ask introspection.
	stepProbe
	// stepIdleCheck: not due; an idle user's session is checked by
	// introspection; decide again once it is found alive.
	stepIdleCheck
	// stepSettle: not due: reschedule and serve the current token.
	stepSettle
	// stepStopping: due, but the refresher is stopping.
	stepStopping
	// stepBackingOff: due, but waiting for the retry time.
	stepBackingOff
	// stepHeld: due, but an operator problem holds grants back.
	stepHeld
	// stepGrant: spend the refresh token.
	stepGrant
)

// decideUpdate chooses an update's next step from what it observed.
func decideUpdate(v updateView) updateStep {
	if j := v.Journal; j != nil {
		// The journaled tokens refresh the session the hub holds; if a
		// logout of that session is recorded, they are never written.
		if j.OpenErr != nil || j.Spent != v.held() || (v.Fenced && v.FenceMatches) {
			return stepDropJournal
		}
		return stepReplay
	}
	if v.ParseErr != nil {
		if v.Fenced && errors.Is(v.ParseErr, ErrNoTokens) {
			return stepFinishLogout
		}
		return stepUnusable
	}
	if step, ok := decideFence(v); ok {
		return step
	}
	switch {
	case v.Admin && !v.RefreshAdmins:
		return stepHubAdmin
	case expired(v.St, v.Now, v.Margin):
		return stepExpired
	case v.EndedOnHeld:
		return stepEndedPending
	case v.IntentErr != nil:
		return stepIntentUnread
	}
	if step, ok := decideIntent(v); ok {
		return step
	}
	return decideNeed(v)
}

// decideFence is the step a recorded logout imposes, if any.
func decideFence(v updateView) (updateStep, bool) {
	switch {
	case !v.Fenced:
		return 0, false
	case !v.FenceMatches:
		return stepDropFence, true
	case v.Admin && !v.RefreshAdmins:
		return stepAdminFenced, true
	}
	return stepLogout, true
}

// decideIntent is the step an intent imposes, if any.
func decideIntent(v updateView) (updateStep, bool) {
	step := afterIntent(v.Intent, v.HasIntent, v.held(), v.MaxReuse)
	switch {
	case step == intentNone:
		return 0, false
	case step == intentStale:
		return stepDropIntent, true
	case v.Backoff != nil:
		return stepWaitIntent, true
	case step == intentProbe:
		return stepProbe, true
	case v.Stopping:
		return stepStopping, true
	case v.Held != nil:
		return stepHeld, true
	}
	return stepRetrySpend, true
}

// decideNeed is the step for tokens with no intent or logout in the way.
func decideNeed(v updateView) updateStep {
	switch {
	case !v.Need && v.IdleDue:
		return stepIdleCheck
	case !v.Need:
		return stepSettle
	case v.Stopping:
		return stepStopping
	case v.Backoff != nil:
		return stepBackingOff
	case v.Held != nil:
		return stepHeld
	}
	return stepGrant
}

// writeView is what the write-back of a grant's tokens observed: the hub's
// auth_state read again after the grant, and the user's recorded logouts.
type writeView struct {
	// ReadErr is why the hub could not be read again.
	ReadErr error
	// Now is the auth_state the hub holds now, NowErr why it holds no
	// usable tokens.
	Now    AuthState
	NowErr error
	// Spent is the auth_state whose refresh token the grant spent.
	Spent AuthState
	// Fenced: a logout of the spent tokens' session was recorded.
	Fenced bool
}

// writeStep is what a write-back does.
type writeStep int

const (
	// writeLater: the hub could not be read; keep the journaled tokens for
	// a retry.
	writeLater writeStep = iota
	// writeAdopt: the hub holds other tokens now (a new login, a logout):
	// they win; drop the journal entry.
	writeAdopt
	// writeFence: the session was logged out during the grant: do not
	// write back; carry the logout out.
	writeFence
	// writeHub: write the new tokens to the hub.
	writeHub
)

// decideWrite chooses the write-back's step (compare-and-set on the spent
// refresh token).
func decideWrite(v writeView) writeStep {
	switch {
	case v.ReadErr != nil:
		return writeLater
	case v.NowErr != nil || v.Now.Refresh != v.Spent.Refresh:
		return writeAdopt
	case v.Fenced:
		return writeFence
	}
	return writeHub
}

// endingView is what the logout of an ended session observed.
type endingView struct {
	// Pending: the user's session ended and its logout waits; Due: its time
	// has come.
	Pending, Due bool
	// Expected: the refresh token's own expiry predicted the ending.
	Expected bool
	// Confirmed: Keycloak's introspection says the token is no longer
	// accepted (or there is no introspection to ask).
	Confirmed bool
	// Tripped: the mass-failure guard holds.
	Tripped bool
}

// endingStep is what to do about an ended session.
type endingStep int

const (
	// endingWait: nothing now.
	endingWait endingStep = iota
	// endingConfirm: ask Keycloak whether the session really ended.
	endingConfirm
	// endingHold: the guard holds this unexpected ending back.
	endingHold
	// endingLogout: log the user out (compare-and-set on the ended token).
	endingLogout
)

// decideEnding chooses what to do about an ended session.
func decideEnding(v endingView) endingStep {
	switch {
	case !v.Pending || !v.Due:
		return endingWait
	case v.Expected:
		return endingLogout
	case !v.Confirmed:
		return endingConfirm
	case v.Tripped:
		return endingHold
	}
	return endingLogout
}
