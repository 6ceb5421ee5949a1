package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

const (
	nameBackchannel      = "back-channel logout"
	nameBackchannelReach = "back-channel logout reachable"
)

func audienceName(a string) string { return "token exchange for audience " + a }

func providerName(p string) string { return "stored tokens of identity provider " + p }

// backchannelChecks check the hub client's back-channel logout settings,
// then whether the URL answers from here.
func backchannelChecks(ctx context.Context, a adminView, d Deps) []Result {
	if d.Admin == nil {
		why := "no admin client (admin_client_id): make sure client " + quote(d.Config.ClientID) +
			" sends back-channel logouts to tokenkeeper's " + d.Config.Hub.Prefix + "backchannel-logout"
		return []Result{skipped(nameBackchannel, why), skipped(nameBackchannelReach, "the URL Keycloak uses is not known")}
	}
	if why := a.hubUnreadable(d.Config.ClientID); why != "" {
		return []Result{skipped(nameBackchannel, why), skipped(nameBackchannelReach, why)}
	}
	u := a.hub.Attributes["backchannel.logout.url"]
	out := []Result{checkBackchannel(a.hub, u, d)}
	if u == "" {
		return append(out, skipped(nameBackchannelReach, "no back-channel logout URL is set"))
	}
	return append(out, checkBackchannelReach(ctx, u, d))
}

// checkBackchannel wants a back-channel logout URL naming tokenkeeper's
// endpoint, with the session id, and front-channel logout off.
func checkBackchannel(c serviceaccount.ClientSettings, u string, d Deps) Result {
	id, want := quote(d.Config.ClientID), d.Config.Hub.Prefix+"backchannel-logout"
	setURL := fmt.Sprintf("on client %s set Backchannel logout URL to tokenkeeper's endpoint as Keycloak reaches it "+
		"(e.g. https://HUB%s) and turn on Backchannel logout session required", id, want)
	parsed, err := url.Parse(u)
	switch {
	case u == "":
		return fail(nameBackchannel, "client "+id+" has no Backchannel logout URL: a logout in Keycloak reaches the hub "+
			"only when that user's next refresh fails", setURL)
	case err != nil || parsed.Path != want:
		return fail(nameBackchannel, fmt.Sprintf("client %s sends back-channel logouts to %s, not to tokenkeeper's %s", id, clip(u), want), setURL)
	case c.FrontchannelLogout:
		return fail(nameBackchannel, "client "+id+" has Front channel logout on: Keycloak then logs users out of it "+
			"through their browser, and tokenkeeper never hears of it",
			"turn Front channel logout off on client "+id)
	case c.Attributes["backchannel.logout.session.required"] != "true":
		return warn(nameBackchannel, "Backchannel logout session required is off: a logout of one session logs out all of that user's sessions",
			"turn on Backchannel logout session required on client "+id)
	}
	return ok(nameBackchannel, "client "+id+" sends back-channel logouts with the session to "+clip(u))
}

// checkBackchannelReach POSTs an empty form to the back-channel logout
// URL: tokenkeeper answers 400 (no logout_token). It can only tell whether
// the URL answers from here, not from Keycloak's host.
func checkBackchannelReach(ctx context.Context, u string, d Deps) Result {
	fix := "Keycloak must reach " + clip(u) + ": check DNS, network policies, and the proxy's route to tokenkeeper from Keycloak's host"
	status, err := d.PostForm(ctx, u)
	switch {
	case err != nil:
		return warn(nameBackchannelReach, "no answer from here: "+describe(err), fix)
	case status == http.StatusBadRequest:
		return ok(nameBackchannelReach, "answers as tokenkeeper's endpoint does (400 to an empty form) from here")
	}
	return warn(nameBackchannelReach, fmt.Sprintf("answered HTTP %d from here, where tokenkeeper answers 400 to an empty form "+
		"(503 while it starts or holds a problem)", status), fix)
}

