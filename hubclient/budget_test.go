package hubclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sync/errgroup"
)

// TestRateLimitPacesEveryKindOfRequest: 60 requests of three kinds (user
// reads, writes and identity lookups), 16 at once, against a limit of 20
// per second: no second of the hub's clock, wherever it starts, sees more
// than 20, and all are served. The clock is synctest's, so the test
// measures the client's pacing alone, however busy the machine is.
func TestRateLimitPacesEveryKindOfRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var arrived []time.Time
		start := time.Now()
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			arrived = append(arrived, time.Now())
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			switch {
			case r.URL.Path == "/hub/api/user":
				w.Write([]byte(`{"kind":"user","name":"alice","scopes":[]}`))
			case r.Method == http.MethodPatch:
				w.Write([]byte(`{"name":"alice"}`))
			default:
				w.Write([]byte(`{"name":"alice","auth_state":null}`))
			}
		})
		c := New("http://hub.invalid/hub/api", "svc", WithHTTPClient(&http.Client{Transport: inProcess{hub}}),
			WithRateLimit(20), WithConcurrency(16), WithIdentityCacheTTL(0))
		var g errgroup.Group
		g.SetLimit(16)
		for i := range 60 {
			g.Go(func() error {
				switch i % 3 {
				case 0:
					_, err := c.User(context.Background(), "alice")
					return err
				case 1:
					return c.SetAuthState(context.Background(), "alice", []byte(`{}`))
				default: // refused at once when lookups are at their limit: a caller retries
					for {
						_, err := c.Identify(context.Background(), "token-"+string(rune('a'+i)))
						if !errors.Is(err, ErrBusy) {
							return err
						}
						time.Sleep(250 * time.Millisecond)
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i+20 < len(arrived); i++ {
			if d := arrived[i+20].Sub(arrived[i]); d < time.Second {
				t.Errorf("requests %d to %d arrived within %v: 21 in one second, want at most 20", i, i+20, d)
			}
		}
		if len(arrived) != 60 {
			t.Errorf("requests served = %d, want 60", len(arrived))
		}
		if elapsed := time.Since(start); elapsed < 2*time.Second {
			t.Errorf("60 requests at 20/s took %v, want at least 2 s", elapsed)
		}
	})
}

// TestLookupsCannotStarveTheRefresher: 200 callers with made-up tokens and
// 40 of the refresher's reads at once, against a limit of 20 per second.
// The reads keep their share (four fifths: 40 reads in at most 2.6 s); the
// lookups beyond their queue are refused at once instead of waiting, and no
// second sees more than 20 requests in all.
func TestLookupsCannotStarveTheRefresher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var arrived []time.Time
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			arrived = append(arrived, time.Now())
			mu.Unlock()
			if r.URL.Path == "/hub/api/user" {
				w.WriteHeader(http.StatusForbidden)
				w.Write([]byte(`{"status":403,"message":"Forbidden"}`))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"name":"alice","auth_state":null}`))
		})
		c := New("http://hub.invalid/hub/api", "svc", WithHTTPClient(&http.Client{Transport: inProcess{hub}}),
			WithRateLimit(20), WithConcurrency(8))
		start := time.Now()
		var busy, refused sync.WaitGroup
		var mu2 sync.Mutex
		busyCount, waited := 0, time.Duration(0)
		for i := range 200 {
			busy.Go(func() {
				began := time.Now()
				_, err := c.Identify(context.Background(), fmt.Sprintf("made-up-%d", i))
				if errors.Is(err, ErrBusy) {
					mu2.Lock()
					busyCount++
					waited = max(waited, time.Since(began))
					mu2.Unlock()
				}
			})
		}
		var readsDone time.Duration
		refused.Go(func() {
			var g errgroup.Group
			for range 40 {
				g.Go(func() error { _, err := c.User(context.Background(), "alice"); return err })
			}
			if err := g.Wait(); err != nil {
				t.Error(err)
			}
			readsDone = time.Since(start)
		})
		busy.Wait()
		refused.Wait()
		if readsDone > 2600*time.Millisecond {
			t.Errorf("40 refresher reads took %v beside 200 made-up lookups, want at most 2.6 s (16/s)", readsDone)
		}
		if busyCount == 0 || waited > identityWaitLimit {
			t.Errorf("lookups refused = %d, longest wait before a refusal %v; want some refused, none after more than %v",
				busyCount, waited, identityWaitLimit)
		}
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i+20 < len(arrived); i++ {
			if d := arrived[i+20].Sub(arrived[i]); d < time.Second {
				t.Errorf("requests %d to %d arrived within %v: 21 in one second, want at most 20", i, i+20, d)
				break
			}
		}
	})
}

// TestLookupWaitIsBounded: an identity lookup waits at most
// identityWaitLimit in all, for a slot of the lookup pool and then for its
// share of the rate limit; beyond that it is refused (ErrBusy), so that a
// caller behind made-up tokens learns at once to try again. One lookup
// holds the only slot of the pool until holdFor; the next one is timed.
func TestLookupWaitIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holdFor  time.Duration
		rps      float64 // 0: no rate limit
		wantErr  error
		wantWait time.Duration
	}{
		{name: "the slot is freed in time", holdFor: 500 * time.Millisecond, wantWait: 500 * time.Millisecond},
		{name: "the slot is held past the limit", holdFor: 3 * time.Second, wantErr: ErrBusy, wantWait: identityWaitLimit},
		// At 5 per second lookups get one a second: after 600 ms for the
		// slot, the share would come about 420 ms later, past the limit.
		{name: "the slot and then the share past the limit", holdFor: 600 * time.Millisecond, rps: 5,
			wantErr: ErrBusy, wantWait: 600 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				held := make(chan struct{})
				hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get("Authorization") == "token holder" {
						<-held
					}
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"kind":"user","name":"alice","scopes":[]}`))
				})
				opts := []Option{WithHTTPClient(&http.Client{Transport: inProcess{hub}}), WithIdentityConcurrency(1)}
				if tc.rps > 0 {
					opts = append(opts, WithRateLimit(tc.rps))
				}
				c := New("http://hub.invalid/hub/api", "svc", opts...)
				var holder sync.WaitGroup
				holder.Go(func() {
					if _, err := c.Identify(context.Background(), "holder"); err != nil {
						t.Errorf("the holder's lookup: %v", err)
					}
				})
				synctest.Wait() // the holder has the slot
				time.AfterFunc(tc.holdFor, func() { close(held) })
				start := time.Now()
				_, err := c.Identify(context.Background(), "next")
				waited := time.Since(start)
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("the next lookup: err = %v, want %v", err, tc.wantErr)
				}
				if waited != tc.wantWait {
					t.Errorf("the next lookup took %v, want %v", waited, tc.wantWait)
				}
				holder.Wait()
			})
		})
	}
}
