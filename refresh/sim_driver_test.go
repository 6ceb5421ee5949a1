package refresh

// The simulation's only coupling to the engine's API. Everything else in
// sim_*_test.go talks to the models and to simEngine; when the engine's API
// changes, this file is what changes.
//
// Adapter points:
//   - simHubAdapter, simHubUserOf: the Hub and SessionHub interfaces on top
//     of the model hub, and the hub client's User type;
//   - simOpen: OpenStore, Options (including the state keys, newest first) and New;
//   - simEngine.replay, sweep, fresh, backchannel, unhealthy: the calls the
//     simulated scheduler, HTTP API and Keycloak make;
//   - simEngine.stop: what cmd/tokenkeeper does on SIGTERM once the sweep's
//     context is cancelled and the sweep has returned; the current engine has
//     nothing to stop or wait for, so it only closes the store;
//   - simEngine.crash: the process dies (nothing is waited for);
//   - simJournal and simEngine.knowsSession: reading the journal (with a list
//     of keys) and the session table through the store API, for the checks;
//   - simBackoffCap: the engine's longest backoff, allowed after outages.

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// simBackoffCap is the engine's longest wait between retries after
// transient failures; the checks allow it after an outage.
const simBackoffCap = backoffCap

// simHubAdapter is one tokenkeeper process's view of the model hub.
type simHubAdapter struct{ c *simHubConn }

func (a simHubAdapter) Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error] {
	return func(yield func(hubclient.User, error) bool) {
		users, err := a.c.list(ctx, q.State == "active")
		if err != nil {
			yield(hubclient.User{}, err)
			return
		}
		for _, u := range users {
			if !yield(simHubUserOf(u), nil) {
				return
			}
		}
	}
}

func (a simHubAdapter) User(ctx context.Context, name string) (hubclient.User, error) {
	v, err := a.c.read(ctx, name)
	return simHubUserOf(v), err
}

