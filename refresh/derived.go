package refresh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// Kind is what a derived token is made from a user's access token.
type Kind string

const (
	// KindAudience is the user's token exchanged for one narrowed to a
	// client of the realm (Keycloak's standard token exchange).
	KindAudience Kind = "audience"
	// KindProvider is the user's token at the external identity provider
	// they logged in through (Keycloak's identity brokering).
	KindProvider Kind = "identity_provider"
)

// Target names one derived token: an audience or an identity provider alias.
type Target struct {
	Kind Kind
	Name string
}

// flightKey is the single-flight key of user name's own tokens (t zero)
// or of the token derived for t. The name is length-prefixed, so that no
// user name, whatever bytes it holds, reads as another user's key or as a
// derived token's.
func flightKey(name string, t Target) string {
	return strconv.Itoa(len(name)) + ":" + name + "\x00" + string(t.Kind) + "\x00" + t.Name
}

// DeriveFunc makes a derived token from a user's access token: the
// exchange for an audience, or the stored token of an identity provider.
// Keycloak's refusals are errors keycloak.Refused recognises.
type DeriveFunc func(ctx context.Context, access config.Secret, name string) (*oauth2.Token, error)

// ErrProviderTokenExpired means Keycloak holds only an expired token of the
// identity provider for this user, and cannot refresh it.
var ErrProviderTokenExpired = errors.New("the identity provider's token Keycloak holds for this user has expired " +
	"and cannot be refreshed: log in to JupyterHub through that identity provider again")

// errForgotten means the user's tokens were forgotten (a logout) while a
// derived token was being made; it was discarded.
var errForgotten = errors.New("the user's tokens were dropped while a derived token was being made")

// errKeptCurrent comes with the cached derived token served because Keycloak
// could not be reached: asking again would not give a fresher one.
var errKeptCurrent = errors.New("keycloak unavailable: the current derived token is served")

