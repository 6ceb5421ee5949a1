package hubclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

// TestIdentifyRunsOnItsOwnPool checks that identity lookups neither wait for
// the slots of other requests nor exceed their own bound.
func TestIdentifyRunsOnItsOwnPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var inFlight, peak atomic.Int32
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hub/api/users/alice" {
				<-release // the sweep's request holds the only general slot
				fmt.Fprint(w, `{"name":"alice"}`)
				return
			}
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			inFlight.Add(-1)
			fmt.Fprint(w, aliceIdentity)
		})
		c := New("http://hub.invalid/hub/api", serviceToken, WithConcurrency(1), WithIdentityConcurrency(2),
			WithHTTPClient(&http.Client{Transport: inProcess{hub}}))
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := c.User(context.Background(), "alice"); err != nil {
				t.Errorf("User error: %v", err)
			}
		})
		synctest.Wait()
		for i := range 5 {
			wg.Go(func() {
				if _, err := c.Identify(context.Background(), fmt.Sprint("token-", i)); err != nil {
					t.Errorf("Identify error: %v", err)
				}
			})
		}
		synctest.Wait()
		if n := inFlight.Load(); n != 2 {
			t.Errorf("identity lookups in flight while the general slot is taken = %d, want 2", n)
		}
		close(release)
		wg.Wait()
		if p := peak.Load(); p != 2 {
			t.Errorf("peak identity lookups in flight = %d, want 2", p)
		}
	})
}

// TestIdentifyCancelledWhenEveryWaiterLeaves checks that the shared lookup
// goes on while one caller waits, is cancelled once the last caller has
// left, and is not cached.
func TestIdentifyCancelledWhenEveryWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var started, cancelled atomic.Int32
		answer := make(chan struct{})
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started.Add(1)
			select {
			case <-r.Context().Done():
				cancelled.Add(1)
			case <-answer:
				fmt.Fprint(w, aliceIdentity)
			}
		})
		c := New("http://hub.invalid/hub/api", serviceToken, WithHTTPClient(&http.Client{Transport: inProcess{hub}}))
		ctx1, cancel1 := context.WithCancel(context.Background())
		ctx2, cancel2 := context.WithCancel(context.Background())
		errs := make(chan error, 2)
		for _, ctx := range []context.Context{ctx1, ctx2} {
			go func() {
				_, err := c.Identify(ctx, "caller-token")
				errs <- err
			}()
		}
		synctest.Wait()
		cancel1()
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("first caller's Identify = %v, want context.Canceled", err)
		}
		synctest.Wait()
		if n := cancelled.Load(); n != 0 {
			t.Fatalf("lookup cancelled while a caller still waits")
		}
		cancel2()
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("second caller's Identify = %v, want context.Canceled", err)
		}
		synctest.Wait()
		if n := cancelled.Load(); n != 1 {
			t.Errorf("lookups cancelled after every caller left = %d, want 1", n)
		}
		close(answer)
		if id, err := c.Identify(context.Background(), "caller-token"); err != nil || id.Name != "alice" {
			t.Errorf("Identify after the cancelled lookup = %+v, %v; want alice", id, err)
		}
		if n := started.Load(); n != 2 {
			t.Errorf("requests = %d, want 2 (the cancelled lookup is not reused)", n)
		}
	})
}

// TestForget checks that Forget drops the cached identities of one user and
// no other.
func TestForget(t *testing.T) {
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimSuffix(strings.TrimPrefix(r.Header.Get("Authorization"), "token tok-"), "-2")
		fmt.Fprintf(w, `{"kind":"user","name":%q}`, name)
	})
	c := New(hub.apiURL(), serviceToken, WithClock(newClock().Now))
	tokens := []string{"tok-alice", "tok-alice-2", "tok-bob"}
	for _, tok := range tokens {
		if _, err := c.Identify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	c.Forget("alice")
	for _, tok := range tokens {
		if _, err := c.Identify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	var asked []string
	for _, r := range hub.requests() {
		asked = append(asked, strings.TrimPrefix(r.Authorization, "token "))
	}
	want := []string{"tok-alice", "tok-alice-2", "tok-bob", "tok-alice", "tok-alice-2"}
	if diff := cmp.Diff(want, asked); diff != "" {
		t.Errorf("tokens asked about (-want +got):\n%s", diff)
	}
}

// TestDeleteTokenForgetsTheUser checks that revoking a user's token makes
// the user's cached identities be asked about again.
func TestDeleteTokenForgetsTheUser(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusNotFound} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodDelete {
					w.WriteHeader(status)
					return
				}
				fmt.Fprint(w, aliceIdentity)
			})
			c := New(hub.apiURL(), serviceToken, WithClock(newClock().Now))
			if _, err := c.Identify(context.Background(), "caller-token"); err != nil {
				t.Fatal(err)
			}
			_ = c.DeleteToken(context.Background(), "alice", "a42")
			if _, err := c.Identify(context.Background(), "caller-token"); err != nil {
				t.Fatal(err)
			}
			var lookups int
			for _, r := range hub.requests() {
				if r.Path == "/hub/api/user" {
					lookups++
				}
			}
			if lookups != 2 {
				t.Errorf("lookups of the caller's token around DeleteToken (%d) = %d, want 2", status, lookups)
			}
		})
	}
}

// TestForgetDuringLookup checks that a lookup in flight when its user is
// forgotten is answered but not cached.
func TestForgetDuringLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		var requests atomic.Int32
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if requests.Add(1) == 1 {
				<-hold
			}
			fmt.Fprint(w, aliceIdentity)
		})
		c := New("http://hub.invalid/hub/api", serviceToken, WithHTTPClient(&http.Client{Transport: inProcess{hub}}))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if id, err := c.Identify(context.Background(), "caller-token"); err != nil || id.Name != "alice" {
				t.Errorf("Identify during Forget = %+v, %v; want alice", id, err)
			}
		}()
		synctest.Wait()
		c.Forget("alice")
		close(hold)
		<-done
		if _, err := c.Identify(context.Background(), "caller-token"); err != nil {
			t.Fatal(err)
		}
		if n := requests.Load(); n != 2 {
			t.Errorf("requests = %d, want 2 (the answer of a lookup overtaken by Forget is not cached)", n)
		}
	})
}
