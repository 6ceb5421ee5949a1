package spawnerhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// keeperRequest is what a fake tokenkeeper saw of one request.
type keeperRequest struct {
	Method        string
	Path          string
	Query         string
	Authorization string
}

func seeRequest(r *http.Request) keeperRequest {
	return keeperRequest{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization")}
}

// tokenJSON is a fresh-token answer for access expiring at exp.
func tokenJSON(access string, exp time.Time) string {
	return fmt.Sprintf(`{"user":"alice","access_token":%q,"token_type":"Bearer","expires_at":%q,"expires_in":300}`,
		access, exp.UTC().Format(time.RFC3339))
}

func TestClientFreshTokenRequest(t *testing.T) {
	exp := time.Date(2026, 11, 22, 12, 5, 0, 0, time.UTC)
	tests := []struct {
		name     string
		base     string // appended to the server URL
		minValid time.Duration
		want     keeperRequest
	}{
		{name: "one minute", base: "/services/tokenkeeper", minValid: time.Minute,
			want: keeperRequest{"GET", "/services/tokenkeeper/fresh-token", "min_valid=60", "token nb-token"}},
		{name: "trailing slash", base: "/services/tokenkeeper/", minValid: 5 * time.Minute,
			want: keeperRequest{"GET", "/services/tokenkeeper/fresh-token", "min_valid=300", "token nb-token"}},
		{name: "zero", base: "/services/tokenkeeper", minValid: 0,
			want: keeperRequest{"GET", "/services/tokenkeeper/fresh-token", "min_valid=0", "token nb-token"}},
		{name: "fraction rounds down", base: "/services/tokenkeeper", minValid: 1500 * time.Millisecond,
			want: keeperRequest{"GET", "/services/tokenkeeper/fresh-token", "min_valid=1", "token nb-token"}},
		{name: "no prefix", base: "", minValid: time.Minute,
			want: keeperRequest{"GET", "/fresh-token", "min_valid=60", "token nb-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []keeperRequest
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = append(got, seeRequest(r))
				fmt.Fprint(w, tokenJSON("eyJ.access", exp))
			}))
			defer srv.Close()
			tok, err := NewClient(srv.URL+tt.base, "nb-token", srv.Client()).FreshToken(context.Background(), tt.minValid)
			if err != nil {
				t.Fatalf("FreshToken(%v) error: %v", tt.minValid, err)
			}
			if want := (Token{AccessToken: "eyJ.access", ExpiresAt: exp}); tok != want {
				t.Errorf("FreshToken(%v) = %+v, want %+v", tt.minValid, tok, want)
			}
			if diff := cmp.Diff([]keeperRequest{tt.want}, got); diff != "" {
				t.Errorf("FreshToken(%v) requests mismatch (-want +got):\n%s", tt.minValid, diff)
			}
		})
	}
}

// TestClientFor: the derived token's parameter is added to every request,
// and the client it was made from is unchanged.
// TestClientRefusesRedirects: a redirect (a proxy sending plain HTTP to
// HTTPS, a wrong TOKENKEEPER_URL) is an error naming where it pointed, and
// the redirect's target never sees the caller's token, whatever the HTTP
// client passed in would do.
func TestClientRefusesRedirects(t *testing.T) {
	var seen []keeperRequest
	var mu sync.Mutex
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, seeRequest(r))
		mu.Unlock()
		fmt.Fprint(w, tokenJSON("stolen", time.Now().Add(time.Hour)))
	}))
	defer elsewhere.Close()
	keeper := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/collect", http.StatusFound))
	defer keeper.Close()
	c := NewClient(keeper.URL+"/services/tokenkeeper", "server-token", &http.Client{})
	_, err := c.FreshToken(context.Background(), time.Minute)
	var re *RedirectError
	if !errors.As(err, &re) || re.Status != http.StatusFound || re.Location != elsewhere.URL+"/collect" {
		t.Errorf("FreshToken error = %v, want a RedirectError to %s/collect", err, elsewhere.URL)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("the redirect's target saw %+v, want no request", seen)
	}
}

