package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// formAction finds the action of Keycloak's login form.
var formAction = regexp.MustCompile(`<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"|<form[^>]*action="([^"]+)"[^>]*id="kc-form-login"`)

// Login signs username in to the hub through the real OAuth code flow: the
// hub redirects to Keycloak, the login form is filled in, and Keycloak
// redirects back to the hub's callback. The returned client carries the
// hub's cookies.
func Login(ctx context.Context, hubURL, username, password string) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	page, err := get(ctx, c, hubURL+"/hub/oauth_login")
	if err != nil {
		return nil, fmt.Errorf("login %s: open login page: %w", username, err)
	}
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		return nil, fmt.Errorf("login %s: no Keycloak login form in the page", username)
	}
	action := html.UnescapeString(m[1] + m[2])
	form := url.Values{"username": {username}, "password": {password}, "credentialId": {""}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, action, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("login %s: submit form: %w", username, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), hubURL+"/") {
		return nil, fmt.Errorf("login %s: ended at %s with %d, want the hub", username, resp.Request.URL, resp.StatusCode)
	}
	return c, nil
}

func get(ctx context.Context, c *http.Client, u string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return string(b), err
}

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

// Userinfo calls Keycloak's userinfo endpoint with an access token and
// returns the status.
func (s *Stack) Userinfo(ctx context.Context, accessToken string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Issuer()+"/protocol/openid-connect/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
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
