package sessionpage

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// own shows the visitor's own session.
func (p *Page) own(c *gin.Context) {
	p.showUser(c, caller(c).Name, "own")
}

// user shows a user's session: the visitor's own, or with ScopeSessions
// for that user anyone's.
func (p *Page) user(c *gin.Context) {
	name, err := p.target(c, visitor.may)
	if err != nil {
		p.writeError(c, err)
		return
	}
	p.showUser(c, name, "user")
}

// target is the user the request names, when the visitor may act on
// them as allowed says.
func (p *Page) target(c *gin.Context, allowed func(visitor, string) bool) (string, error) {
	name := c.Param("name")
	if err := hubclient.CheckName(name); err != nil {
		return "", badRequest("The user name is not one the hub gives.")
	}
	if !allowed(caller(c), name) {
		return "", forbidden("You may see and act on your own session only; others' need the scope " + ScopeSessions + ".")
	}
	return name, nil
}

// showUser renders name's view; back names it for the actions' return.
func (p *Page) showUser(c *gin.Context, name, back string) {
	ctx := c.Request.Context()
	sv, ok, err := p.d.Session(ctx, name)
	if err != nil {
		p.writeError(c, fmt.Errorf("session of %q: %w", name, err))
		return
	}
	if !ok {
		sv = refresh.SessionView{Name: name, State: refresh.SessionUnknown}
	}
	body := p.userBody(caller(c), sv, back)
	body.Keycloak = p.keycloak(ctx, name)
	p.render(c, http.StatusOK, "user", body)
}

// userBody is the body of a user's view.
type userBody struct {
	Name, State, Meaning        string
	Access, SSOEnd, Next, Last  when
	Outcome                     string
	Failures                    int
	Kept                        bool
	Audiences, Providers        []string
	Files                       []fileRow
	Keycloak                    *keycloakBox
	LogoutURL, RefreshURL, Back string
	CanRefresh, StopsServers    bool
}

// fileRow is one token file in a user's view.
type fileRow struct {
	Server, Name, Mode string
	Modified           when
}

// keycloakBox is a user's Keycloak sessions, or Err when they could not
// be read.
type keycloakBox struct {
	Err      bool
	Sessions []keycloakRow
}

// keycloakRow is one Keycloak session: when it started and was last used,
// and, when the realm's SSO settings are known, when its idle time and its
// maximum run out.
type keycloakRow struct {
	Started, LastAccess, IdleEnds, MaxEnds when
	Clients                                string
}

// meanings say what each state means to the user.
var meanings = map[refresh.SessionState]string{
	refresh.SessionFresh:      "tokenkeeper keeps the tokens fresh.",
	refresh.SessionRefreshing: "The last refresh failed for a passing reason; tokenkeeper is retrying.",
	refresh.SessionEnded:      "The Keycloak session has ended: log in to the hub again.",
	refresh.SessionHeld:       "The Keycloak session seems to have ended, but the guard holds the logout while many sessions end at once.",
	refresh.SessionStuck:      "The hub refuses to store new tokens; tokenkeeper keeps them meanwhile.",
	refresh.SessionAdmin:      "A hub admin: the hub refreshes these tokens on the admin's own requests.",
	refresh.SessionNone:       "No tokens: log in to the hub to get some.",
	refresh.SessionUnknown:    "tokenkeeper has not read these tokens from the hub yet; its next sweep does.",
}

func (p *Page) userBody(v visitor, sv refresh.SessionView, back string) userBody {
	return userBody{
		Name: sv.Name, State: string(sv.State), Meaning: meanings[sv.State],
		Access: p.when(sv.AccessExpiry), SSOEnd: p.when(sv.RefreshExpiry),
		Next: p.when(sv.NextRefresh), Last: p.when(sv.LastRefresh),
		Outcome: sv.LastOutcome, Failures: sv.Failures, Kept: sv.Kept,
		Audiences: p.d.Audiences, Providers: p.d.Providers, Files: p.files(sv.Name),
		LogoutURL: userURL(p.d.Prefix, sv.Name) + "/logout", RefreshURL: userURL(p.d.Prefix, sv.Name) + "/refresh",
		Back: back, CanRefresh: v.mayRefresh(sv.Name), StopsServers: p.d.StopsServers,
	}
}

// files are the token files of user's servers.
func (p *Page) files(user string) []fileRow {
	var rows []fileRow
	for _, f := range p.d.TokenFiles(user) {
		rows = append(rows, fileRow{Server: f.Server, Name: f.Name, Mode: f.Mode, Modified: p.when(f.Modified)})
	}
	return rows
}

// keycloak is user's Keycloak sessions, nil when the page has no way to
// read them. A failure to read them shows as such and fails nothing else.
func (p *Page) keycloak(ctx context.Context, user string) *keycloakBox {
	if p.d.KeycloakSessions == nil {
		return nil
	}
	sessions, err := p.d.KeycloakSessions(ctx, user)
	if err != nil {
		p.log.Warn("service page: Keycloak sessions not read", "user", user, "err", err)
		return &keycloakBox{Err: true}
	}
	idle, maxLife := p.ssoLimits(ctx)
	box := &keycloakBox{}
	for _, s := range sessions {
		row := keycloakRow{Started: p.when(s.Started), LastAccess: p.when(s.LastAccess), Clients: strings.Join(s.Clients, ", ")}
		if idle > 0 {
			row.IdleEnds = p.when(s.LastAccess.Add(idle))
		}
		if maxLife > 0 {
			row.MaxEnds = p.when(s.Started.Add(maxLife))
		}
		box.Sessions = append(box.Sessions, row)
	}
	return box
}

// ssoLimits are the realm's SSO idle and maximum, zero where unknown.
func (p *Page) ssoLimits(ctx context.Context) (idle, maxLife time.Duration) {
	if p.d.SSOLimits == nil {
		return 0, 0
	}
	idle, maxLife, err := p.d.SSOLimits(ctx)
	if err != nil {
		p.log.Warn("service page: the realm's SSO settings not read", "err", err)
		return 0, 0
	}
	return idle, maxLife
}
