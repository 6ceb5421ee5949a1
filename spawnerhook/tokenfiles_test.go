package spawnerhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"
)

func put(t *testing.T, h http.Handler, target, authorization, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPut, target, strings.NewReader(body))
	req.Header.Set("Authorization", authorization)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestTokenFilesReport: a server's report is recorded for the token's user
// (never a user the body names), replaced by the next report, emptied by
// an empty one; bad reports are refused and change nothing.
func TestTokenFilesReport(t *testing.T) {
	d := (&fakes{}).deps()
	d.TokenFiles = NewTokenFiles()
	h := NewHandler(prefix, d)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ok := `{"server": "", "files": [{"name": "access_token", "mode": "0600", "modified": "2026-12-07T10:00:00Z"},
		{"name": "gitlab.json", "mode": "640", "modified": "2026-12-07T10:00:00Z"}]}`
	if rec := put(t, h, prefix+"token-files", "token server-token", ok); rec.Code != http.StatusNoContent {
		t.Fatalf("PUT token-files = %d %s, want 204", rec.Code, rec.Body)
	}
	want := []TokenFile{{Name: "access_token", Mode: "0600", Modified: at}, {Name: "gitlab.json", Mode: "640", Modified: at}}
	if diff := cmp.Diff(want, d.TokenFiles.Of("alice")); diff != "" {
		t.Errorf("alice's files (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		`not json`,
		`{"server": "", "files": [{"name": "../etc/passwd", "mode": "0600"}]}`,
		`{"server": "", "files": [{"name": "", "mode": "0600"}]}`,
		`{"server": "", "files": [{"name": "a", "mode": "rw-------"}]}`,
		`{"server": "", "files": [` + strings.Repeat(`{"name": "a", "mode": "0600"},`, maxReportedFiles) + `{"name": "a", "mode": "0600"}]}`,
	} {
		if rec := put(t, h, prefix+"token-files", "token server-token", bad); rec.Code != http.StatusBadRequest {
			t.Errorf("PUT token-files %.40q = %d, want 400", bad, rec.Code)
		}
	}
	if diff := cmp.Diff(want, d.TokenFiles.Of("alice")); diff != "" {
		t.Errorf("a refused report changed alice's files (-want +got):\n%s", diff)
	}
	if rec := put(t, h, prefix+"token-files", "token hook-token", ok); rec.Code != http.StatusForbidden {
		t.Errorf("PUT token-files with a service's token = %d, want 403", rec.Code)
	}
	if rec := put(t, h, prefix+"token-files", "token server-token", `{"server": "", "files": []}`); rec.Code != http.StatusNoContent {
		t.Fatalf("PUT empty token-files = %d, want 204", rec.Code)
	}
	if got := d.TokenFiles.Of("alice"); len(got) != 0 {
		t.Errorf("after an empty report alice's files = %v, want none", got)
	}
}

// waitCall is one call session-end made to WaitLogout.
type waitCall struct {
	User  string
	Since time.Time
	Wait  time.Duration
}

// TestSessionEnd: the caller's user, since and wait reach WaitLogout, the
// answer carries ended and the next since; bad parameters are refused.
func TestSessionEnd(t *testing.T) {
	var mu sync.Mutex
	var calls []waitCall
	next := time.Date(2026, 12, 7, 10, 0, 5, 0, time.UTC)
	d := (&fakes{}).deps()
	d.WaitLogout = func(ctx context.Context, user string, since time.Time, wait time.Duration) (bool, time.Time) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, waitCall{user, since, wait})
		return user == "alice", next
	}
	h := NewHandler(prefix, d)
	res := get(t, h, prefix+"session-end?since=2026-12-07T10:00:00.5Z&wait=30", "token server-token")
	if diff := cmp.Diff(map[string]any{"ended": true, "since": "2026-12-07T10:00:05Z"}, res.body); diff != "" || res.status != 200 {
		t.Errorf("session-end = %d (-want +got):\n%s", res.status, diff)
	}
	get(t, h, prefix+"session-end", "token server-token")
	want := []waitCall{
		{"alice", time.Date(2026, 12, 7, 10, 0, 0, 500e6, time.UTC), 30 * time.Second},
		{"alice", testNow, maxLogoutWait},
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("WaitLogout calls (-want +got):\n%s", diff)
	}
	for _, q := range []string{"wait=301", "wait=-1", "wait=x", "since=yesterday"} {
		checkError(t, q, get(t, h, prefix+"session-end?"+q, "token server-token"), http.StatusBadRequest, "bad_request")
	}
	checkError(t, "service", get(t, h, prefix+"session-end", "token hook-token"), http.StatusForbidden, "forbidden")
	if len(calls) != 2 {
		t.Errorf("refused requests reached WaitLogout: %d calls, want 2", len(calls))
	}
}

// TestSessionEndAnswersAtShutdown: a request waiting in session-end
// answers (ended false) when tokenkeeper stops, not when its wait ends.
func TestSessionEndAnswersAtShutdown(t *testing.T) {
	d := (&fakes{}).deps()
	d.WaitLogout = func(ctx context.Context, user string, since time.Time, wait time.Duration) (bool, time.Time) {
		<-ctx.Done()
		return false, since
	}
	shutdown, stop := context.WithCancel(context.Background())
	d.Shutdown = shutdown
	srv := httptest.NewServer(NewHandler(prefix, d))
	defer srv.Close()
	done := make(chan map[string]any, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+prefix+"session-end?wait=300", nil)
		req.Header.Set("Authorization", "token server-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		done <- body
	}()
	stop()
	select {
	case body := <-done:
		if body == nil || body["ended"] != false {
			t.Errorf("session-end at shutdown = %v, want ended false", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("session-end did not answer within 30 s of the shutdown")
	}
}

// TestBrowsersAreSentToThePage: the prefix root sends a browser to the
// page when there is one; API clients keep the JSON description.
func TestBrowsersAreSentToThePage(t *testing.T) {
	d := (&fakes{}).deps()
	d.Page = func(g *gin.RouterGroup) {}
	h := NewHandler(prefix, d)
	req := httptest.NewRequest(http.MethodGet, prefix, nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != prefix+"ui/" {
		t.Errorf("GET %s as a browser = %d to %q, want 302 to %sui/", prefix, rec.Code, rec.Header().Get("Location"), prefix)
	}
	if res := get(t, h, prefix, ""); res.status != http.StatusOK || res.body["name"] != "tokenkeeper" {
		t.Errorf("GET %s as an API client = %d %s, want the JSON description", prefix, res.status, res.raw)
	}
}