// Derived returns the user's token for t with at least minValid left (or
// as much as Keycloak gives), derived from their access token. It is served
// only while the user's own session is known live: every call first gets
// the user's access token as Fresh does (and fails as Fresh fails), and a
// cached derived token is served only if it was made from that session.
// Derived tokens are cached per user and target; concurrent calls for one
// user and target share one request to Keycloak, made with a fresh access
// token. A logout drops the user's derived tokens, and one made while a
// logout ran is discarded. Targets not allowed by Options are refused
// (keycloak.ErrAudienceNotAllowed, keycloak.ErrProviderNotAllowed) before
// anything else.
func (r *Refresher) Derived(ctx context.Context, name string, t Target, minValid time.Duration) (Tokens, error) {
	if err := r.allows(t); err != nil {
		return Tokens{}, err
	}
	d, err := r.derivedOnce(ctx, name, t, minValid)
	if errors.Is(err, errForgotten) || (err == nil && needs(d.claims(), r.servingNow(), minValid)) {
		// A logout raced the flight, or the flight was asked for less
		// time; ask once more.
		d, err = r.derivedOnce(ctx, name, t, minValid)
	}
	switch {
	case errors.Is(err, errKeptCurrent):
		return d, nil
	case errors.Is(err, errForgotten):
		return Tokens{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return d, err
}

// allows refuses targets the configuration does not list.
func (r *Refresher) allows(t Target) error {
	switch {
	case t.Kind == KindAudience && r.opts.Exchange != nil && slices.Contains(r.opts.Audiences, t.Name):
		return nil
	case t.Kind == KindProvider && r.opts.ProviderToken != nil && slices.Contains(r.opts.Providers, t.Name):
		return nil
	case t.Kind == KindProvider:
		return fmt.Errorf("%w: %q", keycloak.ErrProviderNotAllowed, t.Name)
	default:
		return fmt.Errorf("%w: %q", keycloak.ErrAudienceNotAllowed, t.Name)
	}
}

// derivedOnce checks the user's session, then serves the cached derived
// token or makes one in the target's single flight.
func (r *Refresher) derivedOnce(ctx context.Context, name string, t Target, minValid time.Duration) (Tokens, error) {
	base, err := r.Fresh(ctx, name, minValid)
	if err != nil {
		return Tokens{}, err
	}
	if d, ok := r.cachedDerived(name, t, base.Session, minValid); ok {
		return d, nil
	}
	return r.inFlight(ctx, flightKey(name, t), func(ctx context.Context) (Tokens, error) {
		return r.derive(ctx, name, t, minValid)
	})
}

// cachedDerived returns the cached token for t while it was made in session
// (that of the user's access token just got) and has minValid left.
func (r *Refresher) cachedDerived(name string, t Target, session string, minValid time.Duration) (Tokens, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.derived[name][t]
	if !ok || d.Session != session || needs(d.claims(), r.servingNow(), minValid) {
		return Tokens{}, false
	}
	return d, true
}

// derive makes t's token from a fresh access token and caches it, unless
// the user's tokens were forgotten since it started.
func (r *Refresher) derive(ctx context.Context, name string, t Target, minValid time.Duration) (Tokens, error) {
	epoch := r.epoch(name)
	base, err := r.Fresh(ctx, name, minValid)
	if err != nil {
		return Tokens{}, err
	}
	start := time.Now()
	tok, err := r.deriveFunc(t.Kind)(ctx, base.Access, t.Name)
	if err != nil {
		return r.deriveFailed(name, t, base, err, time.Since(start))
	}
	r.opts.Metrics.derivedToken(t.Kind, "success", time.Since(start))
	d := derivedTokens(tok, base)
	if t.Kind == KindProvider && !d.Expiry.After(r.now()) {
		return Tokens{}, ErrProviderTokenExpired
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.epochs[name] != epoch {
		return Tokens{}, errForgotten
	}
	if r.derived[name] == nil {
		r.derived[name] = map[Target]Tokens{}
	}
	r.derived[name][t] = d
	return d, nil
}

func (r *Refresher) deriveFunc(k Kind) DeriveFunc {
	if k == KindProvider {
		return r.opts.ProviderToken
	}
	return r.opts.Exchange
}

// deriveFailed returns Keycloak's refusal as it is. On any other failure
// (Keycloak unreachable) the cached token for t is served while it is
// valid and of base's session.
func (r *Refresher) deriveFailed(name string, t Target, base Tokens, err error, took time.Duration) (Tokens, error) {
	if keycloak.Refused(err) {
		r.opts.Metrics.derivedToken(t.Kind, "refused", took)
		r.log.Warn("keycloak refused a derived token", "user", name, "kind", t.Kind, "name", t.Name, "err", err)
		return Tokens{}, err
	}
	r.opts.Metrics.derivedToken(t.Kind, "transient", took)
	r.log.Warn("derived token failed", "user", name, "kind", t.Kind, "name", t.Name, "err", err)
	r.mu.Lock()
	d := r.derived[name][t]
	r.mu.Unlock()
	if d.Session == base.Session && d.Expiry.After(r.now()) {
		return d, errKeptCurrent
	}
	return Tokens{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// derivedTokens makes Tokens of a derived token: its expiry is the JWT's
// exp, else what Keycloak said, else unknown, and then the base token's, so
// that it is never served longer than the user's own token on that account.
func derivedTokens(tok *oauth2.Token, base Tokens) Tokens {
	d := Tokens{Access: config.Secret(tok.AccessToken), Type: tok.Type(), Expiry: tok.Expiry, Session: base.Session}
	if c, err := ParseClaims(tok.AccessToken); err == nil {
		d.Expiry, d.Issued = c.Expiry, c.IssuedAt
	}
	if d.Expiry.IsZero() {
		d.Expiry = base.Expiry
	}
	return d
}

// epoch returns how often name's tokens have been forgotten. Epochs are
// never deleted, not even for users the hub no longer has, so that a
// derived token made across any forget is discarded.
func (r *Refresher) epoch(name string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epochs[name]
}

// forget drops name's cached tokens, their own and derived ones, and any
// remembered miss, and makes a derived token being made for name be
// discarded. The caller holds r.mu.
func (r *Refresher) forget(name string) {
	r.unmiss(name)
	delete(r.cache, name)
	delete(r.derived, name)
	r.epochs[name]++
}
