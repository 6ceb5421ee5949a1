package hubclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// TestRateLimitPacesEveryKindOfRequest: 120 requests of three kinds (user
// reads, writes and identity lookups), 16 at once, against a limit of 20
// per second: no second of the hub's clock sees more than 20 (plus the
// first second's burst), and all are served.
func TestRateLimitPacesEveryKindOfRequest(t *testing.T) {
	var mu sync.Mutex
	perSecond := map[int64]int{}
	start := time.Now()
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		perSecond[int64(time.Since(start)/time.Second)]++
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
	}))
	defer hub.Close()
	c := New(hub.URL+"/hub/api", "svc", WithRateLimit(20, 5), WithConcurrency(16), WithIdentityCacheTTL(0))
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
	total := 0
	for sec, n := range perSecond {
		total += n
		if limit := 20 + 5; n > limit {
			t.Errorf("second %d: %d requests, want at most %d", sec, n, limit)
		}
	}
	if total != 60 {
		t.Errorf("requests served = %d, want 60", total)
	}
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Errorf("60 requests at 20/s took %v, want at least 2 s", elapsed)
	}
}
