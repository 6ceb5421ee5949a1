package serviceaccount

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// apiRequest is what a fake API saw of one request.
type apiRequest struct {
	Method        string
	Path          string
	Query         string
	Authorization string
	Accept        string
}

// fakeAPI is an httptest server that records requests and answers with a handler.
type fakeAPI struct {
	srv *httptest.Server

	mu   sync.Mutex // guards reqs
	reqs []apiRequest
}

func newFakeAPI(t *testing.T, answer http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, apiRequest{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Accept")})
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) requests() []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiRequest(nil), f.reqs...)
}

// firecrestJob is a FirecREST v2 answer for one job in state.
func firecrestJob(id, state string) string {
	return fmt.Sprintf(`{"jobs":[{"jobId":%q,"name":"notebook","status":{"state":%q,"stateReason":"None","exitCode":0},
		"tasks":[],"account":"csstaff","user":"alice","group":"csstaff"}]}`, id, state)
}

// stepClock is a settable clock.
type stepClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
}

// serviceToken returns a token function handing out tok and counting calls.
func serviceToken(tok string, calls *atomic.Int32) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		calls.Add(1)
		return tok, nil
	}
}

func TestJobsStatus(t *testing.T) {
	tests := []struct {
		state   string
		want    string
		running bool
	}{
		{state: "RUNNING", want: "running", running: true},
		{state: "PENDING", want: "pending", running: true},
		{state: "COMPLETED", want: "completed", running: false},
		{state: "FAILED", want: "failed", running: false},
		{state: "CANCELLED", want: "cancelled", running: false},
		{state: "TIMEOUT", want: "timeout", running: false},
		{state: "NODE_FAIL", want: "node_fail", running: false},
		{state: "OUT_OF_MEMORY", want: "out_of_memory", running: false},
		{state: "PREEMPTED", want: "preempted", running: false},
		{state: "SUSPENDED", want: "suspended", running: true},
		{state: "COMPLETING", want: "completing", running: true},
		{state: "CANCELLED by 20517", want: "cancelled", running: false},
		{state: "COMPLETED by user", want: "completed", running: false},
		{state: "  RUNNING\t", want: "running", running: true},
		{state: "running", want: "running", running: true},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			body := firecrestJob("4242", tt.state)
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, body)
			})
			var tokenCalls atomic.Int32
			j := NewJobs(api.srv.URL, serviceToken("sa-token", &tokenCalls), api.srv.Client(), time.Minute, newStepClock().Now)
			got, err := j.Status(context.Background(), "daint", "4242")
			if err != nil {
				t.Fatalf("Status(daint, 4242) on %q: %v", tt.state, err)
			}
			want := JobStatus{State: tt.want, Running: tt.running, Raw: json.RawMessage(body)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Status on %q mismatch (-want +got):\n%s", tt.state, diff)
			}
			wantReq := []apiRequest{{Method: "GET", Path: "/compute/daint/jobs/4242", Authorization: "Bearer sa-token", Accept: "application/json"}}
			if diff := cmp.Diff(wantReq, api.requests()); diff != "" {
				t.Errorf("Status requests mismatch (-want +got):\n%s", diff)
			}
			if n := tokenCalls.Load(); n != 1 {
				t.Errorf("token asked %d times, want 1", n)
			}
		})
	}
}

func TestJobsPaths(t *testing.T) {
	tests := []struct {
		name, base, system, id string
		want                   string
	}{
		{name: "plain", base: "", system: "daint", id: "1", want: "/compute/daint/jobs/1"},
		{name: "base with path and slash", base: "/api/v2/", system: "eiger", id: "77", want: "/api/v2/compute/eiger/jobs/77"},
		{name: "array job", base: "", system: "daint-gpu", id: "12345_7", want: "/compute/daint-gpu/jobs/12345_7"},
		{name: "heterogeneous job", base: "", system: "eiger.alps", id: "12345+1", want: "/compute/eiger.alps/jobs/12345+1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, firecrestJob(tt.id, "RUNNING")) })
			var calls atomic.Int32
			j := NewJobs(api.srv.URL+tt.base, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, time.Now)
			if _, err := j.Status(context.Background(), tt.system, tt.id); err != nil {
				t.Fatal(err)
			}
			if got := api.requests(); len(got) != 1 || got[0].Path != tt.want {
				t.Errorf("Status(%q, %q) requests = %+v, want one to %s", tt.system, tt.id, got, tt.want)
			}
		})
	}
}