// audienceChecks check, for each configured audience, what Keycloak's
// standard token exchange needs of the hub's client: exchanging needs a
// user's token, which doctor does not have.
func audienceChecks(ctx context.Context, a adminView, d Deps) []Result {
	var out []Result
	for _, aud := range d.Config.Audiences {
		out = append(out, checkAudience(ctx, a, aud, d))
	}
	return out
}

func checkAudience(ctx context.Context, a adminView, aud string, d Deps) Result {
	name, id := audienceName(aud), quote(d.Config.ClientID)
	if d.Admin == nil {
		return skipped(name, "no admin client (admin_client_id), and an exchange needs a user's token")
	}
	if why := a.hubUnreadable(d.Config.ClientID); why != "" {
		return skipped(name, why)
	}
	if a.hub.Attributes["standard.token.exchange.enabled"] != "true" {
		return fail(name, "Standard token exchange is off on client "+id+": Keycloak refuses every exchange for "+quote(aud),
			"turn on Standard token exchange on client "+id+" (Clients → Settings → Capability config)")
	}
	if _, err := d.Admin.Client(ctx, aud); err != nil {
		return clientMissing(name, aud, err)
	}
	if !slices.ContainsFunc(a.hub.Mappers, func(m serviceaccount.Mapper) bool { return m.Audience == aud }) {
		return warn(name, fmt.Sprintf("no audience mapper puts %s into the audience of client %s's tokens; "+
			"Keycloak refuses an exchange for an audience the user's token lacks", quote(aud), id),
			fmt.Sprintf("add an Audience mapper (Included Client Audience %s) to client %s or to one of its default client scopes", aud, id))
	}
	return ok(name, "Standard token exchange is on for client "+id+", and "+quote(aud)+" is in its tokens' audience")
}

// clientMissing is the result of failing to read an audience's client.
func clientMissing(name, aud string, err error) Result {
	var aerr *serviceaccount.AdminError
	if errors.As(err, &aerr) && aerr.Status == http.StatusNotFound {
		return fail(name, "the realm has no client "+quote(aud), "create client "+quote(aud)+" or take it out of audiences")
	}
	return skipped(name, "the admin client could not read client "+quote(aud)+": "+describe(err))
}

// providerChecks check, for each configured identity provider, that
// Keycloak stores its tokens and lets users read them.
func providerChecks(ctx context.Context, a adminView, d Deps) []Result {
	var out []Result
	for _, alias := range d.Config.IdentityProviders {
		out = append(out, checkProvider(ctx, a, alias, d))
	}
	return out
}

func checkProvider(ctx context.Context, a adminView, alias string, d Deps) Result {
	name := providerName(alias)
	if d.Admin == nil {
		return skipped(name, "no admin client (admin_client_id), and reading a stored token needs a user's token")
	}
	if a.why != "" {
		return skipped(name, a.why)
	}
	p, err := d.Admin.Provider(ctx, alias)
	var aerr *serviceaccount.AdminError
	switch {
	case errors.As(err, &aerr) && aerr.Status == http.StatusNotFound:
		return fail(name, "the realm has no identity provider "+quote(alias), "add it, or take it out of identity_providers")
	case err != nil:
		return skipped(name, "the admin client may not read identity providers ("+describe(err)+
			"): give its service account the realm-management role view-identity-providers")
	case !p.Enabled:
		return fail(name, "identity provider "+quote(alias)+" is disabled", "enable it, or take it out of identity_providers")
	case !p.StoreToken:
		return fail(name, "Store tokens is off on identity provider "+quote(alias)+": Keycloak keeps none of its tokens to hand out",
			"turn on Store tokens on identity provider "+quote(alias)+"; users then log in through it once more")
	case !p.ReadTokenRoleOnCreate:
		return warn(name, "Stored tokens readable is off: only users given the broker client's read-token role otherwise can have their tokens",
			"turn on Stored tokens readable on "+quote(alias)+", or give its users the broker client's read-token role through a default role or a group")
	}
	return ok(name, "Keycloak stores its tokens, and users it creates may read them")
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