func TestClientFor(t *testing.T) {
	exp := time.Date(2026, 11, 22, 12, 5, 0, 0, time.UTC)
	var got []keeperRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, seeRequest(r))
		fmt.Fprint(w, tokenJSON("eyJ.access", exp))
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "nb-token", srv.Client())
	for _, cl := range []*Client{
		c.For(refresh.Target{Kind: refresh.KindAudience, Name: "trino"}),
		c.For(refresh.Target{Kind: refresh.KindProvider, Name: "external"}),
		c,
	} {
		if _, err := cl.FreshToken(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	want := []keeperRequest{
		{"GET", "/fresh-token", "audience=trino&min_valid=60", "token nb-token"},
		{"GET", "/fresh-token", "idp=external&min_valid=60", "token nb-token"},
		{"GET", "/fresh-token", "min_valid=60", "token nb-token"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// fakeClock is a clock that only sleeps move, recording each sleep.
type fakeClock struct {
	t      time.Time
	sleeps []time.Duration
}

func (f *fakeClock) now() time.Time { return f.t }

func (f *fakeClock) sleep(_ context.Context, d time.Duration) error {
	f.sleeps = append(f.sleeps, d)
	f.t = f.t.Add(d)
	return nil
}

// withClock makes c sleep on f instead of for real.
func withClock(c *Client, f *fakeClock) *Client {
	c.sleep, c.now = f.sleep, f.now
	return c
}

func TestClientFreshTokenUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	clock := &fakeClock{t: time.Unix(0, 0)}
	_, err := withClock(NewClient(srv.URL, "nb-token", &http.Client{}), clock).FreshToken(context.Background(), time.Minute)
	var uerr *UnreachableError
	if !errors.As(err, &uerr) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("FreshToken on a closed server = %v, want an UnreachableError for a refused connection", err)
	}
	if got := clock.t.Sub(time.Unix(0, 0)); got > RetryFor {
		t.Errorf("FreshToken retried for %s, want at most %s", got, RetryFor)
	}
}

// step is one scripted outcome of a request: a transport error, or a status
// with a body (and optionally a body that fails while read).
type step struct {
	err     error
	status  int
	body    string
	readErr error
}

// scripted is a RoundTripper that plays steps in order, repeating the last.
type scripted struct {
	steps []step
	calls int
}

func (s *scripted) RoundTrip(r *http.Request) (*http.Response, error) {
	st := s.steps[min(s.calls, len(s.steps)-1)]
	s.calls++
	if st.err != nil {
		return nil, st.err
	}
	var body io.Reader = strings.NewReader(st.body)
	if st.readErr != nil {
		body = io.MultiReader(body, iotest.ErrReader(st.readErr))
	}
	return &http.Response{StatusCode: st.status, Body: io.NopCloser(body), Header: http.Header{}, Request: r}, nil
}

func TestClientFreshTokenRetries(t *testing.T) {
	exp := time.Date(2026, 11, 22, 12, 5, 0, 0, time.UTC)
	ok := step{status: 200, body: tokenJSON("fresh", exp)}
	refused := step{err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	reset := step{err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	busy := step{status: 429, body: `{"error":"busy","message":"try again in a second"}`}
	s := func(ds ...float64) []time.Duration {
		out := make([]time.Duration, len(ds))
		for i, d := range ds {
			out[i] = time.Duration(d * float64(time.Second))
		}
		return out
	}
	tests := []struct {
		name   string
		steps  []step
		want   string // the access token; empty for an error
		check  func(error) bool
		sleeps []time.Duration
	}{
		{name: "refused then answered", steps: []step{refused, refused, ok}, want: "fresh", sleeps: s(0.5, 1)},
		{name: "reset then answered", steps: []step{reset, ok}, want: "fresh", sleeps: s(0.5)},
		{name: "busy then answered", steps: []step{busy, busy, busy, ok}, want: "fresh", sleeps: s(0.5, 1, 2)},
		{name: "refused throughout", steps: []step{refused},
			check: func(err error) bool {
				return errors.As(err, new(*UnreachableError)) && errors.Is(err, syscall.ECONNREFUSED)
			},
			sleeps: s(0.5, 1, 2, 4, 5, 5, 5, 5, 5, 5, 5)},
		{name: "busy throughout", steps: []step{busy},
			check: func(err error) bool {
				var serr *ServiceError
				return errors.As(err, new(*UnreachableError)) && errors.As(err, &serr) && serr.Status == 429
			},
			sleeps: s(0.5, 1, 2, 4, 5, 5, 5, 5, 5, 5, 5)},
		{name: "server error", steps: []step{{status: 502, body: `{"message":"hub"}`}, ok},
			check: func(err error) bool { return errors.As(err, new(*ServiceError)) }},
		{name: "login required", steps: []step{{status: 409}, ok},
			check: func(err error) bool { return errors.Is(err, ErrLoginRequired) }},
		{name: "answer cut short", steps: []step{{err: io.ErrUnexpectedEOF}, ok},
			check: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{name: "reset while reading the answer", steps: []step{{status: 200, body: `{"access`, readErr: syscall.ECONNRESET}, ok},
			check: func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &scripted{steps: tt.steps}
			clock := &fakeClock{t: time.Unix(0, 0)}
			c := withClock(NewClient("http://tokenkeeper.invalid", "nb-token", &http.Client{Transport: rt}), clock)
			tok, err := c.FreshToken(t.Context(), time.Minute)
			if tt.want != "" && (err != nil || tok.AccessToken != tt.want) {
				t.Errorf("FreshToken() = %q, %v; want %q, nil", tok.AccessToken, err, tt.want)
			}
			if tt.want == "" && !tt.check(err) {
				t.Errorf("FreshToken() error = %v, want the %s error", err, tt.name)
			}
			if diff := cmp.Diff(tt.sleeps, clock.sleeps); diff != "" {
				t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
			}
			if want := len(tt.sleeps) + 1; rt.calls != want {
				t.Errorf("requests = %d, want %d", rt.calls, want)
			}
		})
	}
}

func TestClientFreshTokenStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	rt := &scripted{steps: []step{{err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}}}
	c := NewClient("http://tokenkeeper.invalid", "nb-token", &http.Client{Transport: rt})
	c.sleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return sleepCtx(ctx, d)
	}
	if _, err := c.FreshToken(ctx, time.Minute); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("FreshToken() after cancel = %v, want the last failure", err)
	}
	if rt.calls != 1 {
		t.Errorf("requests = %d, want 1", rt.calls)
	}
}

func TestDecodeToken(t *testing.T) {
	exp := time.Date(2026, 11, 22, 12, 5, 0, 0, time.UTC)
	tests := []struct {
		name    string
		status  int
		body    string
		want    Token
		wantErr error // compared with errors.Is, or a *ServiceError compared by value
		anyErr  bool  // some other error
	}{
		{name: "ok", status: 200, body: tokenJSON("eyJ.a", exp), want: Token{AccessToken: "eyJ.a", ExpiresAt: exp}},
		{name: "ok, offset time", status: 200, body: `{"access_token":"eyJ.a","expires_at":"2026-11-22T13:05:00+01:00"}`,
			want: Token{AccessToken: "eyJ.a", ExpiresAt: exp}},
		{name: "login required", status: 409, body: `{"error":"login_required","message":"log in"}`, wantErr: ErrLoginRequired},
		{name: "login required, no body", status: 409, body: ``, wantErr: ErrLoginRequired},
		{name: "unauthorized", status: 401, body: `{"error":"unauthorized","message":"The JupyterHub token is invalid or expired."}`,
			wantErr: &ServiceError{Status: 401, Message: "The JupyterHub token is invalid or expired."}},
		{name: "forbidden", status: 403, body: `{"error":"forbidden","message":"no"}`, wantErr: &ServiceError{Status: 403, Message: "no"}},
		{name: "HTML from a proxy", status: 502, body: `<html>Bad Gateway</html>`, wantErr: &ServiceError{Status: 502, Message: "Bad Gateway"}},
		{name: "error without message", status: 503, body: `{"error":"unavailable"}`, wantErr: &ServiceError{Status: 503, Message: "Service Unavailable"}},
		{name: "other 2xx", status: 204, body: ``, wantErr: &ServiceError{Status: 204, Message: "No Content"}},
		{name: "not JSON", status: 200, body: `eyJ.a`, anyErr: true},
		{name: "no access token", status: 200, body: `{"expires_at":"2026-11-22T12:05:00Z"}`, anyErr: true},
		{name: "no expiry", status: 200, body: `{"access_token":"eyJ.a"}`, anyErr: true},
		{name: "bad expiry", status: 200, body: `{"access_token":"eyJ.a","expires_at":"tomorrow"}`, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeToken(tt.status, []byte(tt.body))
			var wantS *ServiceError
			switch {
			case errors.As(tt.wantErr, &wantS):
				var gotS *ServiceError
				if !errors.As(err, &gotS) || *gotS != *wantS {
					t.Errorf("decodeToken(%d, %q) error = %v, want %v", tt.status, tt.body, err, wantS)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("decodeToken(%d, %q) error = %v, want %v", tt.status, tt.body, err, tt.wantErr)
				}
			case tt.anyErr:
				if err == nil || errors.Is(err, ErrLoginRequired) || errors.As(err, new(*ServiceError)) {
					t.Errorf("decodeToken(%d, %q) error = %v, want an unreadable-answer error", tt.status, tt.body, err)
				}
			default:
				if err != nil {
					t.Fatalf("decodeToken(%d, %q) error: %v", tt.status, tt.body, err)
				}
				if !got.ExpiresAt.Equal(tt.want.ExpiresAt) || got.AccessToken != tt.want.AccessToken {
					t.Errorf("decodeToken(%d, %q) = %+v, want %+v", tt.status, tt.body, got, tt.want)
				}
			}
			if err != nil && got != (Token{}) {
				t.Errorf("decodeToken(%d, %q) returned %+v with an error", tt.status, tt.body, got)
			}
		})
	}
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkTokenFile asserts path holds exactly want+"\n" with mode 0600.
func checkTokenFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the token file: %v", err)
	}
	if string(b) != want+"\n" {
		t.Errorf("token file = %q, want %q", b, want+"\n")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("token file mode = %v, want -rw-------", fi.Mode())
	}
}

func TestWriteTokenFileNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access_token")
	if err := WriteTokenFile(path, "eyJ.new"); err != nil {
		t.Fatalf("WriteTokenFile error: %v", err)
	}
	checkTokenFile(t, path, "eyJ.new")
	if diff := cmp.Diff([]string{"access_token"}, dirNames(t, dir)); diff != "" {
		t.Errorf("directory after WriteTokenFile (-want +got):\n%s", diff)
	}
}

func TestWriteTokenFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access_token")
	if err := os.WriteFile(path, []byte("eyJ.old-and-longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A reader that opened the old file keeps seeing it whole: the new
	// file replaces it by rename, it is not rewritten in place.
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := WriteTokenFile(path, "eyJ.new"); err != nil {
		t.Fatalf("WriteTokenFile error: %v", err)
	}
	checkTokenFile(t, path, "eyJ.new")
	old := make([]byte, 64)
	n, _ := reader.Read(old)
	if got := string(old[:n]); got != "eyJ.old-and-longer\n" {
		t.Errorf("the old file as its reader sees it = %q, want it unchanged", got)
	}
	if diff := cmp.Diff([]string{"access_token"}, dirNames(t, dir)); diff != "" {
		t.Errorf("directory after replacing (-want +got):\n%s", diff)
	}
	for i := range 3 {
		if err := WriteTokenFile(path, fmt.Sprintf("eyJ.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	checkTokenFile(t, path, "eyJ.2")
	if diff := cmp.Diff([]string{"access_token"}, dirNames(t, dir)); diff != "" {
		t.Errorf("directory after several writes (-want +got):\n%s", diff)
	}
}

func TestWriteTokenFileFailures(t *testing.T) {
	t.Run("missing directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteTokenFile(filepath.Join(dir, "nope", "access_token"), "eyJ.x"); err == nil {
			t.Error("WriteTokenFile into a missing directory = nil, want an error")
		}
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("directory after a failed write = %q, want empty", names)
		}
	})
	t.Run("path is a directory", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "access_token")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := WriteTokenFile(path, "eyJ.x"); err == nil {
			t.Error("WriteTokenFile over a directory = nil, want an error")
		}
		if diff := cmp.Diff([]string{"access_token"}, dirNames(t, dir)); diff != "" {
			t.Errorf("temporary files left after a failed rename (-want +got):\n%s", diff)
		}
	})
}

