package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokenkeeper/tokenkeeper/integration"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// setupConcurrency bounds the requests in flight while users are set up.
const setupConcurrency = 4

// userNames returns n synthetic user names, distinct for each count so that
// a later measurement does not meet an earlier one's users.
func userNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("b%d-%04d", n, i+1)
	}
	return names
}

func password(name string) string { return name + "-pw" }

// populate gives every name a Keycloak user, a real Keycloak session (a
// password grant with the hub's client) and a hub user whose auth_state
// holds that session's tokens in OAuthenticator's layout. It returns what
// was issued.
func populate(ctx context.Context, s *integration.Stack, names []string) (issued, error) {
	if err := importKeycloakUsers(ctx, s, names); err != nil {
		return issued{}, err
	}
	sets, err := passwordGrants(ctx, s, names)
	if err != nil {
		return issued{}, err
	}
	if err := createHubUsers(ctx, s, names, sets); err != nil {
		return issued{}, err
	}
	return issuedOf(sets)
}

// issued describes the access tokens populate handed out.
type issued struct {
	// First and Last are the earliest and latest iat.
	First, Last time.Time
	// Expiry is each user's access token expiry.
	Expiry map[string]time.Time
}

func issuedOf(sets map[string]tokenSet) (issued, error) {
	is := issued{Expiry: make(map[string]time.Time, len(sets))}
	for name, t := range sets {
		c, err := refresh.ParseClaims(t.str("access_token"))
		if err != nil {
			return is, fmt.Errorf("access token of %s: %w", name, err)
		}
		is.Expiry[name] = c.Expiry
		if is.First.IsZero() || c.IssuedAt.Before(is.First) {
			is.First = c.IssuedAt
		}
		if c.IssuedAt.After(is.Last) {
			is.Last = c.IssuedAt
		}
	}
	return is, nil
}

// importKeycloakUsers creates the users through the admin API's partial
// import, 100 per request.
func importKeycloakUsers(ctx context.Context, s *integration.Stack, names []string) error {
	for start := 0; start < len(names); start += 100 {
		var users []map[string]any
		for _, n := range names[start:min(start+100, len(names))] {
			users = append(users, map[string]any{
				"username": n, "enabled": true, "email": n + "@example.org", "emailVerified": true,
				"firstName": "Bench", "lastName": n,
				"credentials": []map[string]any{{"type": "password", "value": password(n), "temporary": false}},
			})
		}
		body := map[string]any{"ifResourceExists": "SKIP", "users": users}
		if err := s.KeycloakAdmin(ctx, http.MethodPost, "/partialImport", body, nil); err != nil {
			return fmt.Errorf("import Keycloak users: %w", err)
		}
	}
	return nil
}

// tokenSet is a token endpoint answer, kept whole for token_response.
type tokenSet map[string]any

func (t tokenSet) str(key string) string { s, _ := t[key].(string); return s }

// passwordGrants starts one Keycloak session per user with the hub's client.
func passwordGrants(ctx context.Context, s *integration.Stack, names []string) (map[string]tokenSet, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	var mu sync.Mutex
	sets := make(map[string]tokenSet, len(names))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(setupConcurrency)
	for _, n := range names {
		g.Go(func() error {
			t, err := passwordGrant(ctx, client, s, n)
			mu.Lock()
			sets[n] = t
			mu.Unlock()
			return err
		})
	}
	return sets, g.Wait()
}

func passwordGrant(ctx context.Context, client *http.Client, s *integration.Stack, name string) (tokenSet, error) {
	form := url.Values{
		"grant_type": {"password"}, "client_id": {"jupyterhub"}, "client_secret": {s.ClientSecret},
		"username": {name}, "password": {password(name)}, "scope": {"openid profile email"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Issuer()+"/protocol/openid-connect/token",
		strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("password grant for %s: %w", name, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var t tokenSet
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &t) != nil || t.str("refresh_token") == "" {
		return nil, fmt.Errorf("password grant for %s: HTTP %d %.300s", name, resp.StatusCode, raw)
	}
	return t, nil
}

// authState is OAuthenticator's auth_state for a token endpoint answer; the
// user info is the ID token's claims.
func authState(t tokenSet) map[string]any {
	return map[string]any{
		"access_token": t.str("access_token"), "refresh_token": t.str("refresh_token"),
		"id_token": t.str("id_token"), "scope": strings.Fields(t.str("scope")),
		"token_response": map[string]any(t), "oauth_user": jwtClaims(t.str("id_token")),
	}
}

func jwtClaims(jwt string) map[string]any {
	parts := strings.Split(jwt, ".")
	claims := map[string]any{}
	if len(parts) == 3 {
		b, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
		_ = json.Unmarshal(b, &claims)
	}
	return claims
}

// createHubUsers creates the hub users in one request and writes each
// one's auth_state.
func createHubUsers(ctx context.Context, s *integration.Stack, names []string, sets map[string]tokenSet) error {
	if err := s.API(ctx, http.MethodPost, "/users", map[string]any{"usernames": names}, nil); err != nil {
		return fmt.Errorf("create hub users: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(setupConcurrency)
	for _, n := range names {
		g.Go(func() error {
			body := map[string]any{"auth_state": authState(sets[n])}
			if err := s.API(ctx, http.MethodPatch, "/users/"+url.PathEscape(n), body, nil); err != nil {
				return fmt.Errorf("auth_state of %s: %w", n, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// deleteHubUsers deletes the hub users (their Keycloak sessions stay until
// they time out).
func deleteHubUsers(ctx context.Context, s *integration.Stack, names []string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(setupConcurrency)
	for _, n := range names {
		g.Go(func() error {
			err := s.API(ctx, http.MethodDelete, "/users/"+url.PathEscape(n), nil, nil)
			if err != nil && !integration.IsStatus(err, http.StatusNotFound) {
				return fmt.Errorf("delete hub user %s: %w", n, err)
			}
			return nil
		})
	}
	return g.Wait()
}