func TestJobsCache(t *testing.T) {
	var state atomic.Value
	state.Store("PENDING")
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, firecrestJob("1", state.Load().(string)))
	})
	clk := newStepClock()
	var tokenCalls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &tokenCalls), api.srv.Client(), 30*time.Second, clk.Now)
	steps := []struct {
		name     string
		advance  time.Duration
		setState string
		system   string
		want     string
		requests int
	}{
		{name: "first", system: "daint", want: "pending", requests: 1},
		{name: "within the TTL", advance: 29 * time.Second, setState: "RUNNING", system: "daint", want: "pending", requests: 1},
		{name: "at the TTL", advance: time.Second, system: "daint", want: "running", requests: 2},
		{name: "cached again", advance: 10 * time.Second, setState: "COMPLETED", system: "daint", want: "running", requests: 2},
		{name: "same id, other system", system: "eiger", want: "completed", requests: 3},
		{name: "after the TTL", advance: time.Hour, system: "daint", want: "completed", requests: 4},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		if s.setState != "" {
			state.Store(s.setState)
		}
		got, err := j.Status(context.Background(), s.system, "1")
		if err != nil {
			t.Fatalf("%s: Status error: %v", s.name, err)
		}
		if got.State != s.want {
			t.Errorf("%s: Status(%s, 1).State = %q, want %q", s.name, s.system, got.State, s.want)
		}
		if n := len(api.requests()); n != s.requests {
			t.Errorf("%s: requests = %d, want %d", s.name, n, s.requests)
		}
		if n := int(tokenCalls.Load()); n != s.requests {
			t.Errorf("%s: token asked %d times, want once per request (%d)", s.name, n, s.requests)
		}
	}
}

func TestJobsConcurrentCallsMakeOneRequest(t *testing.T) {
	const callers = 10
	var started atomic.Int32
	allStarted := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		<-allStarted
		fmt.Fprint(w, firecrestJob("1", "RUNNING"))
	})
	var calls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, time.Now)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if started.Add(1) == callers {
				close(allStarted)
			}
			if s, err := j.Status(context.Background(), "daint", "1"); err != nil || s.State != "running" {
				t.Errorf("Status = %+v, %v; want running", s, err)
			}
		})
	}
	wg.Wait()
	if n := len(api.requests()); n != 1 {
		t.Errorf("%d concurrent Status calls made %d requests, want 1", callers, n)
	}
}

func TestJobsErrors(t *testing.T) {
	long := strings.Repeat("e", 300)
	tests := []struct {
		name   string
		status int
		body   string
		want   *JobError
	}{
		{name: "not found", status: 404, body: `{"message":"Job not found"}`, want: &JobError{Status: 404, Message: `{"message":"Job not found"}`}},
		{name: "unauthorized", status: 401, body: `{"message":"invalid token"}`, want: &JobError{Status: 401, Message: `{"message":"invalid token"}`}},
		{name: "server error, long body", status: 500, body: long, want: &JobError{Status: 500, Message: long[:200]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			})
			var calls atomic.Int32
			j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, newStepClock().Now)
			for range 2 {
				_, err := j.Status(context.Background(), "daint", "9")
				var got *JobError
				if !errors.As(err, &got) {
					t.Fatalf("Status error = %v (%T), want *JobError", err, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Status error mismatch (-want +got):\n%s", diff)
				}
			}
			if n := len(api.requests()); n != 2 {
				t.Errorf("requests for two failing calls = %d, want 2 (errors are not cached)", n)
			}
		})
	}
}

