package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

const (
	nameAdmin     = "admin client"
	nameRotation  = "refresh token rotation"
	nameMaxReuse  = "refresh token max reuse"
	nameLifespans = "session and token lifespans"
	nameSID       = "sid in access tokens"
)

// adminView is what the admin client could read: the realm's settings and
// the hub client's, each with the error that kept it from being read.
type adminView struct {
	results []Result // the admin client's line
	why     string   // why nothing could be read through the admin client
	realm   serviceaccount.RealmSettings
	realmEr error
	hub     serviceaccount.ClientSettings
	hubErr  error
}

// newAdminView reads the realm and the hub client through the admin client.
func newAdminView(ctx context.Context, d Deps) adminView {
	if d.Admin == nil {
		why := "no admin client (admin_client_id), so the realm's and the hub client's settings cannot be read"
		return adminView{why: why, results: []Result{skipped(nameAdmin, why)}}
	}
	a := adminView{}
	a.realm, a.realmEr = d.Admin.Realm(ctx)
	if a.realmEr != nil && !errors.As(a.realmEr, new(*serviceaccount.AdminError)) {
		a.why = "the admin client got no token"
		a.results = []Result{fail(nameAdmin, "the admin client got no token: "+describe(a.realmEr),
			fmt.Sprintf("set TOKENKEEPER_ADMIN_CLIENT_SECRET (or admin_client_secret_file) to the secret of client %q, "+
				"whose Service accounts roles must be on", d.Config.AdminClientID))}
		return a
	}
	a.hub, a.hubErr = d.Admin.Client(ctx, d.Config.ClientID)
	a.results = []Result{ok(nameAdmin, fmt.Sprintf("client %q gets a token for the admin API", d.Config.AdminClientID))}
	return a
}

// realmUnreadable says why the realm's settings cannot be checked, or "".
func (a adminView) realmUnreadable() string {
	switch {
	case a.why != "":
		return a.why
	case a.realmEr != nil:
		return "the admin client may not read the realm (" + describe(a.realmEr) + "): give its service account the realm-management role view-realm"
	case !a.realm.Readable():
		return "the admin client sees only the realm's name: give its service account the realm-management role view-realm"
	}
	return ""
}

// hubUnreadable says why the hub client's settings cannot be checked, or "".
func (a adminView) hubUnreadable(clientID string) string {
	var aerr *serviceaccount.AdminError
	switch {
	case a.why != "":
		return a.why
	case errors.As(a.hubErr, &aerr) && aerr.Status == http.StatusNotFound:
		return fmt.Sprintf("the realm has no client %q (client_id)", clientID)
	case a.hubErr != nil:
		return "the admin client may not read clients (" + describe(a.hubErr) + "): give its service account the realm-management role view-clients"
	}
	return ""
}

// realmChecks are the rotation, Max Reuse and lifespan checks.
func realmChecks(a adminView, d Deps) []Result {
	if why := a.realmUnreadable(); why != "" {
		return []Result{skipped(nameRotation, why), skipped(nameMaxReuse, why), skipped(nameLifespans, why)}
	}
	return []Result{
		checkRotation(a.realm),
		checkMaxReuse(a.realm, d.Config.RefreshTokenMaxReuse),
		checkLifespans(a.realm, a.hub.Attributes, d.Config),
	}
}

// checkRotation wants Revoke Refresh Token on.
func checkRotation(r serviceaccount.RealmSettings) Result {
	if *r.RevokeRefreshToken {
		return ok(nameRotation, "Revoke Refresh Token is on: each refresh token is spent once")
	}
	return fail(nameRotation, "Revoke Refresh Token is off: every refresh token ever issued stays usable until it expires, "+
		"so a copy taken from the hub's database outlives every refresh",
		"in Keycloak, Realm settings → Tokens: turn on Revoke Refresh Token with Refresh Token Max Reuse 1, "+
			"and set refresh_token_max_reuse (TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE) to 1")
}

