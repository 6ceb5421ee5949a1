package spawnerhook

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// ScopeGuard lets a caller release the mass-failure guard. Nothing holds it
// by default: an admin grants it on purpose, to the people who decide that
// Keycloak really did end the sessions the guard holds.
const ScopeGuard = "custom:tokenkeeper:guard"

// releaseGuard lets the logouts that the mass-failure guard holds back go
// ahead. It needs ScopeGuard (authenticate has checked the access scope):
// being a hub admin is not enough, since any token of an admin (their
// server's, one with no scopes) would do.
func (h *handler) releaseGuard(c *gin.Context) {
	if err := requireScope(c, ScopeGuard); err != nil {
		h.writeError(c, err)
		return
	}
	if err := h.ReleaseGuard(c.Request.Context()); err != nil {
		h.writeError(c, err)
		return
	}
	h.log.Warn("mass-failure guard released", "by", caller(c).Name)
	c.JSON(http.StatusOK, gin.H{"released": true})
}
