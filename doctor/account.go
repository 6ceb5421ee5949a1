package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

const nameServiceAccount = "service account"

func serviceAudienceName(a string) string { return "service token exchange for audience " + a }

// serviceAccountChecks get the service account's token as service-token
// hands it out (refused when it carries admin roles), then exchange it for
// each service-token audience.
func serviceAccountChecks(ctx context.Context, d Deps) []Result {
	if d.ServiceToken == nil {
		return []Result{skipped(nameServiceAccount, "not configured (service_account_client_id)")}
	}
	first := checkServiceAccount(ctx, d)
	out := []Result{first}
	for _, aud := range d.Config.ServiceTokenAudiences {
		if first.Status != OK {
			out = append(out, skipped(serviceAudienceName(aud), "the service account got no token it may hand out"))
			continue
		}
		out = append(out, checkServiceAudience(ctx, aud, d))
	}
	return out
}

func checkServiceAccount(ctx context.Context, d Deps) Result {
	id := quote(d.Config.ServiceAccountClientID)
	_, err := d.ServiceToken(ctx, "")
	var roles *serviceaccount.AdminRolesError
	var rerr *oauth2.RetrieveError
	switch {
	case err == nil:
		return ok(nameServiceAccount, "client "+id+" gets a token that carries no admin roles")
	case errors.As(err, &roles):
		return fail(nameServiceAccount, fmt.Sprintf("client %s's token carries admin roles (%s); tokenkeeper refuses to hand it out",
			id, strings.Join(roles.Roles, ", ")),
			"take these roles away from the service-account user of client "+id+
				" (Clients → Service accounts roles); admin calls belong to admin_client_id")
	case errors.As(err, &rerr) && clientRefused(rerr):
		return fail(nameServiceAccount, "Keycloak refused client "+id+": "+describeRetrieve(rerr),
			"set TOKENKEEPER_SERVICE_ACCOUNT_SECRET (or service_account_secret_file) to the secret of client "+id+
				", whose Service accounts roles must be on")
	}
	return fail(nameServiceAccount, "client "+id+" got no token: "+describe(err),
		"see Keycloak's log; the client must exist, be enabled and have Service accounts roles on")
}

func checkServiceAudience(ctx context.Context, aud string, d Deps) Result {
	name, id := serviceAudienceName(aud), quote(d.Config.ServiceAccountClientID)
	_, err := d.ServiceToken(ctx, aud)
	var xerr *keycloak.ExchangeError
	switch {
	case err == nil:
		return ok(name, "Keycloak exchanged client "+id+"'s token for one of audience "+quote(aud))
	case errors.As(err, &xerr):
		return fail(name, fmt.Sprintf("Keycloak refused: HTTP %d %s: %s", xerr.Status, xerr.Code, xerr.Description),
			fmt.Sprintf("turn on Standard token exchange on client %s and put %s into its tokens' audience "+
				"(an Audience mapper on the client or a default client scope of it)", id, quote(aud)))
	}
	return fail(name, "no exchanged token: "+describe(err), "see Keycloak's log")
}