// checkMaxReuse compares the realm's Refresh Token Max Reuse with
// refresh_token_max_reuse: spending beyond the realm's makes Keycloak end
// the hub client's session.
func checkMaxReuse(r serviceaccount.RealmSettings, configured int) Result {
	realm := 0
	if r.RefreshTokenMaxReuse != nil {
		realm = *r.RefreshTokenMaxReuse
	}
	fix := fmt.Sprintf("set refresh_token_max_reuse (TOKENKEEPER_REFRESH_TOKEN_MAX_REUSE) to the realm's %d; 1 on both sides is best", realm)
	switch {
	case !*r.RevokeRefreshToken:
		return ok(nameMaxReuse, "not used while rotation is off")
	case configured > realm:
		return fail(nameMaxReuse, fmt.Sprintf("refresh_token_max_reuse is %d but the realm allows %d: after a lost answer "+
			"tokenkeeper would spend a token Keycloak no longer accepts, and Keycloak would end the hub client's session", configured, realm), fix)
	case configured < realm:
		return warn(nameMaxReuse, fmt.Sprintf("refresh_token_max_reuse is %d, the realm allows %d: after a lost answer "+
			"tokenkeeper asks introspection instead of spending again, and may log a live session out", configured, realm), fix)
	case realm == 0:
		return warn(nameMaxReuse, "0 in the realm and in tokenkeeper: a grant whose answer is lost logs its user out of the hub",
			"set Refresh Token Max Reuse to 1 in the realm and refresh_token_max_reuse to 1")
	}
	return ok(nameMaxReuse, fmt.Sprintf("%d in the realm and in tokenkeeper", realm))
}

// checkLifespans wants the session idle timeout to outlast what a sweep
// needs to refresh, and the access token lifespan within 30 s – 1 h. The
// hub client's own overrides (attributes) win over the realm's.
func checkLifespans(r serviceaccount.RealmSettings, attrs map[string]string, cfg config.Config) Result {
	access := override(attrs, "access.token.lifespan", *r.AccessTokenLifespan)
	idle := lower(attrs, "client.session.idle.timeout", *r.SSOSessionIdle)
	maxLife := 0
	if r.SSOSessionMax != nil {
		maxLife = lower(attrs, "client.session.max.lifespan", *r.SSOSessionMax)
	}
	detail := fmt.Sprintf("access token %s, session idle %s, session max %s", secs(access), secs(idle), secs(maxLife))
	need := time.Duration(cfg.SweepInterval) + 3*time.Duration(cfg.HTTPTimeout)
	switch {
	case secs(idle) <= need:
		return fail(nameLifespans, detail+fmt.Sprintf(": sessions idle out before a sweep (every %s, %s per request) can refresh them",
			cfg.SweepInterval, cfg.HTTPTimeout), fmt.Sprintf("raise SSO Session Idle well above %s, or lower sweep_interval", need))
	case access < 30 || access > 3600:
		return warn(nameLifespans, detail+": the access token lifespan is outside 30 s – 1 h",
			"set Access Token Lifespan between 30 s and 1 h (Realm settings → Tokens)")
	case maxLife > 0 && access >= maxLife:
		return warn(nameLifespans, detail+": access tokens are cut at the session's maximum",
			"make SSO Session Max much longer than Access Token Lifespan")
	}
	return ok(nameLifespans, detail)
}

// override returns the client attribute key in seconds when set above 0,
// else def.
func override(attrs map[string]string, key string, def int) int {
	if v, err := strconv.Atoi(attrs[key]); err == nil && v > 0 {
		return v
	}
	return def
}

// lower returns the client attribute key when set above 0 and below def
// (client session timeouts only shorten the realm's), else def.
func lower(attrs map[string]string, key string, def int) int {
	return min(def, override(attrs, key, def))
}

func secs(n int) time.Duration { return time.Duration(n) * time.Second }

// checkSID wants the hub client's access tokens to carry sid: Keycloak's
// basic client scope, or a mapper of the claim, among its defaults.
func checkSID(a adminView, d Deps) Result {
	id := d.Config.ClientID
	if d.Admin == nil {
		return warn(nameSID, "not checked: no admin client (admin_client_id)",
			fmt.Sprintf("make sure client %q has Keycloak's basic client scope as a Default scope; "+
				"tokenkeeper's health shows tokens_without_sid when it does not", id))
	}
	if why := a.hubUnreadable(id); why != "" {
		return skipped(nameSID, why)
	}
	hasSID := slices.ContainsFunc(a.hub.Mappers, func(m serviceaccount.Mapper) bool { return m.Claim == "sid" })
	if slices.Contains(a.hub.DefaultScopes, "basic") || hasSID {
		return ok(nameSID, fmt.Sprintf("client %q has the basic client scope by default", id))
	}
	return fail(nameSID, fmt.Sprintf("client %q lacks Keycloak's basic client scope among its default scopes, so its tokens carry no sid: "+
		"a back-channel logout of one session logs out all of that user's sessions", id),
		fmt.Sprintf("add the client scope basic to client %q as a Default scope (Clients → %s → Client scopes → Add client scope)", id, id))
}

// describe is an error's text, clipped.
func describe(err error) string { return clip(err.Error()) }
