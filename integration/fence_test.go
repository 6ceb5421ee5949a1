//go:build integration

package integration

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestBackchannelLogoutWhileTheHubFailsTakesEffectLater: Keycloak's
// back-channel logout reaches tokenkeeper while every hub request about the
// user fails. tokenkeeper records it (Keycloak does not send it again),
// serves the user's token no more, and logs the user out once the hub
// answers again.
func TestBackchannelLogoutWhileTheHubFailsTakesEffectLater(t *testing.T) {
	ctx := context.Background()
	user := testUsers(t, "bchub", 1)[0]
	token := loggedIn(t, "", user)
	if status, body := freshToken(t, token, ""); status != http.StatusOK {
		t.Fatalf("fresh-token before the logout: %d %v", status, body)
	}
	g := hubProxy.Gate(func(q *GatedRequest) bool { return q.User == user })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the hub fails every request about the user
		for {
			select {
			case q := <-g.Requests():
				q.Fail()
			case <-stop:
				return
			}
		}
	})
	if err := stack.KeycloakLogout(ctx, user); err != nil {
		t.Fatal(err)
	}
	err := Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return len(tokenkeeperLog(t, "logout recorded; the hub could not be read, the next sweep carries it out", user)) > 0, nil
	})
	if err != nil {
		t.Fatalf("tokenkeeper did not record the back-channel logout while the hub failed: %v", err)
	}
	for range 3 {
		if status, _ := freshToken(t, token, "?min_valid=0"); status == http.StatusOK {
			t.Error("fresh-token served the token of a session Keycloak logged out, while the hub failed")
		}
	}
	if st, err := stack.AuthState(ctx, user); err != nil || len(st) == 0 {
		t.Fatalf("auth_state while the hub failed tokenkeeper's requests: %v, %v; want it still there", st, err)
	}
	close(stop)
	wg.Wait()
	g.Close()
	back := time.Now()
	err = Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		st, err := stack.AuthState(ctx, user)
		return err == nil && len(st) == 0, err
	})
	if err != nil {
		t.Fatalf("%s not logged out after the hub answered again: %v", user, err)
	}
	t.Logf("logged out %s after the hub answered again", time.Since(back).Round(100*time.Millisecond))
	if l := tokenkeeperLog(t, "logged out", user); len(l) != 1 || l[0].Reason != "keycloak back-channel logout" {
		t.Errorf("logout log lines for %s = %+v, want one back-channel logout", user, l)
	}
}