// inProcess is a RoundTripper that serves requests with a handler in the
// same process, so synctest sees no network and can run the fake clock.
type inProcess struct{ h http.Handler }

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// answer is one scripted reply of a fake tokenkeeper: a status and, for 200,
// a token valid for life from the time of the request.
type answer struct {
	status int
	access string
	life   time.Duration
}

// watchCall is what the fake saw at one request: when, relative to the
// start, and what the token file held then.
type watchCall struct {
	At      time.Duration
	Request keeperRequest
	File    string // "" when absent
}

// scriptedKeeper answers with script in order and records each call.
type scriptedKeeper struct {
	t      *testing.T
	start  time.Time
	path   string
	script []answer
	// onCall, when set, runs at the start of call n (from 1).
	onCall func(n int)

	mu    sync.Mutex // guards calls
	calls []watchCall
}

func (k *scriptedKeeper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	n := len(k.calls)
	file := ""
	if b, err := os.ReadFile(k.path); err == nil {
		file = string(b)
	}
	k.calls = append(k.calls, watchCall{At: time.Since(k.start), Request: seeRequest(r), File: file})
	k.mu.Unlock()
	if k.onCall != nil {
		k.onCall(n + 1)
	}
	if n >= len(k.script) {
		k.t.Errorf("request %d after the end of the script", n+1)
		w.WriteHeader(http.StatusTeapot)
		return
	}
	a := k.script[n]
	w.WriteHeader(a.status)
	if a.status == http.StatusOK {
		fmt.Fprint(w, tokenJSON(a.access, time.Now().Add(a.life)))
		return
	}
	fmt.Fprintf(w, `{"error":"x","message":"scripted %d"}`, a.status)
}