func TestJobsTokenFailure(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {})
	wantErr := errors.New("service account: keycloak down")
	j := NewJobs(api.srv.URL, func(context.Context) (string, error) { return "", wantErr }, api.srv.Client(), time.Minute, time.Now)
	if _, err := j.Status(context.Background(), "daint", "1"); !errors.Is(err, wantErr) {
		t.Errorf("Status with a failing token = %v, want %v", err, wantErr)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("requests without a token = %d, want 0", n)
	}
}

func TestParseJobRejectsJunk(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{name: "empty", body: ``},
		{name: "not JSON", body: `<html>oops</html>`},
		{name: "empty object", body: `{}`},
		{name: "null", body: `null`},
		{name: "no jobs", body: `{"jobs":[]}`},
		{name: "jobs not a list", body: `{"jobs":{"status":{"state":"RUNNING"}}}`},
		{name: "no status", body: `{"jobs":[{"jobId":"1"}]}`},
		{name: "empty state", body: `{"jobs":[{"status":{"state":""}}]}`},
		{name: "state not a string", body: `{"jobs":[{"status":{"state":3}}]}`},
		{name: "v1 shape", body: `[{"jobid":"1","state":"RUNNING"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJob([]byte(tt.body))
			if err == nil {
				t.Errorf("ParseJob(%q) = %+v, want an error", tt.body, got)
			}
		})
	}
}

// parseJobSafely calls ParseJob and turns a panic into an error.
func parseJobSafely(body []byte) (s JobStatus, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return ParseJob(body)
}

func TestParseJobBlankState(t *testing.T) {
	for _, state := range []string{" ", "\t", "  \n "} {
		body := fmt.Sprintf(`{"jobs":[{"status":{"state":%q}}]}`, state)
		_, err := parseJobSafely([]byte(body))
		if err == nil || strings.HasPrefix(err.Error(), "panic:") {
			t.Errorf("ParseJob(%s) error = %v, want an ordinary error", body, err)
		}
	}
}

func TestJobErrorTruncatesOnRuneBoundary(t *testing.T) {
	body := "x" + strings.Repeat("ü", 150) // 301 bytes; byte 200 falls inside a "ü"
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, body)
	})
	var calls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, time.Now)
	_, err := j.Status(context.Background(), "daint", "1")
	var jerr *JobError
	if !errors.As(err, &jerr) {
		t.Fatalf("Status error = %v, want *JobError", err)
	}
	if !utf8.ValidString(jerr.Message) || len(jerr.Message) > 200 || !strings.HasPrefix(body, jerr.Message) {
		t.Errorf("Message = %q (%d bytes), want a valid UTF-8 prefix of the body of at most 200 bytes", jerr.Message, len(jerr.Message))
	}
}

// TestJobsRefusesUnsafePaths checks that a system or job id that is not a
// plain path segment is refused before any request.
func TestJobsRefusesUnsafePaths(t *testing.T) {
	tests := []struct{ system, id, field string }{
		{system: "", id: "1", field: "system"},
		{system: "daint", id: "", field: "job_id"},
		{system: ".", id: "1", field: "system"},
		{system: "..", id: "1", field: "system"},
		{system: "daint", id: "..", field: "job_id"},
		{system: "daint", id: "../../admin", field: "job_id"},
		{system: "a/b", id: "1", field: "system"},
		{system: "daint", id: "12/3", field: "job_id"},
		{system: "a b", id: "1", field: "system"},
		{system: "daint", id: "%2e%2e", field: "job_id"},
		{system: "daint", id: "1?x=y", field: "job_id"},
		{system: "daint", id: "-1", field: "job_id"},
		{system: "dä", id: "1", field: "system"},
		{system: strings.Repeat("d", 65), id: "1", field: "system"},
		{system: "daint", id: strings.Repeat("9", 65), field: "job_id"},
	}
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, firecrestJob("1", "RUNNING")) })
	var calls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, time.Now)
	for _, tt := range tests {
		_, err := j.Status(context.Background(), tt.system, tt.id)
		var perr *JobPathError
		if !errors.As(err, &perr) || perr.Field != tt.field {
			t.Errorf("Status(%q, %q) error = %v, want *JobPathError for %s", tt.system, tt.id, err, tt.field)
		}
	}
	if _, err := j.Status(context.Background(), strings.Repeat("d", 64), strings.Repeat("9", 64)); err != nil {
		t.Errorf("Status with 64-character segments: %v", err)
	}
	if n := len(api.requests()); n != 1 {
		t.Errorf("requests = %d, want 1 (only for the valid path)", n)
	}
}

// TestJobsCacheIsBounded checks that many distinct jobs leave at most
// maxCachedJobs entries and no per-job lock behind.
func TestJobsCacheIsBounded(t *testing.T) {
	const jobs = 20000
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(firecrestJob("1", "RUNNING"))), Request: r}, nil
	})}
	var calls atomic.Int32
	j := NewJobs("http://firecrest.invalid", serviceToken("sa-token", &calls), client, time.Hour, newStepClock().Now)
	for i := range jobs {
		if _, err := j.Status(context.Background(), "daint", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if n := len(j.cache); n > maxCachedJobs || n != j.order.Len() {
		t.Errorf("cached jobs after %d distinct ones = %d (list %d), want at most %d", jobs, n, j.order.Len(), maxCachedJobs)
	}
	if n := len(j.locks); n != 0 {
		t.Errorf("per-job locks left after every call returned = %d, want 0", n)
	}
}

// TestJobsCacheEvictsExpiredFirst checks the eviction order: expired
// entries go as soon as a new one comes, then the oldest beyond the cap.
func TestJobsCacheEvictsExpiredFirst(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, firecrestJob("1", "RUNNING")) })
	clk := newStepClock()
	var calls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), 10*time.Second, clk.Now)
	j.max = 3
	cachedIDs := func() []string {
		j.mu.Lock()
		defer j.mu.Unlock()
		var ids []string
		for e := j.order.Front(); e != nil; e = e.Next() {
			ids = append(ids, strings.Split(e.Value.(*cached).key, "\x00")[1])
		}
		return ids
	}
	steps := []struct {
		advance time.Duration
		id      string
		want    []string
	}{
		{0, "j1", []string{"j1"}},
		{5 * time.Second, "j2", []string{"j2", "j1"}},
		{6 * time.Second, "j3", []string{"j3", "j2"}}, // j1 expired at 10 s
		{time.Second, "j4", []string{"j4", "j3", "j2"}},
		{time.Second, "j5", []string{"j5", "j4", "j3"}}, // over the cap: the oldest goes
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		if _, err := j.Status(context.Background(), "daint", s.id); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, cachedIDs()); diff != "" {
			t.Errorf("after %s: cached jobs (-want +got):\n%s", s.id, diff)
		}
	}
}

// TestJobsWaiterGivesUp checks that a caller waiting for another call of the
// same job stops waiting when its context ends, and leaves no lock behind.
func TestJobsWaiterGivesUp(t *testing.T) {
	release := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprint(w, firecrestJob("1", "RUNNING"))
	})
	var calls atomic.Int32
	j := NewJobs(api.srv.URL, serviceToken("sa-token", &calls), api.srv.Client(), time.Minute, time.Now)
	first := make(chan error, 1)
	go func() {
		_, err := j.Status(context.Background(), "daint", "1")
		first <- err
	}()
	waitFor(t, func() bool { return len(api.requests()) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := j.Status(ctx, "daint", "1"); !errors.Is(err, context.Canceled) {
		t.Errorf("waiting Status with an ended context = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if n := len(j.locks); n != 0 {
		t.Errorf("per-job locks left = %d, want 0", n)
	}
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
