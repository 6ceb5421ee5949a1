package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// KeycloakAdmin calls Keycloak's admin REST API for the test realm as the
// bootstrap admin of the master realm.
func (s *Stack) KeycloakAdmin(ctx context.Context, method, path string, body, out any) error {
	tok, err := s.adminToken(ctx)
	if err != nil {
		return err
	}
	return doJSON(ctx, s.KeycloakURL()+"/admin/realms/jupyter", "Bearer "+tok, method, path, body, out)
}

func (s *Stack) adminToken(ctx context.Context) (string, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {"admin-cli"}, "username": {"admin"}, "password": {"admin"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost,
		s.KeycloakURL()+"/realms/master/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil {
		return "", fmt.Errorf("keycloak admin token: %d %s", resp.StatusCode, b)
	}
	return tok.AccessToken, nil
}

// KeycloakUserID returns the Keycloak id of a username in the test realm.
func (s *Stack) KeycloakUserID(ctx context.Context, username string) (string, error) {
	var users []struct {
		ID string `json:"id"`
	}
	err := s.KeycloakAdmin(ctx, http.MethodGet, "/users?exact=true&username="+url.QueryEscape(username), nil, &users)
	if err != nil {
		return "", err
	}
	if len(users) != 1 {
		return "", fmt.Errorf("keycloak user %q: %d matches", username, len(users))
	}
	return users[0].ID, nil
}

// RefreshEvents counts Keycloak's REFRESH_TOKEN events for a user.
func (s *Stack) RefreshEvents(ctx context.Context, userID string) (int, error) {
	var events []json.RawMessage
	err := s.KeycloakAdmin(ctx, http.MethodGet, "/events?type=REFRESH_TOKEN&max=1000&user="+url.QueryEscape(userID), nil, &events)
	return len(events), err
}