// simHubUserOf is the hub client's user for the model's view. (The current
// hub client has no last_activity; v.lastActivity goes there once it has.)
func simHubUserOf(v simUserView) hubclient.User {
	u := hubclient.User{Name: v.name, Admin: v.admin, Servers: map[string]hubclient.Server{}, AuthState: v.state}
	if !v.lastActivity.IsZero() {
		u.LastActivity = v.lastActivity.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	if v.server != "" {
		u.Servers[""] = hubclient.Server{Name: "", Ready: true, URL: v.server}
	}
	return u
}

func (a simHubAdapter) SetAuthState(ctx context.Context, name string, state json.RawMessage) error {
	return a.c.write(ctx, name, state)
}

func (a simHubAdapter) Tokens(ctx context.Context, user string) ([]hubclient.Token, error) {
	return a.c.tokens(ctx, user)
}

func (a simHubAdapter) DeleteToken(ctx context.Context, user, id string) error {
	return a.c.deleteToken(ctx, user, id)
}

func (a simHubAdapter) StopServer(ctx context.Context, user, server string) error {
	return a.c.stopServer(ctx, user, server)
}

// simEngineConfig is what the simulation chooses about a tokenkeeper process.
type simEngineConfig struct {
	Interval      time.Duration // the sweep interval (Schedule.Margin)
	Keep          string
	Window        time.Duration
	Recheck       time.Duration
	GrantTimeout  time.Duration
	Concurrency   int
	RevokeTokens  bool
	StopServers   bool
	EndSessions   func(ctx context.Context, sub string) error // nil: off
	GuardMin      int
	GuardFraction float64
	MaxReuse      int
	Introspect    func(ctx context.Context, refresh string) (bool, error)
	// Skew is how far the process's clock is ahead of the world's.
	Skew time.Duration
	// Keys are the state keys, newest first.
	Keys   [][]byte
	Rand   *rand.Rand
	Logger *slog.Logger
}

// simEngine is one tokenkeeper process: its refresher and its store.
type simEngine struct {
	r     *Refresher
	store *store.Store
}

// simOpen opens the store at path and starts a refresher on it, as
// cmd/tokenkeeper does at start (Replay is called separately).
func simOpen(ctx context.Context, path string, cfg simEngineConfig, hub *simHubConn,
	grant func(ctx context.Context, refresh string) (*oauth2.Token, error)) (*simEngine, error) {
	st, err := store.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	keys, err := NewKeyring(cfg.Keys...)
	if err != nil {
		st.Close()
		return nil, err
	}
	opts := Options{
		Keep: cfg.Keep, Schedule: Schedule{Window: cfg.Window, Margin: cfg.Interval + cfg.GrantTimeout},
		Recheck: cfg.Recheck, Concurrency: cfg.Concurrency,
		GrantTimeout: cfg.GrantTimeout, Keys: keys, Now: func() time.Time { return time.Now().Add(cfg.Skew) }, Rand: cfg.Rand, Logger: cfg.Logger,
		Actions:  LogoutActions{RevokeTokens: cfg.RevokeTokens, StopServers: cfg.StopServers, EndSessions: cfg.EndSessions},
		Guard:    Guard{Min: cfg.GuardMin, Fraction: cfg.GuardFraction},
		MaxReuse: cfg.MaxReuse,
		Introspect: func(ctx context.Context, refresh config.Secret) (bool, error) {
			return cfg.Introspect(ctx, refresh.Reveal())
		},
	}
	g := func(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
		return grant(ctx, refresh.Reveal())
	}
	a := simHubAdapter{c: hub}
	r, err := New(ctx, a, a, g, st, opts)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &simEngine{r: r, store: st}, nil
}

func (e *simEngine) replay(ctx context.Context) error { return e.r.Replay(ctx) }

func (e *simEngine) sweep(ctx context.Context) error { return e.r.Sweep(ctx) }

// fresh is GET fresh-token: the access token and its expiry.
func (e *simEngine) fresh(ctx context.Context, name string, minValid time.Duration) (string, time.Time, error) {
	t, err := e.r.Fresh(ctx, name, minValid)
	return t.Access.Reveal(), t.Expiry, err
}

// backchannel is POST backchannel-logout; it returns the HTTP status the
// handler answers with (spawnerhook/errors.go).
func (e *simEngine) backchannel(ctx context.Context, raw string, verify LogoutVerifier) int {
	_, err := e.r.BackchannelLogout(ctx, raw, verify)
	var lerr *LogoutTokenError
	var herr *hubclient.APIError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &lerr), errors.Is(err, ErrReplayedLogout):
		return http.StatusBadRequest
	case errors.As(err, &herr):
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

// unhealthy is the health endpoint: nil when healthy.
// guardHolds reports whether the mass-failure guard holds logouts back,
// the one red health that excuses an invariant (e, for the users it holds).
func (e *simEngine) guardHolds() bool {
	for _, p := range e.r.Health().Problems {
		if p.Class == ProblemLogoutsPaused {
			return true
		}
	}
	return false
}

// simStopWait is cmd/tokenkeeper's stopWait: how long a stop lets grants
// in flight finish before it cancels them.
const simStopWait = 11 * time.Second

// stopRefresher is what cmd/tokenkeeper does at the first signal.
func (e *simEngine) stopRefresher() error {
	ctx, cancel := context.WithTimeout(context.Background(), simStopWait)
	defer cancel()
	return e.r.Stop(ctx)
}

// close closes the store, as cmd/tokenkeeper does before it exits.
func (e *simEngine) close() error { return e.store.Close() }

// crash is the process dying: its database handle goes with it.
func (e *simEngine) crash() { e.store.Close() }

// journal returns the refresh token of every journal entry that one of keys
// opens, by user.
func (e *simEngine) journal(ctx context.Context, keys [][]byte) (map[string]string, error) {
	return simJournal(ctx, e.store, keys)
}

// simJournalFile is journal on the database at path, while no process runs.
func simJournalFile(ctx context.Context, path string, keys [][]byte) (map[string]string, error) {
	st, err := store.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return simJournal(ctx, st, keys)
}

func simJournal(ctx context.Context, st *store.Store, keys [][]byte) (map[string]string, error) {
	names, err := st.PendingUsers(ctx)
	if err != nil {
		return nil, err
	}
	ring, err := NewKeyring(keys...)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range names {
		p, ok, err := st.Pending(ctx, name)
		if err != nil || !ok {
			continue
		}
		if state, err := ring.Open(p); err == nil {
			if t := simParse(state); t.ok {
				out[name] = t.refresh
			}
		}
	}
	return out, nil
}

// loggedOut returns when the audit table last recorded a logout, by user.
func (e *simEngine) loggedOut(ctx context.Context) (map[string]time.Time, error) {
	ls, err := e.store.Logouts(ctx)
	out := map[string]time.Time{}
	for _, l := range ls {
		if l.At.After(out[l.User]) {
			out[l.User] = l.At
		}
	}
	return out, err
}

// knowsSession reports whether the store maps the Keycloak session sid or
// subject sub to a hub user.
func (e *simEngine) knowsSession(ctx context.Context, sid, sub string) bool {
	names, err := e.store.UsersForSession(ctx, sid, sub)
	return err == nil && len(names) > 0
}
