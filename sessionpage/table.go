package sessionpage

import (
	"cmp"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// tableQuery is how the admin page's user table is filtered and sorted:
// ?q=substring&status=STATE&sort=KEY&order=asc|desc.
type tableQuery struct {
	// Text is a substring of the names shown, matched without case.
	Text string
	// Status is the one state shown; "" shows every state.
	Status string
	// Sort is a key of sortKeys.
	Sort string
	Desc bool
}

// sortKeys order the table by a column; equal rows stay in name order.
var sortKeys = map[string]func(a, b refresh.SessionView) int{
	"name":         func(a, b refresh.SessionView) int { return strings.Compare(a.Name, b.Name) },
	"status":       func(a, b refresh.SessionView) int { return cmp.Compare(a.State, b.State) },
	"expiry":       func(a, b refresh.SessionView) int { return a.AccessExpiry.Compare(b.AccessExpiry) },
	"failures":     func(a, b refresh.SessionView) int { return cmp.Compare(a.Failures, b.Failures) },
	"last_refresh": func(a, b refresh.SessionView) int { return a.LastRefresh.Compare(b.LastRefresh) },
}

// parseTableQuery reads the table's query; a sort key or order it does
// not know, or an overlong text, is a bad request.
func parseTableQuery(v url.Values) (tableQuery, error) {
	q := tableQuery{Text: v.Get("q"), Status: v.Get("status"), Sort: cmp.Or(v.Get("sort"), "name")}
	if _, ok := sortKeys[q.Sort]; !ok {
		return q, badRequest("The table sorts by name, status, expiry, failures or last_refresh only.")
	}
	switch v.Get("order") {
	case "", "asc":
	case "desc":
		q.Desc = true
	default:
		return q, badRequest("The table's order is asc or desc only.")
	}
	if len(q.Text) > 256 || len(q.Status) > 32 {
		return q, badRequest("The name or state to show is too long.")
	}
	return q, nil
}

// values is q as a query, for the table's links.
func (q tableQuery) values() url.Values {
	v := url.Values{"sort": {q.Sort}, "order": {"asc"}}
	if q.Desc {
		v.Set("order", "desc")
	}
	if q.Text != "" {
		v.Set("q", q.Text)
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	return v
}

// selectSessions returns the views of all that q shows, in its order,
// as a new slice.
func selectSessions(all []refresh.SessionView, q tableQuery) []refresh.SessionView {
	text := strings.ToLower(q.Text)
	out := slices.DeleteFunc(slices.Clone(all), func(s refresh.SessionView) bool {
		return !strings.Contains(strings.ToLower(s.Name), text) || (q.Status != "" && string(s.State) != q.Status)
	})
	by := sortKeys[q.Sort]
	if by == nil {
		by = sortKeys["name"]
	}
	slices.SortFunc(out, func(a, b refresh.SessionView) int {
		c := by(a, b)
		if q.Desc {
			c = -c
		}
		return cmp.Or(c, strings.Compare(a.Name, b.Name))
	})
	return out
}
