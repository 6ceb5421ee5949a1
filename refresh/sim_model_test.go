package refresh

// Tests of the simulation's models: they must follow Keycloak's and
// JupyterHub's rules, and their detectors must fire, or a green simulation
// proves nothing.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// newModelWorld is a world with one user, logged in, and no tokenkeeper.
func newModelWorld(t *testing.T, admin bool) (*simWorld, *simHubUser) {
	w := newSimWorld(t, 1, t.TempDir(), simDefaultWeights)
	w.cfg.realm = simRealm{access: time.Minute, idle: 10 * time.Minute, max: time.Hour}
	w.kc.realm = w.cfg.realm
	u := &simHubUser{name: "alice", admin: admin, running: true, keptSince: w.start}
	u.setState(nil)
	w.mu.Lock()
	w.hub.add(u)
	w.hub.login(u)
	w.mu.Unlock()
	return w, u
}

// grantBody returns the Keycloak error body of a failed grant.
func grantBody(t *testing.T, err error) (int, string) {
	t.Helper()
	var rerr *oauth2.RetrieveError
	if !errors.As(err, &rerr) {
		t.Fatalf("grant error = %v, want *oauth2.RetrieveError", err)
	}
	return rerr.Response.StatusCode, string(rerr.Body)
}

func TestSimKeycloakRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, false)
		tk := &simProc{name: "tk", tk: true}
		ctx := context.Background()
		first := w.hubRefresh(u)
		second, err := w.kc.grant(ctx, tk, first)
		if err != nil {
			t.Fatalf("first grant: %v", err)
		}
		_, err = w.kc.grant(ctx, tk, first)
		status, body := grantBody(t, err)
		if want := `{"error":"invalid_grant","error_description":"Maximum allowed refresh token reuse exceeded"}`; status != 400 || body != want {
			t.Errorf("spent token again = %d %s, want 400 %s", status, body, want)
		}
		_, err = w.kc.grant(ctx, tk, second.RefreshToken)
		if _, body := grantBody(t, err); !strings.Contains(body, "Session doesn't have required client") {
			t.Errorf("newest token after reuse = %s, want the session gone for the client", body)
		}
		if keycloak.Classify(err) != keycloak.Terminal {
			t.Errorf("Classify(%v) = %v, want terminal", err, keycloak.Classify(err))
		}
		if len(w.violations) != 1 || !strings.HasPrefix(w.violations[0], "(f)") {
			t.Errorf("violations = %q, want one (f)", w.violations)
		}
	})
}

func TestSimKeycloakStaleToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, false)
		tk := &simProc{name: "tk", tk: true}
		ctx := context.Background()
		rt := w.hubRefresh(u)
		var chain []string
		for range 2 {
			tok, err := w.kc.grant(ctx, tk, rt)
			if err != nil {
				t.Fatal(err)
			}
			chain, rt = append(chain, rt), tok.RefreshToken
		}
		_, err := w.kc.grant(ctx, tk, chain[0])
		if _, body := grantBody(t, err); body != `{"error":"invalid_grant","error_description":"Stale token"}` {
			t.Errorf("older spent token = %s, want Stale token", body)
		}
	})
}

func TestSimKeycloakLifetimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, false)
		tk := &simProc{name: "tk", tk: true}
		ctx := context.Background()
		rt := w.hubRefresh(u)
		// Refreshing every 9 minutes keeps a 10-minute idle session alive
		// until its 1-hour maximum; the access token never outlives it.
		for {
			time.Sleep(9 * time.Minute)
			tok, err := w.kc.grant(ctx, tk, rt)
			if err != nil {
				if _, body := grantBody(t, err); !strings.Contains(body, "not active") {
					t.Errorf("grant after the maximum = %s", body)
				}
				break
			}
			if limit := w.start.Add(time.Hour); tok.Expiry.After(limit) {
				t.Errorf("access token expires at %v, after the session maximum %v", tok.Expiry, limit)
			}
			rt = tok.RefreshToken
		}
		if got := time.Since(w.start); got < time.Hour || got > time.Hour+9*time.Minute {
			t.Errorf("session lasted %v, want its 1 h maximum", got)
		}
		w2, u2 := newModelWorld(t, false)
		time.Sleep(10*time.Minute + time.Second)
		_, err := w2.kc.grant(ctx, tk, w2.hubRefresh(u2))
		if _, body := grantBody(t, err); body != `{"error":"invalid_grant","error_description":"Token is not active"}` {
			t.Errorf("grant after the idle timeout = %s, want Token is not active", body)
		}
		if w2.kc.live(u2.login, time.Now()) {
			t.Errorf("session live after its idle timeout")
		}
	})
}

