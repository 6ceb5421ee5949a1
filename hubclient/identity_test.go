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

	"github.com/google/go-cmp/cmp"
)

func TestIdentifyEmptyToken(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"kind":"service","name":"tokenkeeper"}`))
	id, err := New(hub.apiURL(), serviceToken).Identify(context.Background(), "")
	if !IsStatus(err, http.StatusForbidden) {
		t.Errorf("Identify(\"\") error = %v, want *APIError 403", err)
	}
	if diff := cmp.Diff(Identity{}, id); diff != "" {
		t.Errorf("Identify(\"\") must not fall back to the service's own token (-want +got):\n%s", diff)
	}
	if n := len(hub.requests()); n != 0 {
		t.Errorf("Identify(\"\") sent %d requests, want 0", n)
	}
}

// TestIdentifyCallerGivesUp checks that a caller whose context ends stops
// waiting without failing the other callers of the same lookup, and that the
// shared answer is still cached.
func TestIdentifyCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex // guards requests
		requests := 0
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			requests++
			mu.Unlock()
			<-release
			fmt.Fprint(w, aliceIdentity)
		})
		c := New("http://hub.invalid/hub/api", serviceToken,
			WithHTTPClient(&http.Client{Transport: inProcess{hub}}))
		first, cancelFirst := context.WithCancel(context.Background())
		firstErr := make(chan error, 1)
		go func() {
			_, err := c.Identify(first, "caller-token")
			firstErr <- err
		}()
		synctest.Wait() // the first caller's lookup waits in the hub
		second := make(chan Identity, 1)
		go func() {
			id, err := c.Identify(context.Background(), "caller-token")
			if err != nil {
				t.Errorf("second Identify error: %v", err)
			}
			second <- id
		}()
		synctest.Wait() // the second caller waits for the same lookup
		cancelFirst()
		if err := <-firstErr; !errors.Is(err, context.Canceled) {
			t.Errorf("first Identify after its context ended = %v, want context.Canceled", err)
		}
		close(release)
		if id := <-second; id.Name != "alice" {
			t.Errorf("second Identify = %+v, want alice", id)
		}
		if _, err := c.Identify(context.Background(), "caller-token"); err != nil {
			t.Errorf("third Identify error: %v", err)
		}
		if requests != 1 {
			t.Errorf("requests for three Identify calls of one token = %d, want 1", requests)
		}
	})
}

func TestIdentifyCacheDropsExpiredTokens(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, aliceIdentity))
	clk := newClock()
	c := New(hub.apiURL(), serviceToken, WithIdentityCacheTTL(time.Minute), WithClock(clk.Now))
	cached := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.ids)
	}
	for i := range 5 {
		if _, err := c.Identify(context.Background(), fmt.Sprint("token-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := cached(); n != 5 {
		t.Fatalf("cached identities after 5 tokens = %d, want 5", n)
	}
	clk.Advance(time.Minute)
	if _, err := c.Identify(context.Background(), "token-new"); err != nil {
		t.Fatal(err)
	}
	if n := cached(); n != 1 {
		t.Errorf("cached identities after the TTL and one new token = %d, want 1", n)
	}
}

func TestIdentifyWithoutCache(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, aliceIdentity))
	c := New(hub.apiURL(), serviceToken, WithIdentityCacheTTL(0))
	for range 3 {
		if _, err := c.Identify(context.Background(), "caller-token"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(hub.requests()); n != 3 {
		t.Errorf("requests for 3 Identify calls with TTL 0 = %d, want 3", n)
	}
	if n := len(c.ids); n != 0 {
		t.Errorf("cached identities with TTL 0 = %d, want 0", n)
	}
}
