package refresh

import (
	"context"
	"errors"
	"sync"
)

// ErrStopping means tokenkeeper is shutting down and starts no new work.
var ErrStopping = errors.New("tokenkeeper is stopping")

// userLocks gives each user one writer: every change to a user's
// auth_state (write-back, replay, logout) runs holding that user's lock.
type userLocks struct {
	mu    sync.Mutex
	locks map[string]*userLock
}

type userLock struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

// ref returns name's lock, made if needed, with one more reference.
func (l *userLocks) ref(name string) *userLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[string]*userLock{}
	}
	u := l.locks[name]
	if u == nil {
		u = &userLock{ch: make(chan struct{}, 1)}
		l.locks[name] = u
	}
	u.refs++
	return u
}

// lock waits for name's lock or for ctx to end, and returns the unlock func.
func (l *userLocks) lock(ctx context.Context, name string) (func(), error) {
	u := l.ref(name)
	select {
	case u.ch <- struct{}{}:
		return func() { <-u.ch; l.release(name, u) }, nil
	case <-ctx.Done():
		l.release(name, u)
		return nil, ctx.Err()
	}
}

// release drops a reference and forgets the lock when nobody holds or waits.
func (l *userLocks) release(name string, u *userLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u.refs--; u.refs == 0 {
		delete(l.locks, name)
	}
}

// tracker counts work in flight so that a stop can wait for it, and refuses
// new work once the stop has begun.
type tracker struct {
	mu      sync.Mutex
	n       int
	stopped bool
	idle    chan struct{} // closed when stopped and n reaches 0
}

// start registers one piece of work; false once stop has begun.
func (t *tracker) start() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.n++
	return true
}

// done ends a piece of work registered by start.
func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 && t.idle != nil {
		close(t.idle)
	}
}

// isStopping reports whether stop has begun.
func (t *tracker) isStopping() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopped
}

// stop refuses new work and waits until the work in flight is done or ctx ends.
func (t *tracker) stop(ctx context.Context) error {
	t.mu.Lock()
	if !t.stopped {
		t.stopped = true
		t.idle = make(chan struct{})
		if t.n == 0 {
			close(t.idle)
		}
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tryLock takes name's lock if nobody holds it, without waiting; ok is
// false when somebody does.
func (l *userLocks) tryLock(name string) (unlock func(), ok bool) {
	u := l.ref(name)
	select {
	case u.ch <- struct{}{}:
		return func() { <-u.ch; l.release(name, u) }, true
	default:
		l.release(name, u)
		return nil, false
	}
}

// busy reports whether somebody holds or waits for name's lock.
func (l *userLocks) busy(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.locks[name] != nil
}
