package serviceaccount

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ssoLimitsTTL is how long the realm's SSO settings are reused.
const ssoLimitsTTL = 10 * time.Minute

// errNoSSOSettings says the realm's answer held no SSO settings (the admin
// client lacks view-realm).
var errNoSSOSettings = errors.New("the realm's SSO settings are not readable (the admin client needs view-realm)")

// SSOLimits reads the realm's SSO session idle timeout and maximum
// lifespan, at most once every 10 minutes (answers and failures alike), so
// that a page showing sessions' ends costs Keycloak almost nothing.
type SSOLimits struct {
	read func(ctx context.Context) (RealmSettings, error)
	now  func() time.Time

	mu        sync.Mutex
	at        time.Time
	idle, max time.Duration
	err       error
}

// NewSSOLimits returns the realm's SSO limits as read reads them
// ((*Admin).RealmSettings).
func NewSSOLimits(read func(ctx context.Context) (RealmSettings, error), now func() time.Time) *SSOLimits {
	return &SSOLimits{read: read, now: now}
}

// Get returns the SSO session idle timeout and maximum lifespan.
func (l *SSOLimits) Get(ctx context.Context) (idle, max time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); l.at.IsZero() || now.Sub(l.at) >= ssoLimitsTTL {
		l.at = now
		l.idle, l.max, l.err = l.fetch(ctx)
	}
	return l.idle, l.max, l.err
}

func (l *SSOLimits) fetch(ctx context.Context) (time.Duration, time.Duration, error) {
	s, err := l.read(ctx)
	if err != nil {
		return 0, 0, err
	}
	if s.SSOSessionIdle == nil || s.SSOSessionMax == nil {
		return 0, 0, errNoSSOSettings
	}
	return time.Duration(*s.SSOSessionIdle) * time.Second, time.Duration(*s.SSOSessionMax) * time.Second, nil
}
