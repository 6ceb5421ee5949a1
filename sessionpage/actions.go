package sessionpage

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
)

// actionTimeout bounds an action. An action is not cut short when the
// browser goes away: a logout half done is worse than one done.
const actionTimeout = 30 * time.Second

func actionContext(c *gin.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(c.Request.Context()), actionTimeout)
}

// logout logs a user out everywhere: the visitor themselves (this page's
// session included), or with ScopeSessions for that user anyone.
func (p *Page) logout(c *gin.Context) {
	name, err := p.target(c, visitor.may)
	if err != nil {
		p.writeError(c, err)
		return
	}
	by := caller(c).Name
	ctx, cancel := actionContext(c)
	defer cancel()
	if err := p.d.LogoutEverywhere(ctx, name, by); err != nil {
		p.writeError(c, failed("log %q out everywhere: %w", name, err))
		return
	}
	p.log.Info("logged out everywhere from the service page", "user", name, "by", by)
	if name == by {
		p.clearSession(c.Writer, c.Request) // everywhere includes this page
	}
	p.done(c, p.back(c.PostForm("back"), name), "logged-out")
}

// refresh refreshes a user's tokens now; it needs ScopeSessions for that
// user, even for one's own.
func (p *Page) refresh(c *gin.Context) {
	name, err := p.target(c, visitor.mayRefresh)
	if err != nil {
		p.writeError(c, err)
		return
	}
	ctx, cancel := actionContext(c)
	defer cancel()
	if err := p.d.RefreshNow(ctx, name); err != nil {
		p.writeError(c, failed("refresh %q now: %w", name, err))
		return
	}
	p.log.Info("refreshed from the service page", "user", name, "by", caller(c).Name)
	p.done(c, p.back(c.PostForm("back"), name), "refreshed")
}

// releaseGuard lets the logouts the guard holds go ahead; it needs
// ScopeGuard, unfiltered. Being a hub admin is not enough.
func (p *Page) releaseGuard(c *gin.Context) {
	v := caller(c)
	if !v.mayRelease() {
		p.writeError(c, forbidden("Releasing the guard needs the scope "+ScopeGuard+"."))
		return
	}
	ctx, cancel := actionContext(c)
	defer cancel()
	if err := p.d.ReleaseGuard(ctx); err != nil {
		p.writeError(c, failed("release the guard: %w", err))
		return
	}
	p.log.Warn("mass-failure guard released from the service page", "by", v.Name)
	p.done(c, p.d.Prefix+"ui/users", "released")
}

// back is the view an action on user came from, by the form's back
// field: the own view, the admin page, or (by default) user's view.
func (p *Page) back(back, user string) string {
	switch back {
	case "own":
		return p.d.Prefix + "ui/"
	case "users":
		return p.d.Prefix + "ui/users"
	}
	return userURL(p.d.Prefix, user)
}

// done sends the browser back to view with the action's flash (PRG).
func (p *Page) done(c *gin.Context, view, flash string) {
	c.Redirect(http.StatusSeeOther, view+"?"+url.Values{"done": {flash}}.Encode())
}
