// Package doctor checks, from outside, what tokenkeeper's configuration
// depends on: Keycloak's discovery, the hub client's secret, the realm's
// rotation and session settings, sid in access tokens, the back-channel
// logout URL, token exchange and stored identity-provider tokens, the
// service account, tokenkeeper's hub scopes and its database. Each check is
// a small function returning a Result; every remote call goes through Deps,
// so that the checks run against fakes in tests. No Result ever holds a
// token, a client secret or a key.
package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// Status is a check's verdict.
type Status int

const (
	// OK means the check passed.
	OK Status = iota
	// Warn means tokenkeeper works, but not as well as it could.
	Warn
	// Fail means tokenkeeper will not work as configured.
	Fail
	// Skipped means the check could not be made; Detail says why.
	Skipped
)

// String returns the status as the checklist prints it.
func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Fail:
		return "FAIL"
	case Skipped:
		return "skipped"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is one line of the checklist.
type Result struct {
	Name   string
	Status Status
	// Detail says what was found, or why the check was skipped.
	Detail string
	// Fix says what to change, for a failure or a warning.
	Fix string
}

func ok(name, detail string) Result { return Result{Name: name, Status: OK, Detail: detail} }

func skipped(name, why string) Result { return Result{Name: name, Status: Skipped, Detail: why} }

func warn(name, detail, fix string) Result {
	return Result{Name: name, Status: Warn, Detail: detail, Fix: fix}
}

func fail(name, detail, fix string) Result {
	return Result{Name: name, Status: Fail, Detail: detail, Fix: fix}
}

// Admin is the Keycloak admin API as the admin client, as
// serviceaccount.Admin implements it.
type Admin struct {
	Realm    func(ctx context.Context) (serviceaccount.RealmSettings, error)
	Client   func(ctx context.Context, clientID string) (serviceaccount.ClientSettings, error)
	Provider func(ctx context.Context, alias string) (serviceaccount.ProviderSettings, error)
}

// Deps are the settings and the remote calls the checks use. A nil
// function is a part of tokenkeeper that is not configured.
type Deps struct {
	Config config.Config
	// Discover reads the issuer's OpenID configuration (keycloak.Client.Endpoint).
	Discover func(ctx context.Context) (oauth2.Endpoint, error)
	// Refresh runs a refresh grant as the hub's client (keycloak.Client.Refresh).
	Refresh func(ctx context.Context, refresh config.Secret) (*oauth2.Token, error)
	// Admin is nil without admin_client_id.
	Admin *Admin
	// ServiceToken is the service account's handout
	// (serviceaccount.Handout.Token); nil without service_account_client_id.
	ServiceToken func(ctx context.Context, audience string) (*oauth2.Token, error)
	// HubSelf asks the hub who tokenkeeper's token is (hubclient.Client.Self).
	HubSelf func(ctx context.Context) (hubclient.Identity, error)
	// NeededScopes are the hub scopes tokenkeeper's settings need.
	NeededScopes []string
	// ExcessScopes returns the powerful scopes id holds that the settings
	// do not need.
	ExcessScopes func(id hubclient.Identity) []string
	// Inspect looks at the database without changing it (store.Inspect).
	Inspect func(ctx context.Context, path string) (store.Inspection, error)
	// OpenJournal opens one sealed journal entry with the configured state
	// keys; the plaintext is dropped unread.
	OpenJournal func(p store.Pending) error
	// PostForm POSTs an empty form to a URL and returns the status.
	PostForm func(ctx context.Context, url string) (int, error)
	// Timeout bounds each check.
	Timeout time.Duration
}

// Run makes every check, in checklist order. Each group of checks gets
// d.Timeout.
func Run(ctx context.Context, d Deps) []Result {
	out := d.within(ctx, func(ctx context.Context) []Result { return []Result{checkDiscovery(ctx, d)} })
	if out[0].Status == Fail {
		out = append(out, skipKeycloak(d)...)
	} else {
		out = append(out, d.within(ctx, func(ctx context.Context) []Result { return []Result{checkSecret(ctx, d)} })...)
		out = append(out, keycloakChecks(ctx, d)...)
	}
	out = append(out, d.within(ctx, func(ctx context.Context) []Result { return []Result{checkHub(ctx, d)} })...)
	return append(out, d.within(ctx, func(ctx context.Context) []Result { return checkDatabase(ctx, d) })...)
}

// keycloakChecks are the checks that need Keycloak's discovery to work.
func keycloakChecks(ctx context.Context, d Deps) []Result {
	var a adminView
	out := d.within(ctx, func(ctx context.Context) []Result {
		a = newAdminView(ctx, d)
		return a.results
	})
	out = append(out, realmChecks(a, d)...)
	out = append(out, checkSID(a, d))
	out = append(out, d.within(ctx, func(ctx context.Context) []Result { return backchannelChecks(ctx, a, d) })...)
	out = append(out, d.within(ctx, func(ctx context.Context) []Result { return audienceChecks(ctx, a, d) })...)
	out = append(out, d.within(ctx, func(ctx context.Context) []Result { return providerChecks(ctx, a, d) })...)
	return append(out, d.within(ctx, func(ctx context.Context) []Result { return serviceAccountChecks(ctx, d) })...)
}

// within runs f with ctx bounded by d.Timeout.
func (d Deps) within(ctx context.Context, f func(context.Context) []Result) []Result {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	return f(ctx)
}

// skipKeycloak is every Keycloak check, skipped because discovery failed.
func skipKeycloak(d Deps) []Result {
	const why = "Keycloak's discovery failed (see above)"
	names := []string{nameSecret, nameAdmin, nameRotation, nameMaxReuse, nameLifespans, nameSID, nameBackchannel, nameBackchannelReach}
	for _, a := range d.Config.Audiences {
		names = append(names, audienceName(a))
	}
	for _, p := range d.Config.IdentityProviders {
		names = append(names, providerName(p))
	}
	if d.ServiceToken != nil {
		names = append(names, nameServiceAccount)
		for _, a := range d.Config.ServiceTokenAudiences {
			names = append(names, serviceAudienceName(a))
		}
	}
	out := make([]Result, 0, len(names))
	for _, n := range names {
		out = append(out, skipped(n, why))
	}
	return out
}

// Failed reports whether any result is a failure.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Print writes the checklist: one line per check, and under a failure or
// a warning the line that says how to fix it.
func Print(w io.Writer, results []Result) {
	counts := map[Status]int{}
	for _, r := range results {
		counts[r.Status]++
		fmt.Fprintf(w, "%-7s %s: %s\n", r.Status, r.Name, oneLine(r.Detail))
		if r.Fix != "" && (r.Status == Fail || r.Status == Warn) {
			fmt.Fprintf(w, "        fix: %s\n", oneLine(r.Fix))
		}
	}
	fmt.Fprintf(w, "%d ok, %d failed, %d warnings, %d skipped\n", counts[OK], counts[Fail], counts[Warn], counts[Skipped])
}

// oneLine keeps a text on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
