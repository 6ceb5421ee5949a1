package serviceaccount

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
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

// maxCachedJobs bounds the job cache. Its entries are evicted oldest first,
// and the oldest entry is the first to expire, so expired entries go first.
const maxCachedJobs = 4096

// pathSegment is what a system name or a job id may look like: a letter or
// digit, then letters, digits, '.', '_', '+' and '-', 64 characters at most.
// It cannot be "." or "..", nor hold a '/'.
var pathSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// JobPathError is a system name or job id that cannot be a path segment of
// the job API.
type JobPathError struct {
	Field, Value string
}

func (e *JobPathError) Error() string {
	return fmt.Sprintf("job API: %s %q: want 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit", e.Field, e.Value)
}

// CheckJobPath returns a *JobPathError unless system and id are both safe
// path segments (see Jobs.Status).
func CheckJobPath(system, id string) error {
	if !pathSegment.MatchString(system) {
		return &JobPathError{Field: "system", Value: system}
	}
	if !pathSegment.MatchString(id) {
		return &JobPathError{Field: "job_id", Value: id}
	}
	return nil
}

// Jobs checks job status at a FirecREST v2 job API with the service
// account's token, caching each answer for the poll interval. The cache
// holds at most maxCachedJobs jobs.
type Jobs struct {
	base   string
	token  func(ctx context.Context) (string, error)
	client *http.Client
	ttl    time.Duration
	now    func() time.Time
	max    int

	mu    sync.Mutex // guards cache, order and locks
	cache map[string]*list.Element
	order *list.List          // of *cached, newest first
	locks map[string]*jobLock // one per job being asked about
}

type cached struct {
	key    string
	status JobStatus
	at     time.Time
}

// jobLock lets one request per job run at a time; it is dropped when nobody
// holds or waits for it.
type jobLock struct {
	ch    chan struct{}
	users int // holders and waiters, guarded by Jobs.mu
}

// NewJobs returns a checker for the job API at base (e.g.
// https://firecrest.example.org), calling token for each request's bearer
// token, caching answers for ttl. The client is copied and never follows
// redirects.
func NewJobs(base string, token func(ctx context.Context) (string, error), client *http.Client,
	ttl time.Duration, now func() time.Time) *Jobs {
	return &Jobs{base: strings.TrimRight(base, "/"), token: token, client: noRedirects(client), ttl: ttl, now: now,
		max: maxCachedJobs, cache: map[string]*list.Element{}, order: list.New(), locks: map[string]*jobLock{}}
}

// Status returns the status of job id on system, from cache when fresh.
// System and id must pass CheckJobPath. Concurrent calls for one job make
// one request.
func (j *Jobs) Status(ctx context.Context, system, id string) (JobStatus, error) {
	if err := CheckJobPath(system, id); err != nil {
		return JobStatus{}, err
	}
	key := system + "\x00" + id
	unlock, err := j.lock(ctx, key)
	if err != nil {
		return JobStatus{}, fmt.Errorf("job API: %w", err)
	}
	defer unlock()
	if s, ok := j.fromCache(key); ok {
		return s, nil
	}
	s, err := j.fetch(ctx, system, id)
	if err != nil {
		return JobStatus{}, err
	}
	j.store(key, s)
	return s, nil
}

// lock waits for the job's lock or for ctx to end, and returns the unlock.
func (j *Jobs) lock(ctx context.Context, key string) (func(), error) {
	j.mu.Lock()
	l, ok := j.locks[key]
	if !ok {
		l = &jobLock{ch: make(chan struct{}, 1)}
		j.locks[key] = l
	}
	l.users++
	j.mu.Unlock()
	release := func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		if l.users--; l.users == 0 {
			delete(j.locks, key)
		}
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func (j *Jobs) fromCache(key string) (JobStatus, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.cache[key]
	if !ok {
		return JobStatus{}, false
	}
	c := e.Value.(*cached)
	if j.now().Sub(c.at) >= j.ttl {
		return JobStatus{}, false
	}
	return c.status, true
}

// store caches s under key as the newest entry, then drops expired entries
// and, beyond the cap, the oldest ones.
func (j *Jobs) store(key string, s JobStatus) {
	now := j.now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if e, ok := j.cache[key]; ok {
		j.order.Remove(e)
	}
	j.cache[key] = j.order.PushFront(&cached{key: key, status: s, at: now})
	for e := j.order.Back(); e != nil; e = j.order.Back() {
		c := e.Value.(*cached)
		if j.order.Len() <= j.max && now.Sub(c.at) < j.ttl {
			break
		}
		j.order.Remove(e)
		delete(j.cache, c.key)
	}
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
