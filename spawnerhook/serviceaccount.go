package spawnerhook

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
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
