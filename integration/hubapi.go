package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// HubAPI calls the hub's REST API with token and decodes the JSON answer
// into out (when not nil). Non-2xx answers are errors carrying the status.
func HubAPI(ctx context.Context, api, token, method, path string, body, out any) error {
	return doJSON(ctx, api, "token "+token, method, path, body, out)
}

func doJSON(ctx context.Context, api, authorization, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, api+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", authorization)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return &StatusError{Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// IsStatus reports whether err is a *StatusError with status.
func IsStatus(err error, status int) bool {
	var e *StatusError
	return errors.As(err, &e) && e.Status == status
}

// API calls the hub's REST API with the tests' admin token.
func (s *Stack) API(ctx context.Context, method, path string, body, out any) error {
	return HubAPI(ctx, s.HubAPI(), s.TestToken, method, path, body, out)
}

// UserToken creates a hub API token for user with the given scopes.
func (s *Stack) UserToken(ctx context.Context, user string, scopes ...string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	body := map[string]any{"note": "integration test", "scopes": scopes}
	err := s.API(ctx, http.MethodPost, "/users/"+url.PathEscape(user)+"/tokens", body, &out)
	return out.Token, err
}

// AuthState reads a user's auth_state.
func (s *Stack) AuthState(ctx context.Context, user string) (map[string]any, error) {
	var u struct {
		AuthState map[string]any `json:"auth_state"`
	}
	err := s.API(ctx, http.MethodGet, "/users/"+url.PathEscape(user), nil, &u)
	return u.AuthState, err
}

// StartServer starts user's default server through the hub API and waits
// until the hub reports it ready. A server already starting or running is
// waited for, not started twice.
func (s *Stack) StartServer(ctx context.Context, user string) error {
	err := s.API(ctx, http.MethodPost, "/users/"+url.PathEscape(user)+"/server", nil, nil)
	if err != nil && !IsStatus(err, http.StatusBadRequest) {
		return fmt.Errorf("start the server of %s: %w", user, err)
	}
	err = Poll(ctx, 90*time.Second, 500*time.Millisecond, func() (bool, error) {
		srv, err := s.server(ctx, user)
		return err == nil && srv != nil && srv.Ready, err
	})
	if err != nil {
		return fmt.Errorf("the server of %s is not ready: %w", user, err)
	}
	return nil
}

// StopServer stops user's default server through the hub API and waits
// until the hub no longer lists it.
func (s *Stack) StopServer(ctx context.Context, user string) error {
	err := s.API(ctx, http.MethodDelete, "/users/"+url.PathEscape(user)+"/server", nil, nil)
	if err != nil && !IsStatus(err, http.StatusBadRequest) {
		return fmt.Errorf("stop the server of %s: %w", user, err)
	}
	err = Poll(ctx, time.Minute, 500*time.Millisecond, func() (bool, error) {
		srv, err := s.server(ctx, user)
		return err == nil && srv == nil, err
	})
	if err != nil {
		return fmt.Errorf("the server of %s did not stop: %w", user, err)
	}
	return nil
}

// hubServer is the part of the hub's server model the helpers read.
type hubServer struct {
	Ready   bool   `json:"ready"`
	Pending string `json:"pending"`
}

// server returns user's default server as the hub lists it, or nil.
func (s *Stack) server(ctx context.Context, user string) (*hubServer, error) {
	var u struct {
		Servers map[string]*hubServer `json:"servers"`
	}
	if err := s.API(ctx, http.MethodGet, "/users/"+url.PathEscape(user), nil, &u); err != nil {
		return nil, err
	}
	return u.Servers[""], nil
}

// Poll calls f every interval until it returns true or the deadline passes.
func Poll(ctx context.Context, limit, every time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s (last error: %v)", limit, last)
		case <-t.C:
		}
	}
}
