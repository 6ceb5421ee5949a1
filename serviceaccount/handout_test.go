package serviceaccount

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// fakeJWT is an unsigned token whose payload is claims.
func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// exchangeRealm answers client-credentials grants with saToken and token
// exchanges with "exchanged-N-for-AUD" living exchangeLife seconds, or with
// refusal when it is set.
type exchangeRealm struct {
	saToken      string
	exchanged    string // when set, the access token of every exchange
	exchangeLife int
	refusal      func(w http.ResponseWriter)
	exchanges    atomic.Int32
}

func (x *exchangeRealm) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.PostFormValue("grant_type") {
	case "client_credentials":
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":300}`, x.saToken)
	case grantTokenExchange:
		n := x.exchanges.Add(1)
		if x.refusal != nil {
			x.refusal(w)
			return
		}
		tok := x.exchanged
		if tok == "" {
			tok = fmt.Sprintf("exchanged-%d-for-%s", n, r.PostFormValue("audience"))
		}
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d,"issued_token_type":%q}`,
			tok, x.exchangeLife, tokenTypeAccess)
	default:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
	}
}

func newHandout(t *testing.T, x *exchangeRealm, audiences ...string) (*Handout, *fakeTokenEndpoint) {
	t.Helper()
	f := newFakeTokenEndpoint(t, 300)
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.Clone(r.Context())
		_ = body.ParseForm()
		f.mu.Lock()
		req := tokenRequest{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Form: body.PostForm}
		if u, p, ok := r.BasicAuth(); ok {
			req.User, _ = url.QueryUnescape(u)
			req.Password, _ = url.QueryUnescape(p)
		}
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		x.serve(w, body)
	})
	var discovered atomic.Int32
	a := New(context.Background(), f.srv.Client(), saClientID, config.Secret(saSecret), f.endpoint(&discovered), 15*time.Second)
	return NewHandout(a, audiences, time.Now), f
}

func TestHandoutExchangeRequest(t *testing.T) {
	x := &exchangeRealm{saToken: "sa-token", exchangeLife: 300}
	h, f := newHandout(t, x, "trino", "minio")
	tok, err := h.Token(context.Background(), "trino")
	if err != nil {
		t.Fatalf("Token(trino) error: %v", err)
	}
	if tok.AccessToken != "exchanged-1-for-trino" {
		t.Errorf("Token(trino) = %q, want exchanged-1-for-trino", tok.AccessToken)
	}
	if left := time.Until(tok.Expiry); left < 290*time.Second || left > 300*time.Second {
		t.Errorf("Token(trino) expires in %v, want about 300s", left)
	}
	want := []tokenRequest{wantTokenRequest, {
		Method: "POST", Path: tokenPath, ContentType: "application/x-www-form-urlencoded",
		User: saClientID, Password: saSecret,
		Form: url.Values{
			"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":        {"sa-token"},
			"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
			"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"audience":             {"trino"},
		},
	}}
	if diff := cmp.Diff(want, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
}

func TestHandoutWithoutAudience(t *testing.T) {
	x := &exchangeRealm{saToken: "sa-token", exchangeLife: 300}
	h, f := newHandout(t, x, "trino")
	tok, err := h.Token(context.Background(), "")
	if err != nil || tok.AccessToken != "sa-token" {
		t.Fatalf("Token(\"\") = %v, %v; want the service account's own token", tok, err)
	}
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
}

func TestHandoutRefusesOtherAudiences(t *testing.T) {
	x := &exchangeRealm{saToken: "sa-token", exchangeLife: 300}
	h, f := newHandout(t, x, "trino")
	for _, aud := range []string{"minio", "account", "realm-management", "Trino", "trino ", "tokenkeeper-sa"} {
		if _, err := h.Token(context.Background(), aud); !errors.Is(err, ErrAudienceNotAllowed) {
			t.Errorf("Token(%q) error = %v, want ErrAudienceNotAllowed", aud, err)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("token requests for refused audiences = %d, want 0", n)
	}
}

func TestHandoutCachesPerAudience(t *testing.T) {
	tests := []struct {
		name      string
		life      int
		exchanges int32
	}{
		{name: "long-lived: cached", life: 300, exchanges: 2},
		// 10 s left is inside the 15 s early margin: exchanged again each time.
		{name: "within the early margin: not cached", life: 10, exchanges: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &exchangeRealm{saToken: "sa-token", exchangeLife: tt.life}
			h, _ := newHandout(t, x, "trino", "minio")
			for _, aud := range []string{"trino", "minio", "trino", "minio"} {
				tok, err := h.Token(context.Background(), aud)
				if err != nil {
					t.Fatal(err)
				}
				if want := "-for-" + aud; len(tok.AccessToken) < len(want) || tok.AccessToken[len(tok.AccessToken)-len(want):] != want {
					t.Errorf("Token(%q) = %q, want a token for that audience", aud, tok.AccessToken)
				}
			}
			if n := x.exchanges.Load(); n != tt.exchanges {
				t.Errorf("exchanges = %d, want %d", n, tt.exchanges)
			}
		})
	}
}

func TestHandoutKeycloakRefusal(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		refusal  bool
		wantCode string
		wantDesc string
	}{
		{name: "audience not available", status: 400,
			body:    `{"error":"invalid_request","error_description":"Requested audience not available: trino"}`,
			refusal: true, wantCode: "invalid_request", wantDesc: "Requested audience not available: trino"},
		{name: "exchange not enabled", status: 400,
			body:    `{"error":"unsupported_grant_type","error_description":"Standard token exchange is not enabled for the requested client"}`,
			refusal: true, wantCode: "unsupported_grant_type", wantDesc: "Standard token exchange is not enabled for the requested client"},
		{name: "client disabled", status: 401,
			body:    `{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}`,
			refusal: true, wantCode: "invalid_client", wantDesc: "Invalid client or Invalid client credentials"},
		{name: "unavailable", status: 503, body: `<html>503</html>`},
		{name: "too many requests", status: 429, body: `{"error":"slow_down"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &exchangeRealm{saToken: "sa-token", refusal: func(w http.ResponseWriter) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}}
			h, _ := newHandout(t, x, "trino")
			_, err := h.Token(context.Background(), "trino")
			var xerr *ExchangeError
			if got := errors.As(err, &xerr); got != tt.refusal {
				t.Fatalf("Token(trino) on HTTP %d: error = %v; *ExchangeError = %t, want %t", tt.status, err, got, tt.refusal)
			}
			if !tt.refusal {
				if !errors.As(err, new(*oauth2.RetrieveError)) {
					t.Errorf("Token(trino) on HTTP %d: error = %v, want a wrapped *oauth2.RetrieveError", tt.status, err)
				}
				return
			}
			want := ExchangeError{Audience: "trino", Status: tt.status, Code: tt.wantCode, Description: tt.wantDesc}
			if diff := cmp.Diff(want, *xerr, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Err" }, cmp.Ignore())); diff != "" {
				t.Errorf("ExchangeError mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandoutRefusesAdminTokens checks that a token carrying
// realm-management roles is never handed out, as it is or exchanged.
func TestHandoutRefusesAdminTokens(t *testing.T) {
	admin := fakeJWT(map[string]any{"azp": saClientID, "resource_access": map[string]any{
		"realm-management": map[string]any{"roles": []string{"manage-users", "view-users"}},
		"account":          map[string]any{"roles": []string{"view-profile"}},
	}})
	plain := fakeJWT(map[string]any{"azp": saClientID, "resource_access": map[string]any{
		"account": map[string]any{"roles": []string{"view-profile"}},
	}})
	tests := []struct {
		name      string
		saToken   string
		exchanged string
		audience  string
		refused   bool
	}{
		{name: "own token with admin roles", saToken: admin, refused: true},
		{name: "own token without", saToken: plain},
		{name: "opaque token", saToken: "opaque-token"},
		{name: "exchanged token with admin roles", saToken: plain, exchanged: admin, audience: "trino", refused: true},
		{name: "exchanged token without", saToken: plain, exchanged: plain, audience: "trino"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &exchangeRealm{saToken: tt.saToken, exchanged: tt.exchanged, exchangeLife: 300}
			h, _ := newHandout(t, x, "trino")
			tok, err := h.Token(context.Background(), tt.audience)
			var rerr *AdminRolesError
			if got := errors.As(err, &rerr); got != tt.refused {
				t.Fatalf("Token(%q) = %v, %v; refused = %t, want %t", tt.audience, tok, err, got, tt.refused)
			}
			if tt.refused && !cmp.Equal(rerr.Roles, []string{"manage-users", "view-users"}) {
				t.Errorf("AdminRolesError.Roles = %q, want manage-users, view-users", rerr.Roles)
			}
		})
	}
}
