package sessionpage

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestStateCookiesAreBounded: logins started and never finished leave
// at most maxStateCookies state cookies in the browser.
func TestStateCookiesAreBounded(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for range 3 * maxStateCookies {
		b.get(testPrefix + "ui/")
		if n := len(stateCookies(cookieRequest(b))); n > maxStateCookies {
			t.Fatalf("%d state cookies, want at most %d", n, maxStateCookies)
		}
	}
}

// TestFormsAreBounded refuses a POST body over maxForm before acting.
func TestFormsAreBounded(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login("alice", testPrefix+"ui/")
	form := url.Values{"_xsrf": {b.csrf()}, "pad": {strings.Repeat("x", maxForm)}}
	rec := b.post(testPrefix+"ui/users/alice/logout", form, nil)
	if rec.Code != http.StatusRequestEntityTooLarge || len(e.engine.recorded()) != 0 {
		t.Errorf("status %d, calls %v; want 413 and none", rec.Code, e.engine.recorded())
	}
}

// TestRoutesNeedThePrefixGroup: mounted elsewhere, the callback the hub
// knows would be missing.
func TestRoutesNeedThePrefixGroup(t *testing.T) {
	e := newEnv(t)
	defer func() {
		if recover() == nil {
			t.Errorf("Routes on another group did not panic")
		}
	}()
	e.page.Routes(gin.New().Group("/services/other"))
}
