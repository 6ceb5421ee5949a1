package spawnerhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

// Caller tokens for the service-account endpoints, on top of identities.
var saIdentities = map[string]hubclient.Identity{
	"ci-token": {Kind: "service", Name: "ci", Scopes: []string{
		"access:services!service=tokenkeeper", ScopeServiceAccount, ScopeTokens,
	}},
	// Every custom scope, but no access to the service.
	"ci-no-access": {Kind: "service", Name: "ci", Scopes: []string{ScopeServiceAccount, ScopeTokens, "access:servers"}},
	// Access to another service only.
	"ci-other-service": {Kind: "service", Name: "ci", Scopes: []string{
		"access:services!service=other", ScopeServiceAccount, ScopeTokens,
	}},
}

// saFakes records the calls of the service-account endpoints.
type saFakes struct {
	mu         sync.Mutex // guards the fields below
	calls      []string
	serviceErr error
	logoutErr  error
}

func (f *saFakes) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *saFakes) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *saFakes) deps() Deps {
	d := (&fakes{}).deps()
	identify := d.Identify
	d.Identify = func(ctx context.Context, token string) (hubclient.Identity, error) {
		if id, ok := saIdentities[token]; ok {
			return id, nil
		}
		return identify(ctx, token)
	}
	fresh := d.Fresh
	d.Fresh = func(ctx context.Context, user string, minValid time.Duration) (refresh.Tokens, error) {
		f.record("fresh " + user)
		return fresh(ctx, user, minValid)
	}
	d.ServiceToken = func(ctx context.Context, audience string) (*oauth2.Token, error) {
		f.record("service-token " + audience)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.serviceErr != nil {
			return nil, f.serviceErr
		}
		return &oauth2.Token{AccessToken: "sa-for-" + audience, Expiry: testNow.Add(time.Minute)}, nil
	}
	d.JobStatus = func(ctx context.Context, system, id string) (serviceaccount.JobStatus, error) {
		f.record("job " + system + " " + id)
		return serviceaccount.JobStatus{State: "running", Running: true}, nil
	}
	d.Status = func(ctx context.Context, user string) (refresh.UserStatus, error) {
		f.record("status " + user)
		return refresh.UserStatus{}, nil
	}
	d.BackchannelLogout = func(ctx context.Context, raw string) ([]string, error) {
		f.record("logout " + raw)
		f.mu.Lock()
		defer f.mu.Unlock()
		return []string{"alice"}, f.logoutErr
	}
	return d
}

// TestEveryAuthenticatedEndpointNeedsTheAccessScope checks that a token
// holding every custom scope but none of the access scopes gets nothing.
func TestEveryAuthenticatedEndpointNeedsTheAccessScope(t *testing.T) {
	endpoints := []struct{ target, call string }{
		{"fresh-token?user=alice", "fresh alice"},
		{"service-token", "service-token "},
		{"job-status?system=daint&job_id=42", "job daint 42"},
		{"status?user=alice", "status alice"},
	}
	for _, e := range endpoints {
		for _, tok := range []string{"ci-no-access", "ci-other-service"} {
			t.Run(tok+"/"+e.target, func(t *testing.T) {
				f := &saFakes{}
				res := get(t, NewHandler(prefix, f.deps()), prefix+e.target, "token "+tok)
				checkError(t, e.target, res, http.StatusForbidden, "forbidden")
				if calls := f.recorded(); len(calls) != 0 {
					t.Errorf("GET %s without the access scope called %q, want nothing", e.target, calls)
				}
			})
		}
		t.Run("with access/"+e.target, func(t *testing.T) {
			f := &saFakes{}
			res := get(t, NewHandler(prefix, f.deps()), prefix+e.target, "token ci-token")
			if res.status != http.StatusOK {
				t.Fatalf("GET %s with the access scope: %d %s", e.target, res.status, res.raw)
			}
			if diff := cmp.Diff([]string{e.call}, f.recorded()); diff != "" {
				t.Errorf("GET %s calls (-want +got):\n%s", e.target, diff)
			}
		})
	}
}

func TestServiceTokenAudience(t *testing.T) {
	tests := []struct {
		name     string
		query    string
		err      error
		status   int
		code     string
		wantCall string
		message  string // a substring of the error message
	}{
		{name: "no audience", status: 200, wantCall: "service-token "},
		{name: "audience", query: "?audience=trino", status: 200, wantCall: "service-token trino"},
		{name: "audience not allowed", query: "?audience=minio",
			err:    fmt.Errorf("service account: %w: %q", keycloak.ErrAudienceNotAllowed, "minio"),
			status: 403, code: "audience_not_allowed", wantCall: "service-token minio"},
		{name: "keycloak refuses", query: "?audience=trino",
			err: &keycloak.ExchangeError{Audience: "trino", Status: 400, Code: "invalid_request",
				Description: "Requested audience not available: trino", Err: &oauth2.RetrieveError{}},
			status: 502, code: "exchange_refused", wantCall: "service-token trino", message: "invalid_request: Requested audience not available: trino"},
		{name: "admin roles", err: &serviceaccount.AdminRolesError{Roles: []string{"manage-users"}},
			status: 500, code: "misconfigured", wantCall: "service-token "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &saFakes{serviceErr: tt.err}
			target := prefix + "service-token" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, "token ci-token")
			if diff := cmp.Diff([]string{tt.wantCall}, f.recorded()); diff != "" {
				t.Errorf("GET %s calls (-want +got):\n%s", target, diff)
			}
			if tt.status != 200 {
				checkError(t, target, res, tt.status, tt.code)
				if msg, _ := res.body["message"].(string); !strings.Contains(msg, tt.message) {
					t.Errorf("GET %s message = %q, want it to contain %q", target, msg, tt.message)
				}
				return
			}
			if res.status != 200 || res.body["access_token"] != "sa-for-"+strings.TrimPrefix(tt.query, "?audience=") {
				t.Errorf("GET %s = %d %s", target, res.status, res.raw)
			}
		})
	}
}

