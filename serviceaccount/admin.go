package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Nerzal/gocloak/v13"
)

// Admin makes the few Keycloak admin calls tokenkeeper needs, with the admin
// client's token (never the service account's, which is handed out). The
// admin client's service account needs the realm-management roles view-users
// (sessions) and manage-users (logout).
type Admin struct {
	gc    *gocloak.GoCloak
	realm string
	token func(ctx context.Context) (string, error)
}

// NewAdmin returns an Admin for the realm whose issuer URL is issuer
// (https://host/realms/NAME). gocloak has no timeout and retries by default;
// here its client uses client's transport and timeout, never retries (the
// caller owns retrying) and never follows a redirect.
func NewAdmin(issuer string, client *http.Client, token func(ctx context.Context) (string, error)) (*Admin, error) {
	base, realm, err := SplitIssuer(issuer)
	if err != nil {
		return nil, err
	}
	gc := gocloak.NewClient(base)
	rc := gc.RestyClient()
	rc.SetTimeout(client.Timeout)
	if client.Transport != nil {
		rc.SetTransport(client.Transport)
	}
	rc.SetRetryCount(0)
	rc.GetClient().CheckRedirect = failRedirect
	return &Admin{gc: gc, realm: realm, token: token}, nil
}

// SplitIssuer splits a Keycloak issuer URL into the server's base URL and the realm.
func SplitIssuer(issuer string) (base, realm string, err error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return "", "", fmt.Errorf("issuer: %w", err)
	}
	i := strings.LastIndex(u.Path, "/realms/")
	if i < 0 || strings.Trim(u.Path[i+len("/realms/"):], "/") == "" {
		return "", "", fmt.Errorf("issuer %q: want https://host/realms/NAME", issuer)
	}
	realm = strings.Trim(u.Path[i+len("/realms/"):], "/")
	u.Path = u.Path[:i]
	return strings.TrimRight(u.String(), "/"), realm, nil
}

// Session is one Keycloak SSO session of a user.
type Session struct {
	ID         string    `json:"id"`
	Started    time.Time `json:"started"`
	LastAccess time.Time `json:"last_access"`
	IPAddress  string    `json:"ip_address"`
	Clients    []string  `json:"clients"`
}

// AdminError is a failed admin call. Status is the HTTP status, or 0 when no
// answer came (network) or the answer could not be read.
type AdminError struct {
	Op     string
	Status int
	Err    error
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("keycloak admin %s: status %d: %v", e.Op, e.Status, e.Err)
}
func (e *AdminError) Unwrap() error { return e.Err }

// adminError turns gocloak's error into an *AdminError carrying the status.
func adminError(op string, err error) error {
	var gerr *gocloak.APIError
	if errors.As(err, &gerr) {
		return &AdminError{Op: op, Status: gerr.Code, Err: err}
	}
	return &AdminError{Op: op, Err: err}
}

// Sessions returns the SSO sessions of the Keycloak user userID (the sub claim).
func (a *Admin) Sessions(ctx context.Context, userID string) ([]Session, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return nil, err
	}
	reps, err := a.gc.GetUserSessions(ctx, tok, a.realm, userID)
	if err != nil {
		return nil, adminError("sessions", err)
	}
	out := make([]Session, 0, len(reps))
	for _, r := range reps {
		out = append(out, session(r))
	}
	return out, nil
}

func session(r *gocloak.UserSessionRepresentation) Session {
	s := Session{ID: gocloak.PString(r.ID), IPAddress: gocloak.PString(r.IPAddress)}
	if r.Start != nil {
		s.Started = time.UnixMilli(*r.Start).UTC()
	}
	if r.LastAccess != nil {
		s.LastAccess = time.UnixMilli(*r.LastAccess).UTC()
	}
	if r.Clients != nil {
		for _, c := range *r.Clients {
			s.Clients = append(s.Clients, c)
		}
	}
	return s
}

// LogoutUser ends every Keycloak session of the user userID.
func (a *Admin) LogoutUser(ctx context.Context, userID string) error {
	tok, err := a.token(ctx)
	if err != nil {
		return err
	}
	if err := a.gc.LogoutAllSessions(ctx, tok, a.realm, userID); err != nil {
		return adminError("logout", err)
	}
	return nil
}
