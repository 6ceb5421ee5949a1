package spawnerhook

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

// requestError is a problem with the request itself, decided by a handler.
type requestError struct {
	status  int
	code    string
	message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, "bad_request", msg} }
func unauthorized(msg string) error {
	return &requestError{http.StatusUnauthorized, "unauthorized", msg}
}
func spawnSecretInvalid() error {
	return &requestError{http.StatusUnauthorized, "spawn_secret_invalid", "The spawn secret is wrong: check that the hub and tokenkeeper have the same TOKENKEEPER_SPAWN_SECRET."}
}
func forbidden(msg string) error { return &requestError{http.StatusForbidden, "forbidden", msg} }
func notConfigured(msg string) error {
	return &requestError{http.StatusNotFound, "not_configured", msg}
}
func unsupportedMediaType(msg string) error {
	return &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type", msg}
}

// errorBody is every error response.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// writeError is the one place that maps errors to HTTP statuses. Internal
// details go to the log, not to the caller.
func (h *handler) writeError(c *gin.Context, err error) {
	status, body := h.classify(err)
	if status >= 500 {
		h.log.Warn("request failed", "path", c.FullPath(), "status", status, "err", err)
	}
	c.Header("Cache-Control", "no-store")
	if status == http.StatusTooManyRequests {
		c.Header("Retry-After", "1")
	}
	c.AbortWithStatusJSON(status, body)
}

func (h *handler) classify(err error) (int, errorBody) {
	var rerr *requestError
	var herr *hubclient.APIError
	var merr *refresh.MalformedError
	var lerr *refresh.LogoutTokenError
	var jerr *serviceaccount.JobError
	var xerr *keycloak.ExchangeError
	var berr *keycloak.BrokerError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, hubclient.ErrBusy):
		return http.StatusTooManyRequests, errorBody{"busy", "Too many requests with tokens tokenkeeper has not seen yet; try again in a second."}
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, errorBody{"too_large", fmt.Sprintf("The request body is larger than %d bytes.", tooLarge.Limit)}
	case errors.As(err, &lerr), errors.Is(err, refresh.ErrReplayedLogout):
		return http.StatusBadRequest, errorBody{"invalid_logout_token", "The logout token is invalid or was already used."}
	case errors.As(err, new(*serviceaccount.JobPathError)):
		return http.StatusBadRequest, errorBody{"bad_request", "system and job_id must each be 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit."}
	case errors.Is(err, keycloak.ErrAudienceNotAllowed):
		return http.StatusForbidden, errorBody{"audience_not_allowed", "tokenkeeper hands out no token for this audience."}
	case errors.Is(err, keycloak.ErrProviderNotAllowed):
		return http.StatusForbidden, errorBody{"identity_provider_not_allowed", "tokenkeeper hands out no token of this identity provider."}
	case errors.As(err, &xerr):
		return http.StatusBadGateway, errorBody{"exchange_refused", fmt.Sprintf("Keycloak refused a token for audience %q: %s: %s",
			xerr.Audience, xerr.Code, xerr.Description)}
	case errors.As(err, &berr):
		return http.StatusBadGateway, errorBody{"idp_token_refused", fmt.Sprintf("Keycloak gave no token of identity provider %q (HTTP %d): %s",
			berr.Alias, berr.Status, berr.Message)}
	case errors.Is(err, refresh.ErrProviderTokenExpired):
		return http.StatusConflict, errorBody{"login_required", "The identity provider's token that Keycloak holds for this user has expired " +
			"and cannot be refreshed: log in to JupyterHub through that identity provider again."}
	case errors.As(err, new(*serviceaccount.AdminRolesError)):
		return http.StatusInternalServerError, errorBody{"misconfigured", "The service account holds Keycloak admin roles, so its token is not handed out; they belong to the admin client."}
	case errors.As(err, &jerr) && jerr.Status == http.StatusNotFound:
		return http.StatusNotFound, errorBody{"unknown_job", "The job API does not know this job."}
	case errors.As(err, &jerr):
		return http.StatusBadGateway, errorBody{"job_api_error", "The job API did not answer as expected."}
	case errors.As(err, &rerr):
		return rerr.status, errorBody{rerr.code, rerr.message}
	case errors.Is(err, refresh.ErrNoTokens), errors.Is(err, refresh.ErrSessionEnded):
		return http.StatusConflict, errorBody{"login_required", "The user has no valid Keycloak session: log in to JupyterHub again."}
	case errors.As(err, &merr):
		return http.StatusConflict, errorBody{"login_required", "The user's stored tokens are unusable (" + merr.Reason + "): log in to JupyterHub again."}
	case errors.As(err, &herr) && herr.Status == http.StatusNotFound:
		return http.StatusNotFound, errorBody{"unknown_user", "No such JupyterHub user."}
	case errors.Is(err, refresh.ErrHubAdmin):
		return http.StatusServiceUnavailable, errorBody{"hub_admin", "This user is a hub admin, whose tokens the hub refreshes on their own requests; " +
			"the current token has expired. Open the hub in a browser, then ask again."}
	case errors.Is(err, refresh.ErrStopping):
		return http.StatusServiceUnavailable, errorBody{"stopping", "tokenkeeper is restarting; try again shortly."}
	case errors.Is(err, refresh.ErrUnavailable):
		return http.StatusServiceUnavailable, errorBody{"unavailable", "Keycloak cannot issue a fresh token right now; try again shortly."}
	case errors.As(err, &herr):
		return http.StatusBadGateway, errorBody{"hub_error", "JupyterHub did not answer as expected."}
	case errors.As(err, new(*oauth2.RetrieveError)), errors.As(err, new(*url.Error)):
		return http.StatusServiceUnavailable, errorBody{"unavailable", "Keycloak or the job API cannot be reached right now; try again shortly."}
	default:
		return http.StatusInternalServerError, errorBody{"internal", "Internal error."}
	}
}
