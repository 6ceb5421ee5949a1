package spawnerhook

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// httpAPIDoc is the reference of every endpoint.
const httpAPIDoc = "../docs/http-api.md"

// documentedRoute matches an endpoint's heading in the doc: ## `GET fresh-token`.
var documentedRoute = regexp.MustCompile("(?m)^## `([A-Z]+) ([^`]+)`$")

// everyRoute returns each route NewHandler registers, as "METHOD path" with
// the path relative to the prefix ("/" for the prefix's root), with every
// optional endpoint turned on.
func everyRoute(t *testing.T) map[string]bool {
	t.Helper()
	d := Deps{
		Metrics:      http.NotFoundHandler(),
		Status:       func(context.Context, string) (refresh.UserStatus, error) { return refresh.UserStatus{}, nil },
		ReleaseGuard: func(context.Context) error { return nil },
		TokenFiles:   NewTokenFiles(),
		WaitLogout: func(context.Context, string, time.Time, time.Duration) (bool, time.Time) {
			return false, time.Time{}
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	e, ok := NewHandler(prefix, d).(*gin.Engine)
	if !ok {
		t.Fatal("NewHandler does not return a *gin.Engine")
	}
	routes := map[string]bool{}
	for _, r := range e.Routes() {
		rel := strings.TrimPrefix(strings.TrimPrefix(r.Path, strings.TrimSuffix(prefix, "/")), "/")
		if rel == "" {
			rel = "/"
		}
		routes[r.Method+" "+rel] = true
	}
	return routes
}

// TestHTTPAPIDocNamesEveryRoute keeps docs/http-api.md complete and true:
// every registered route has its own section, and every section is a route.
func TestHTTPAPIDocNamesEveryRoute(t *testing.T) {
	b, err := os.ReadFile(httpAPIDoc)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range documentedRoute.FindAllStringSubmatch(string(b), -1) {
		documented[m[1]+" "+m[2]] = true
	}
	routes := everyRoute(t)
	for r := range routes {
		if !documented[r] {
			t.Errorf("%s has no section \"## `%s`\"", httpAPIDoc, r)
		}
	}
	for r := range documented {
		if !routes[r] {
			t.Errorf("%s documents %q, which is no route", httpAPIDoc, r)
		}
	}
}

// TestREADMEListsEveryHealthClass keeps README's health table complete:
// every problem class health can report has a row.
func TestREADMEListsEveryHealthClass(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for class := range problemTexts {
		if !strings.Contains(string(b), "\n| `"+string(class)+"` |") {
			t.Errorf("README.md's health table has no row for class %s", class)
		}
	}
}
