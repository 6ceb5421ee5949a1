package spawnerhook

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// releaseGuard lets the logouts that the mass-failure guard holds back go
// ahead. Only a hub admin may: it is the answer to "Keycloak really did end
// all these sessions".
func (h *handler) releaseGuard(c *gin.Context) {
	id, err := h.identify(c)
	if err != nil {
		h.writeError(c, err)
		return
	}
	if !id.Admin {
		h.writeError(c, forbidden("Only a hub admin may release the mass-failure guard."))
		return
	}
	if err := h.ReleaseGuard(c.Request.Context()); err != nil {
		h.writeError(c, err)
		return
	}
	h.log.Warn("mass-failure guard released", "by", id.Name)
	c.JSON(http.StatusOK, gin.H{"released": true})
}