func TestJobStatusParameters(t *testing.T) {
	tests := []struct {
		query string
		ok    bool
	}{
		{query: "system=daint&job_id=42", ok: true},
		{query: "system=eiger.alps&job_id=123_4", ok: true},
		{query: "system=daint&job_id=42&user=olga"},
		{query: "system=daint&job_id=42&user="},
		{query: "system=daint"},
		{query: "job_id=42"},
		{query: "system=..&job_id=42"},
		{query: "system=.&job_id=42"},
		{query: "system=daint&job_id=.."},
		{query: "system=daint&job_id=" + url.QueryEscape("../../users")},
		{query: "system=" + url.QueryEscape("a/b") + "&job_id=42"},
		{query: "system=daint&job_id=" + strings.Repeat("1", 65)},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			f := &saFakes{}
			target := prefix + "job-status?" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, "token ci-token")
			if tt.ok {
				if res.status != 200 || len(f.recorded()) != 1 {
					t.Errorf("GET %s = %d %s, calls %q; want 200 and one call", target, res.status, res.raw, f.recorded())
				}
				return
			}
			checkError(t, target, res, http.StatusBadRequest, "bad_request")
			if calls := f.recorded(); len(calls) != 0 {
				t.Errorf("GET %s called %q, want nothing", target, calls)
			}
		})
	}
}

// post sends a POST to the handler and returns the recorded reply.
func post(t *testing.T, h http.Handler, target, contentType, body string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if err := jsonObject(rec.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("POST %s: body %q is not a JSON object: %v", target, res.raw, err)
	}
	return res
}

func TestBackchannelLogoutBody(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	token := "eyJhbGciOiJSUzI1NiJ9.eyJqdGkiOiIxIn0.c2ln"
	var mp strings.Builder
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("logout_token", token)
	_ = mw.Close()
	tests := []struct {
		name        string
		query       string
		contentType string
		body        string
		status      int
		code        string
	}{
		{name: "form", contentType: form, body: "logout_token=" + token, status: 200},
		{name: "form with charset", contentType: form + "; charset=UTF-8", body: "logout_token=" + token, status: 200},
		{name: "just under the limit", contentType: form,
			body: "logout_token=" + token + "&pad=" + strings.Repeat("x", maxBody-len("logout_token=&pad=")-len(token)), status: 200},
		{name: "over the limit", contentType: form,
			body: "logout_token=" + token + "&pad=" + strings.Repeat("x", maxBody), status: 413, code: "too_large"},
		{name: "multipart", contentType: mw.FormDataContentType(), body: mp.String(), status: 415, code: "unsupported_media_type"},
		{name: "JSON", contentType: "application/json", body: `{"logout_token":"` + token + `"}`, status: 415, code: "unsupported_media_type"},
		{name: "no content type", body: "logout_token=" + token, status: 415, code: "unsupported_media_type"},
		{name: "malformed form", contentType: form, body: "logout_token=%zz", status: 400, code: "bad_request"},
		{name: "token in the query only", query: "?logout_token=" + token, contentType: form, body: "", status: 400, code: "bad_request"},
		{name: "no token", contentType: form, body: "other=1", status: 400, code: "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &saFakes{}
			target := prefix + "backchannel-logout" + tt.query
			res := post(t, NewHandler(prefix, f.deps()), target, tt.contentType, tt.body)
			if tt.status == 200 {
				if res.status != 200 || !cmp.Equal(f.recorded(), []string{"logout " + token}) {
					t.Errorf("POST %s = %d %s, calls %q; want 200 and the token passed on", target, res.status, res.raw, f.recorded())
				}
				return
			}
			checkError(t, target, res, tt.status, tt.code)
			if calls := f.recorded(); len(calls) != 0 {
				t.Errorf("POST %s called %q, want nothing", target, calls)
			}
		})
	}
}

func TestBackchannelLogoutErrors(t *testing.T) {
	f := &saFakes{logoutErr: &refresh.LogoutTokenError{Err: errors.New("typ header \"JWT+at\"")}}
	res := post(t, NewHandler(prefix, f.deps()), prefix+"backchannel-logout", "application/x-www-form-urlencoded", "logout_token=x.y.z")
	checkError(t, "backchannel-logout", res, http.StatusBadRequest, "invalid_logout_token")
}

// jsonObject decodes a JSON object.
func jsonObject(b []byte, v *map[string]any) error { return json.Unmarshal(b, v) }