func TestSimKeycloakLogoutAndOutages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, false)
		tk := &simProc{name: "tk", tk: true}
		ctx := context.Background()
		now := time.Now()
		w.mu.Lock()
		w.kc.outages = []simOutage{{kind: "503", from: now, until: now.Add(time.Minute)},
			{kind: "network", from: now.Add(time.Minute), until: now.Add(2 * time.Minute)}}
		w.mu.Unlock()
		_, err := w.kc.grant(ctx, tk, w.hubRefresh(u))
		if status, _ := grantBody(t, err); status != http.StatusServiceUnavailable || keycloak.Classify(err) != keycloak.Unknown {
			t.Errorf("grant during a 503 outage = %v (%v), want a proxy's 503 page: an unknown outcome", err, keycloak.Classify(err))
		}
		time.Sleep(time.Minute)
		_, err = w.kc.grant(ctx, tk, w.hubRefresh(u))
		if !errors.As(err, new(*url.Error)) || keycloak.Classify(err) != keycloak.Transient {
			t.Errorf("grant while Keycloak is unreachable = %v, want a transient *url.Error", err)
		}
		time.Sleep(time.Minute)
		w.mu.Lock()
		w.kc.endSession(u.login, "logged out by an admin")
		w.mu.Unlock()
		_, err = w.kc.grant(ctx, tk, w.hubRefresh(u))
		if _, body := grantBody(t, err); body != `{"error":"invalid_grant","error_description":"Session not active"}` {
			t.Errorf("grant after an admin logout = %s, want Session not active", body)
		}
	})
}

func TestSimConcurrentGrantsAndAdmins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, true)
		tk := &simProc{name: "tk", tk: true}
		rt := w.hubRefresh(u)
		errs := make(chan error, 2)
		for _, p := range []*simProc{tk, w.hubProc} {
			go func() {
				_, err := w.kc.grant(context.Background(), p, rt)
				errs <- err
			}()
		}
		<-errs
		<-errs
		var got []string
		for _, v := range w.violations {
			got = append(got, v[:3])
		}
		if s := strings.Join(got, ","); !strings.Contains(s, "(c)") || !strings.Contains(s, "(g)") || !strings.Contains(s, "(f)") {
			t.Errorf("violations = %q, want (c) two grants at once, (g) an admin's token spent, (f) reuse", w.violations)
		}
		err := (&simHubConn{h: w.hub, p: tk}).write(context.Background(), "alice", nil)
		var herr *hubclient.APIError
		if !errors.As(err, &herr) || herr.Status != http.StatusForbidden || herr.Message != "Only admins can modify other admins" {
			t.Errorf("PATCH of an admin = %v, want 403 Only admins can modify other admins", err)
		}
	})
}

func TestSimHubDetectsLostUpdates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, u := newModelWorld(t, false)
		tk := &simProc{name: "tk", tk: true}
		c := &simHubConn{h: w.hub, p: tk}
		ctx := context.Background()
		user, err := c.read(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.write(ctx, "alice", nil); err != nil {
			t.Fatal(err)
		}
		if len(w.violations) != 1 || !strings.HasPrefix(w.violations[0], "(a)") {
			t.Errorf("clearing a live session: violations = %q, want (a)", w.violations)
		}
		if err := c.write(ctx, "alice", user.state); err != nil {
			t.Fatal(err)
		}
		if len(w.violations) != 2 || !strings.HasPrefix(w.violations[1], "(d)") {
			t.Errorf("tokens over a cleared auth_state: violations = %q, want (d)", w.violations)
		}
		if u.cleared || u.version != 3 {
			t.Errorf("after login, clear and write: cleared %t, version %d; want false, 3", u.cleared, u.version)
		}
	})
}
