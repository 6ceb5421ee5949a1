package sessionpage

import (
	"cmp"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// auditRows is how many logout audit records the admin page shows.
const auditRows = 50

// users shows the admin page: every user, health, the guard, the audit.
func (p *Page) users(c *gin.Context) {
	v := caller(c)
	if !v.seesAll() {
		p.writeError(c, forbidden("Every user's session needs the scope "+ScopeSessions+", unfiltered."))
		return
	}
	q, err := parseTableQuery(c.Request.URL.Query())
	if err != nil {
		p.writeError(c, err)
		return
	}
	ctx := c.Request.Context()
	all, err := p.d.Sessions(ctx)
	if err != nil {
		p.writeError(c, fmt.Errorf("sessions: %w", err))
		return
	}
	audit, err := p.d.Audit(ctx, auditRows)
	if err != nil {
		p.writeError(c, fmt.Errorf("audit: %w", err))
		return
	}
	p.render(c, http.StatusOK, "users", p.usersBody(v, q, all, audit))
}

// usersBody is the body of the admin page.
type usersBody struct {
	Query   tableQuery
	URL     string
	States  []option
	Sorts   []option
	Columns []column
	Rows    []userRow
	Total   int
	Health  healthBox
	Guard   guardBox
	Audit   []auditRow
}

// option is one choice of a select.
type option struct {
	Value, Label string
	Selected     bool
}

// column is a sortable column's header: its link sorts by it, the other
// way round when it already does.
type column struct {
	Label, URL, Sorted string
}

type userRow struct {
	Name, URL, State     string
	Access, SSOEnd, Last when
	Outcome              string
	Failures             int
	Kept                 bool
}

type healthBox struct {
	Status   string
	Problems []problemRow
}

type problemRow struct {
	Text  string
	Users int
}

type guardBox struct {
	Tripped    bool
	Held       []heldRow
	CanRelease bool
	ReleaseURL string
}

type heldRow struct{ Name, URL string }

type auditRow struct {
	User, URL       string
	At              when
	Reason, Actions string
}

func (p *Page) usersBody(v visitor, q tableQuery, all []refresh.SessionView, audit []store.Logout) usersBody {
	b := usersBody{
		Query: q, URL: p.d.Prefix + "ui/users", States: stateOptions(q.Status), Sorts: sortOptions(q.Sort),
		Total: len(all), Health: p.health(), Guard: p.guard(v),
	}
	b.Columns = columns(b.URL, q)
	for _, s := range selectSessions(all, q) {
		b.Rows = append(b.Rows, userRow{
			Name: s.Name, URL: userURL(p.d.Prefix, s.Name), State: string(s.State),
			Access: p.when(s.AccessExpiry), SSOEnd: p.when(s.RefreshExpiry), Last: p.when(s.LastRefresh),
			Outcome: s.LastOutcome, Failures: s.Failures, Kept: s.Kept,
		})
	}
	for _, l := range audit {
		b.Audit = append(b.Audit, auditRow{User: l.User, URL: userURL(p.d.Prefix, l.User), At: p.when(l.At), Reason: l.Reason, Actions: l.Actions})
	}
	return b
}

// states are the table's filter's choices, in the order of their meaning.
var states = []refresh.SessionState{
	refresh.SessionFresh, refresh.SessionRefreshing, refresh.SessionEnded, refresh.SessionHeld,
	refresh.SessionStuck, refresh.SessionAdmin, refresh.SessionNone, refresh.SessionUnknown,
}

func stateOptions(selected string) []option {
	opts := []option{{Value: "", Label: "any state", Selected: selected == ""}}
	for _, s := range states {
		opts = append(opts, option{Value: string(s), Label: string(s), Selected: string(s) == selected})
	}
	return opts
}

// sortLabels are the table's sort keys, as its columns name them.
var sortLabels = []struct{ key, label string }{
	{"name", "User"}, {"status", "State"}, {"expiry", "Access token expires"},
	{"failures", "Failures"}, {"last_refresh", "Last refresh"},
}

func sortOptions(selected string) []option {
	var opts []option
	for _, s := range sortLabels {
		opts = append(opts, option{Value: s.key, Label: s.label, Selected: s.key == selected})
	}
	return opts
}

// columns are the sortable headers of the table at base, as q shows it.
func columns(base string, q tableQuery) []column {
	var cols []column
	for _, s := range sortLabels {
		next, sorted := q, ""
		next.Sort, next.Desc = s.key, false
		if q.Sort == s.key {
			sorted, next.Desc = "ascending", !q.Desc
			if q.Desc {
				sorted = "descending"
			}
		}
		cols = append(cols, column{Label: s.label, URL: base + "?" + next.values().Encode(), Sorted: sorted})
	}
	return cols
}

// health is tokenkeeper's health with the problems' fixed texts.
func (p *Page) health() healthBox {
	h := p.d.Health()
	box := healthBox{Status: h.State()}
	for _, pr := range h.Problems {
		text := string(pr.Class)
		if p.d.ProblemText != nil {
			text = cmp.Or(p.d.ProblemText(pr.Class), text)
		}
		if pr.Detail != "" {
			text += " " + pr.Detail + "."
		}
		box.Problems = append(box.Problems, problemRow{Text: text, Users: pr.Users})
	}
	return box
}

// guard is the guard's state, with the release form for who may.
func (p *Page) guard(v visitor) guardBox {
	g := p.d.Guard()
	box := guardBox{Tripped: g.Tripped, CanRelease: g.Tripped && v.mayRelease(), ReleaseURL: p.d.Prefix + "ui/guard/release"}
	for _, name := range g.Held {
		box.Held = append(box.Held, heldRow{Name: name, URL: userURL(p.d.Prefix, name)})
	}
	return box
}
