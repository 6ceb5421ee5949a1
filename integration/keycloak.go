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

// KeycloakSession is one of a user's sessions as Keycloak's admin API lists it.
type KeycloakSession struct {
	ID         string            `json:"id"`
	Username   string            `json:"username"`
	Start      int64             `json:"start"`      // milliseconds since the epoch
	LastAccess int64             `json:"lastAccess"` // milliseconds since the epoch
	Clients    map[string]string `json:"clients"`    // client id to client name
}

// KeycloakSessions lists username's sessions in the test realm.
func (s *Stack) KeycloakSessions(ctx context.Context, username string) ([]KeycloakSession, error) {
	id, err := s.KeycloakUserID(ctx, username)
	if err != nil {
		return nil, err
	}
	var sessions []KeycloakSession
	if err := s.KeycloakAdmin(ctx, http.MethodGet, "/users/"+id+"/sessions", nil, &sessions); err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", username, err)
	}
	return sessions, nil
}

// KeycloakLogout ends all of username's sessions in the test realm, as an
// administrator does from the admin console; Keycloak then sends back-channel
// logout tokens to the clients that registered a URL for them.
func (s *Stack) KeycloakLogout(ctx context.Context, username string) error {
	id, err := s.KeycloakUserID(ctx, username)
	if err != nil {
		return err
	}
	if err := s.KeycloakAdmin(ctx, http.MethodPost, "/users/"+id+"/logout", nil, nil); err != nil {
		return fmt.Errorf("log out %s: %w", username, err)
	}
	return nil
}

// RefreshEvents counts Keycloak's REFRESH_TOKEN events for a user.
func (s *Stack) RefreshEvents(ctx context.Context, userID string) (int, error) {
	var events []json.RawMessage
	err := s.KeycloakAdmin(ctx, http.MethodGet, "/events?type=REFRESH_TOKEN&max=1000&user="+url.QueryEscape(userID), nil, &events)
	return len(events), err
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
