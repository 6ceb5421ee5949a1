package sessionpage

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// maxForm bounds a POST's body: a CSRF token and two small fields.
const maxForm = 4 << 10

// callerKey is where session keeps the visitor for the handlers.
const callerKey = "tokenkeeper.sessionpage.caller"

// visitor is who a page load is for, from the hub's answer about the
// session's token, with the CSRF token of that session.
type visitor struct {
	hubclient.Identity
	csrf string
}

// may reports whether v may see and log out user: their own session, or
// with ScopeSessions for that user. Being a hub admin grants nothing.
func (v visitor) may(user string) bool {
	return user == v.Name || v.Allows(ScopeSessions, user)
}

// mayRefresh reports whether v may refresh user's tokens now.
func (v visitor) mayRefresh(user string) bool { return v.Allows(ScopeSessions, user) }

// seesAll reports whether v may see every user (the unfiltered scope).
func (v visitor) seesAll() bool { return v.Allows(ScopeSessions, "") }

// mayRelease reports whether v may release the guard (unfiltered).
func (v visitor) mayRelease() bool { return v.Allows(ScopeGuard, "") }

// session identifies the visitor of every view and action by the
// session cookie's token, with one Identify, and keeps them for the
// handler. Without a session a view starts the login; a POST must also
// come from the page itself (origin and CSRF token), checked before the
// hub is asked anything.
func (p *Page) session(c *gin.Context) {
	token, ok := p.readSession(c.Request)
	var err error
	switch {
	case c.Request.Method == http.MethodPost:
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxForm)
		err = p.checkPost(c.Request, token, ok)
	case !ok:
		p.startLogin(c, c.Request.URL.RequestURI())
		return
	}
	var v visitor
	if err == nil {
		v, err = p.identify(c, token)
	}
	if err != nil {
		p.writeError(c, err)
		return
	}
	c.Set(callerKey, v)
	c.Next()
}

// identify asks the hub (Identify, cached) who owns token.
func (p *Page) identify(c *gin.Context, token string) (visitor, error) {
	id, err := p.d.Identify(c.Request.Context(), token)
	if err != nil {
		return visitor{}, fmt.Errorf("identify the page's visitor: %w", err)
	}
	if id.Kind != "user" || id.Name == "" {
		return visitor{}, forbidden("Only hub users log in to this page.")
	}
	return visitor{Identity: id, csrf: p.csrfToken(token)}, nil
}

// caller is the visitor session found.
func caller(c *gin.Context) visitor {
	v, _ := c.Get(callerKey)
	return v.(visitor)
}

// knownCaller is the visitor, if session found one.
func knownCaller(c *gin.Context) (visitor, bool) {
	v, ok := c.Get(callerKey)
	if !ok {
		return visitor{}, false
	}
	return v.(visitor), true
}

// csrfToken is the CSRF token of the session holding token:
// HMAC(Key, "csrf" + SHA-256 of token), in hex. It changes with each
// login and never shows the token.
func (p *Page) csrfToken(token string) string {
	digest := sha256.Sum256([]byte(token))
	m := hmac.New(sha256.New, p.d.Key)
	m.Write([]byte("csrf"))
	m.Write(digest[:])
	return hex.EncodeToString(m.Sum(nil))
}

// checkPost refuses a POST from another origin, one without a session,
// and one without the session's CSRF token in its _xsrf field.
func (p *Page) checkPost(r *http.Request, token string, ok bool) error {
	if origins := r.Header.Values("Origin"); len(origins) > 1 || (len(origins) == 1 && origins[0] != browserOrigin(r)) {
		return forbidden("This form was sent from another site.")
	}
	if !ok {
		return forbidden("This form was sent without a session: open the page again.")
	}
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("read the form: %w", err)
	}
	sent := r.PostForm["_xsrf"]
	if len(sent) != 1 || !hmac.Equal([]byte(sent[0]), []byte(p.csrfToken(token))) {
		return forbidden("This form's CSRF token is missing or wrong: open the page again.")
	}
	return nil
}
