package spawnerhook

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

// ScopeServiceAccount lets a caller have the service account's token and job status.
const ScopeServiceAccount = "custom:tokenkeeper:service-account"

// serviceTokenResponse is the body of a successful service-token call.
type serviceTokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	ExpiresIn   int64  `json:"expires_in"`
}

// serviceToken hands out the service account's token, narrowed to one
// audience with ?audience=A.
func (h *handler) serviceToken(c *gin.Context) {
	if err := requireScope(c, ScopeServiceAccount); err != nil {
		h.writeError(c, err)
		return
	}
	if h.ServiceToken == nil {
		h.writeError(c, notConfigured("No service account is configured."))
		return
	}
	tok, err := h.ServiceToken(c.Request.Context(), c.Query("audience"))
	if err != nil {
		h.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, serviceTokenResponse{
		AccessToken: tok.AccessToken, TokenType: "Bearer",
		ExpiresAt: tok.Expiry.UTC().Format(time.RFC3339),
		ExpiresIn: int64(tok.Expiry.Sub(h.Now()).Seconds()),
	})
}

// jobStatus checks a job with the service account. It takes no user: the
// job API is asked as tokenkeeper's service account, on nobody's behalf, so
// a user parameter would promise a check that is not made.
func (h *handler) jobStatus(c *gin.Context) {
	if err := requireScope(c, ScopeServiceAccount); err != nil {
		h.writeError(c, err)
		return
	}
	if h.JobStatus == nil {
		h.writeError(c, notConfigured("No job API is configured."))
		return
	}
	system, id := c.Query("system"), c.Query("job_id")
	if _, ok := c.GetQuery("user"); ok {
		h.writeError(c, badRequest("job-status takes no user: jobs are checked as tokenkeeper's service account."))
		return
	}
	if system == "" || id == "" {
		h.writeError(c, badRequest("system and job_id are required."))
		return
	}
	if err := serviceaccount.CheckJobPath(system, id); err != nil {
		h.writeError(c, err)
		return
	}
	st, err := h.JobStatus(c.Request.Context(), system, id)
	if err != nil {
		h.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// requireScope checks that the caller holds scope unfiltered.
func requireScope(c *gin.Context, scope string) error {
	if !caller(c).Allows(scope, "") {
		return forbidden("This token lacks the scope " + scope + ".")
	}
	return nil
}

// backchannelLogout takes Keycloak's logout token from a form-encoded body;
// Keycloak's signature on it is the authentication.
func (h *handler) backchannelLogout(c *gin.Context) {
	raw, err := logoutToken(c.Request)
	if err != nil {
		h.writeError(c, err)
		return
	}
	users, err := h.BackchannelLogout(c.Request.Context(), raw)
	if err != nil {
		h.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"logged_out": len(users)})
}

// logoutToken reads logout_token from an application/x-www-form-urlencoded
// body (bounded by limitBody), never from the query or a multipart body.
func logoutToken(r *http.Request) (string, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return "", unsupportedMediaType("Send logout_token in an application/x-www-form-urlencoded body.")
	}
	if err := r.ParseForm(); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return "", fmt.Errorf("logout request: %w", err)
		}
		return "", badRequest("The request body is not a valid form.")
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		return "", badRequest("logout_token is required.")
	}
	return raw, nil
}

// statusResponse is the body of a status call.
type statusResponse struct {
	User          string                   `json:"user"`
	Status        string                   `json:"status"`
	Reason        string                   `json:"reason,omitempty"`
	NextRefresh   string                   `json:"next_refresh,omitempty"`
	AccessExpiry  string                   `json:"access_expires_at,omitempty"`
	RefreshExpiry string                   `json:"refresh_expires_at,omitempty"`
	Failures      int                      `json:"failures"`
	Sessions      []serviceaccount.Session `json:"keycloak_sessions,omitempty"`
}

// status shows what tokenkeeper knows of a user and, with the service
// account, their Keycloak sessions. It needs ScopeTokens for that user.
func (h *handler) status(c *gin.Context) {
	user := c.Query("user")
	switch {
	case user == "":
		h.writeError(c, badRequest("user is required."))
		return
	case !caller(c).Allows(ScopeTokens, user):
		h.writeError(c, forbidden("This token lacks the scope "+ScopeTokens+" for "+user+"."))
		return
	}
	st, err := h.Status(c.Request.Context(), user)
	if err != nil {
		h.writeError(c, err)
		return
	}
	resp := statusResponse{User: user, Status: string(st.Status), Reason: st.Reason, Failures: st.Failures,
		NextRefresh: rfc3339(st.Due), AccessExpiry: rfc3339(st.AccessExpiry), RefreshExpiry: rfc3339(st.RefreshExpiry)}
	if h.Sessions != nil && st.Subject != "" {
		if resp.Sessions, err = h.Sessions(c.Request.Context(), st.Subject); err != nil {
			h.log.Warn("keycloak sessions", "user", user, "err", err)
		}
	}
	c.JSON(http.StatusOK, resp)
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
