package serviceaccount

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// JobStatus is a job's state in a form a spawner's poll can use directly.
type JobStatus struct {
	// State is the scheduler's state in lower case, e.g. "running",
	// "pending", "completed", "failed".
	State string `json:"state"`
	// Running is true while the job is queued or alive, i.e. until it
	// reaches a final state.
	Running bool `json:"running"`
	// Raw is the job API's answer as it came.
	Raw json.RawMessage `json:"raw"`
}

// finalStates are the Slurm states after which a job will not run again.
var finalStates = map[string]bool{
	"completed": true, "failed": true, "cancelled": true, "timeout": true, "node_fail": true,
	"preempted": true, "out_of_memory": true, "boot_fail": true, "deadline": true,
}

// JobError is a non-2xx answer from the job API.
type JobError struct {
	Status  int
	Message string
}

func (e *JobError) Error() string { return fmt.Sprintf("job API: HTTP %d: %s", e.Status, e.Message) }

// Jobs checks job status at a FirecREST v2 job API with the service
// account's token, caching each answer for the poll interval.
type Jobs struct {
	base    string
	token   func(ctx context.Context) (string, error)
	client  *http.Client
	ttl     time.Duration
	now     func() time.Time
	flights sync.Map // key → *sync.Mutex, one request per job at a time

	mu    sync.Mutex // guards cache
	cache map[string]cached
}

type cached struct {
	status JobStatus
	at     time.Time
}

// NewJobs returns a checker for the job API at base (e.g.
// https://firecrest.example.org), calling token for each request's bearer
// token, caching answers for ttl.
func NewJobs(base string, token func(ctx context.Context) (string, error), client *http.Client,
	ttl time.Duration, now func() time.Time) *Jobs {
	return &Jobs{base: strings.TrimRight(base, "/"), token: token, client: client, ttl: ttl, now: now,
		cache: map[string]cached{}}
}

// Status returns the status of job id on system, from cache when fresh.
func (j *Jobs) Status(ctx context.Context, system, id string) (JobStatus, error) {
	key := system + "\x00" + id
	mu, _ := j.flights.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if s, ok := j.fromCache(key); ok {
		return s, nil
	}
	s, err := j.fetch(ctx, system, id)
	if err != nil {
		return JobStatus{}, err
	}
	j.mu.Lock()
	j.cache[key] = cached{status: s, at: j.now()}
	j.mu.Unlock()
	return s, nil
}

func (j *Jobs) fromCache(key string) (JobStatus, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	c, ok := j.cache[key]
	if !ok || j.now().Sub(c.at) >= j.ttl {
		return JobStatus{}, false
	}
	return c.status, true
}

func (j *Jobs) fetch(ctx context.Context, system, id string) (JobStatus, error) {
	tok, err := j.token(ctx)
	if err != nil {
		return JobStatus{}, err
	}
	u := fmt.Sprintf("%s/compute/%s/jobs/%s", j.base, url.PathEscape(system), url.PathEscape(id))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return JobStatus{}, fmt.Errorf("job API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return JobStatus{}, fmt.Errorf("job API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return JobStatus{}, fmt.Errorf("job API: read: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return JobStatus{}, &JobError{Status: resp.StatusCode, Message: truncate(string(body), 200)}
	}
	return ParseJob(body)
}

// ParseJob reads a FirecREST v2 job answer: {"jobs": [{"status": {"state": "RUNNING", ...}, ...}]}.
func ParseJob(body []byte) (JobStatus, error) {
	var v struct {
		Jobs []struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return JobStatus{}, fmt.Errorf("job API: decode: %w", err)
	}
	if len(v.Jobs) == 0 || len(strings.Fields(v.Jobs[0].Status.State)) == 0 {
		return JobStatus{}, errors.New("job API: answer has no job state")
	}
	state := strings.ToLower(strings.Fields(v.Jobs[0].Status.State)[0])
	return JobStatus{State: state, Running: !finalStates[state], Raw: body}, nil
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
