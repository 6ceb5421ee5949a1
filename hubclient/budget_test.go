package hubclient

import (
	"context"
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
				default:
					_, err := c.Identify(context.Background(), "token-"+string(rune('a'+i)))
					return err
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
