package sessionpage

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

//go:embed templates/*.html
var templates embed.FS

// viewOf is the template of each data-tk-page.
var viewOf = map[string]string{"user": "user", "users": "users", "forbidden": "message", "error": "message"}

// parseViews parses each view with the layout.
func parseViews() (map[string]*template.Template, error) {
	views := make(map[string]*template.Template)
	for _, name := range []string{"user", "users", "message"} {
		t, err := template.ParseFS(templates, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		views[name] = t
	}
	return views, nil
}

// frame is what every page shows around its body: the hub's navbar with
// the visitor's name, and the flash of the action just done.
type frame struct {
	Page      string // data-tk-page: user, users, forbidden or error
	HubPrefix string
	Prefix    string
	Who       string
	HubAdmin  bool
	AllUsers  bool
	Flash     string
	CSRF      string
	Body      any
}

// message is the body of an error page.
type message struct {
	Text  string
	Retry string
}

// flashes are the texts of ?done=, shown after an action (PRG).
var flashes = map[string]string{
	"logged-out": "Logged out everywhere.",
	"refreshed":  "The tokens were refreshed.",
	"released":   "The guard is released: the logouts it held go ahead.",
}

// render writes page with body and status.
func (p *Page) render(c *gin.Context, status int, page string, body any) {
	f := frame{Page: page, HubPrefix: p.d.HubPrefix, Prefix: p.d.Prefix, Body: body}
	if v, ok := knownCaller(c); ok {
		f.Who, f.HubAdmin, f.AllUsers, f.CSRF = v.Name, v.Admin, v.seesAll(), v.csrf
	}
	if status == http.StatusOK {
		f.Flash = flashes[c.Query("done")]
	}
	var b bytes.Buffer
	if err := p.views[viewOf[page]].ExecuteTemplate(&b, "layout", f); err != nil {
		p.log.Error("service page template failed", "page", page, "err", err)
		c.Data(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte("Internal error.\n"))
		return
	}
	c.Data(status, "text/html; charset=utf-8", defang(b.Bytes()))
}

// tokenLike is what a JWT starts with: the pattern that scanners (and the
// browser test) look for to find a token in a page.
var tokenLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.`)

// defang writes the dot that ends a token-like run as a character
// reference, which the browser reads as the same dot in text and in
// attribute values alike. No token value reaches a template (the view
// types hold none), but a hub user may be named like one, and a page
// must not match the pattern for it.
func defang(page []byte) []byte {
	return tokenLike.ReplaceAllFunc(page, func(m []byte) []byte {
		return append(bytes.Clone(m[:len(m)-1]), "&#46;"...)
	})
}

// when is a time as the page shows it: UTC RFC 3339, and relative to now.
type when struct {
	Set bool
	UTC string
	Rel string
}

// when shows t; the zero time is not set.
func (p *Page) when(t time.Time) when {
	if t.IsZero() {
		return when{}
	}
	return when{Set: true, UTC: t.UTC().Format(time.RFC3339), Rel: relative(t, p.d.Now())}
}

// relative is t from now in the page's words: "in 4m", "3m ago", "now".
func relative(t, now time.Time) string {
	d := t.Sub(now).Truncate(time.Second)
	switch {
	case d == 0:
		return "now"
	case d > 0:
		return "in " + short(d)
	default:
		return short(-d) + " ago"
	}
}

// short is d in its largest whole unit: s, m, h, or d beyond two days.
func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	default:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
}

// userURL is the path of user's view. Dots are escaped too, so that a
// name like a JWT does not read as one in a Location header either.
func userURL(prefix, user string) string {
	return prefix + "ui/users/" + strings.ReplaceAll(url.PathEscape(user), ".", "%2E")
}
