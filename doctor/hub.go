package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

const nameHub = "hub scopes"

// checkHub asks the hub who tokenkeeper's token is and wants exactly the
// scopes tokenkeeper's settings need: a missing one fails, a powerful one
// it does not need warns.
func checkHub(ctx context.Context, d Deps) Result {
	cfg := d.Config
	id, err := d.HubSelf(ctx)
	var aerr *hubclient.APIError
	switch {
	case errors.As(err, &aerr):
		return fail(nameHub, "the hub refused tokenkeeper's token: "+describe(err),
			"JUPYTERHUB_API_TOKEN must be the token of tokenkeeper's service, which JupyterHub sets for a managed service "+
				"(tokenkeeper_hub.configure registers it)")
	case err != nil:
		return fail(nameHub, "the hub did not answer at "+cfg.Hub.APIURL+": "+describe(err),
			"check JUPYTERHUB_API_URL (or TOKENKEEPER_HUB_API_URL) and that the hub runs")
	}
	who := fmt.Sprintf("%s %q", id.Kind, id.Name)
	var missing []string
	for _, s := range d.NeededScopes {
		if !slices.Contains(id.Scopes, s) {
			missing = append(missing, s)
		}
	}
	roles := "give tokenkeeper's service the roles tokenkeeper_hub.configure() makes for these settings " +
		"(tokenkeeper_hub.service_roles) in jupyterhub_config.py, and restart the hub"
	switch {
	case len(missing) > 0:
		return fail(nameHub, fmt.Sprintf("the token of %s lacks %s", who, strings.Join(missing, ", ")), roles)
	case cfg.RefreshAdmins && !id.Admin:
		return fail(nameHub, "refresh_admins is on but "+who+" is not a hub admin, and the hub refuses to store admins' tokens otherwise",
			"configure(refresh_admins=True) in jupyterhub_config.py grants it, or turn refresh_admins off")
	}
	if excess := d.ExcessScopes(id); len(excess) > 0 {
		return warn(nameHub, fmt.Sprintf("the token of %s holds more than its settings need: %s", who, strings.Join(excess, ", ")),
			"take them away from tokenkeeper's role in jupyterhub_config.py, or turn on the setting that needs them")
	}
	return ok(nameHub, fmt.Sprintf("the hub answers; the token of %s holds the scopes the settings need (%s) and no more",
		who, strings.Join(d.NeededScopes, ", ")))
}
