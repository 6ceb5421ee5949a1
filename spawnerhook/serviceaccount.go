package spawnerhook

import (
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

func (h *handler) serviceToken(c *gin.Context) {
	if err := h.requireScope(c, ScopeServiceAccount); err != nil {
		h.writeError(c, err)
		return
	}
	if h.ServiceToken == nil {
		h.writeError(c, notConfigured("No service account is configured."))
		return
	}
	tok, err := h.ServiceToken(c.Request.Context())
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

func (h *handler) jobStatus(c *gin.Context) {
	if err := h.requireScope(c, ScopeServiceAccount); err != nil {
		h.writeError(c, err)
		return
	}
	if h.JobStatus == nil {
		h.writeError(c, notConfigured("No job API is configured."))
		return
	}
	system, id := c.Query("system"), c.Query("job_id")
	if system == "" || id == "" {
		h.writeError(c, badRequest("system and job_id are required."))
		return
	}
	st, err := h.JobStatus(c.Request.Context(), system, id)
	if err != nil {
		h.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// requireScope identifies the caller and checks it holds scope unfiltered.
func (h *handler) requireScope(c *gin.Context, scope string) error {
	id, err := h.identify(c)
	if err != nil {
		return err
	}
	if !id.Allows(scope, "") {
		return forbidden("This token lacks the scope " + scope + ".")
	}
	return nil
}

func (h *handler) backchannelLogout(c *gin.Context) {
	raw := c.PostForm("logout_token")
	if raw == "" {
		h.writeError(c, badRequest("logout_token is required."))
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
	id, err := h.identify(c)
	switch {
	case err != nil:
		h.writeError(c, err)
		return
	case user == "":
		h.writeError(c, badRequest("user is required."))
		return
	case !id.Allows(ScopeTokens, user):
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