func (k *scriptedKeeper) recorded() []watchCall {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]watchCall(nil), k.calls...)
}

// logLines collects Watch's log lines.
type logLines struct {
	mu    sync.Mutex // guards lines
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func TestWatchRewritesUntilLoginRequired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "access_token")
		k := &scriptedKeeper{t: t, start: time.Now(), path: path, script: []answer{
			{status: 200, access: "a1", life: 300 * time.Second}, // wait ⅔·300 = 200 s
			{status: 500}, // retry in 1 s
			{status: 503}, // retry in 2 s
			{status: 200, access: "a2", life: 90 * time.Second}, // wait 90 − 60 = 30 s
			{status: 502}, // backoff was reset: 1 s
			{status: 200, access: "a3", life: 30 * time.Second}, // less than min_valid left: 1 s
			{status: 409}, // session over
		}}
		var logs logLines
		c := NewClient("http://tokenkeeper.invalid/services/tokenkeeper", "nb-token", &http.Client{Transport: inProcess{k}})
		err := c.Watch(t.Context(), path, time.Minute, time.Now, logs.logf)
		if !errors.Is(err, ErrLoginRequired) {
			t.Errorf("Watch() = %v, want ErrLoginRequired", err)
		}
		req := keeperRequest{"GET", "/services/tokenkeeper/fresh-token", "min_valid=60", "token nb-token"}
		want := []watchCall{
			{At: 0, Request: req, File: ""},
			{At: 200 * time.Second, Request: req, File: "a1\n"},
			{At: 201 * time.Second, Request: req, File: "a1\n"},
			{At: 203 * time.Second, Request: req, File: "a1\n"},
			{At: 233 * time.Second, Request: req, File: "a2\n"},
			{At: 234 * time.Second, Request: req, File: "a2\n"},
			{At: 235 * time.Second, Request: req, File: "a3\n"},
		}
		if diff := cmp.Diff(want, k.recorded()); diff != "" {
			t.Errorf("Watch() calls mismatch (-want +got):\n%s", diff)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("token file after the session ended: Stat = %v, want it removed", err)
		}
		if names := dirNames(t, filepath.Dir(path)); len(names) != 0 {
			t.Errorf("directory after Watch = %q, want empty", names)
		}
		wantLogs := []string{
			"token refresh failed, retrying in 1s: HTTP 500: scripted 500",
			"token refresh failed, retrying in 2s: HTTP 503: scripted 503",
			"token refresh failed, retrying in 1s: HTTP 502: scripted 502",
		}
		if diff := cmp.Diff(wantLogs, logs.get()); diff != "" {
			t.Errorf("Watch() log mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestWatchStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "access_token")
		k := &scriptedKeeper{t: t, start: time.Now(), path: path, script: []answer{{status: 200, access: "a1", life: time.Hour}}}
		c := NewClient("http://tokenkeeper.invalid", "nb-token", &http.Client{Transport: inProcess{k}})
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- c.Watch(ctx, path, time.Minute, time.Now, t.Logf) }()
		synctest.Wait() // Watch wrote the file and waits for its timer
		checkTokenFile(t, path, "a1")
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Watch() after cancel = %v, want nil", err)
		}
		if n := len(k.recorded()); n != 1 {
			t.Errorf("requests = %d, want 1", n)
		}
		if got := time.Since(k.start); got != 0 {
			t.Errorf("Watch() returned after %v of fake time, want at once", got)
		}
		checkTokenFile(t, path, "a1") // a cancelled watch leaves the last token
	})
}

func TestWatchBackoffIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The file cannot be written, so every round fails after a good answer.
		path := filepath.Join(t.TempDir(), "missing", "access_token")
		const rounds = 9
		script := make([]answer, rounds)
		for i := range script {
			script[i] = answer{status: 200, access: "a", life: time.Hour}
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		k := &scriptedKeeper{t: t, start: time.Now(), path: path, script: script, onCall: func(n int) {
			if n == rounds {
				cancel()
			}
		}}
		var logs logLines
		c := NewClient("http://tokenkeeper.invalid", "nb-token", &http.Client{Transport: inProcess{k}})
		if err := c.Watch(ctx, path, time.Minute, time.Now, logs.logf); err != nil {
			t.Errorf("Watch() = %v, want nil after cancel", err)
		}
		var at []time.Duration
		for _, call := range k.recorded() {
			at = append(at, call.At)
		}
		want := []time.Duration{0, 1, 3, 7, 15, 31, 63, 123, 183}
		for i := range want {
			want[i] *= time.Second
		}
		if diff := cmp.Diff(want, at); diff != "" {
			t.Errorf("retry times mismatch (-want +got):\n%s", diff)
		}
		if n := len(logs.get()); n != rounds {
			t.Errorf("log lines = %d, want %d", n, rounds)
		}
	})
}
