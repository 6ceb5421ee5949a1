package sessionpage

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// requestError is a problem with the request itself, decided by a
// handler; its message is shown.
type requestError struct {
	status  int
	message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, msg} }
func forbidden(msg string) error  { return &requestError{http.StatusForbidden, msg} }

// writeError is the one place that maps errors to what the browser gets:
// a token the hub refuses ends the session and starts a new login;
// anything else is a page with a status and a fixed text (internal
// details go to the log).
func (p *Page) writeError(c *gin.Context, err error) {
	if loginAgain(err) {
		p.clearSession(c.Writer, c.Request)
		p.startLogin(c, retryView(c, p.d.Prefix))
		return
	}
	status, msg := classify(err)
	if status >= 500 {
		p.log.Warn("service page request failed", "path", c.FullPath(), "status", status, "err", err)
	}
	p.render(c, status, pageKind(status), message{Text: msg, Retry: p.d.Prefix + "ui/"})
	c.Abort()
}

// actionError is an action's failure: a hub refusal inside it is about
// what the action asked of the hub, not about the visitor's token.
type actionError struct{ err error }

func (e *actionError) Error() string { return e.err.Error() }
func (e *actionError) Unwrap() error { return e.err }

// failed marks err as an action's failure.
func failed(format string, args ...any) error { return &actionError{fmt.Errorf(format, args...)} }

// loginAgain reports whether err says the session's token no longer
// counts: the hub refused it (401, 403) when asked who the visitor is.
func loginAgain(err error) bool {
	var herr *hubclient.APIError
	return !errors.As(err, new(*actionError)) &&
		errors.As(err, &herr) && (herr.Status == http.StatusUnauthorized || herr.Status == http.StatusForbidden)
}

// retryView is the view to come back to after logging in again: the one
// asked for, or for a POST the own view.
func retryView(c *gin.Context, prefix string) string {
	if c.Request.Method == http.MethodGet {
		return c.Request.URL.RequestURI()
	}
	return prefix + "ui/"
}

// pageKind is the data-tk-page of an error page.
func pageKind(status int) string {
	if status == http.StatusForbidden {
		return "forbidden"
	}
	return "error"
}

// classify maps err to a status and the text shown.
func classify(err error) (int, string) {
	var rerr *requestError
	var terr *tokenError
	var herr *hubclient.APIError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &rerr):
		return rerr.status, rerr.message
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("The form is larger than %d bytes.", tooLarge.Limit)
	case errors.Is(err, hubclient.ErrBusy):
		return http.StatusTooManyRequests, "The hub is busy; try again in a second."
	case errors.As(err, &terr):
		return http.StatusBadGateway, fmt.Sprintf("The hub did not finish the login (HTTP %d, %s). Log in again.", terr.Status, terr.Code)
	case errors.Is(err, refresh.ErrNotLoggedOut):
		return http.StatusConflict, "The hub holds no tokens tokenkeeper may clear for this user (none, or a hub admin's); " +
			"their Keycloak session and token files were ended all the same."
	case errors.Is(err, refresh.ErrNoTokens), errors.Is(err, refresh.ErrSessionEnded):
		return http.StatusConflict, "The user has no Keycloak session to refresh: they must log in to the hub again."
	case errors.Is(err, refresh.ErrHubAdmin):
		return http.StatusConflict, "This user is a hub admin: the hub refreshes their tokens on their own requests."
	case errors.Is(err, refresh.ErrUserGone), errors.As(err, &herr) && herr.Status == http.StatusNotFound:
		return http.StatusNotFound, "The hub has no such user."
	case errors.Is(err, refresh.ErrStopping):
		return http.StatusServiceUnavailable, "tokenkeeper is restarting; try again shortly."
	case errors.Is(err, refresh.ErrUnavailable):
		return http.StatusServiceUnavailable, "Keycloak cannot be reached right now; try again shortly."
	case errors.As(err, &herr):
		return http.StatusBadGateway, "The hub did not answer as expected; try again shortly."
	case errors.As(err, new(*url.Error)):
		return http.StatusBadGateway, "The hub cannot be reached right now; try again shortly."
	default:
		return http.StatusInternalServerError, "Internal error; tokenkeeper's log has the details."
	}
}
