package hubclient

import (
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// User is a hub user as the API returns it. AuthState is kept raw so callers
// can parse it and keep keys they do not know.
type User struct {
	Name      string            `json:"name"`
	Admin     bool              `json:"admin"`
	Servers   map[string]Server `json:"servers"`
	AuthState json.RawMessage   `json:"auth_state"`
}

// Server is one of a user's servers ("" is the default server).
type Server struct {
	Name    string `json:"name"`
	Ready   bool   `json:"ready"`
	Pending string `json:"pending"`
	Stopped bool   `json:"stopped"`
	Started string `json:"started"`
	URL     string `json:"url"`
}

// Active reports whether the user has a server that is ready or starting.
func (u User) Active() bool {
	for _, s := range u.Servers {
		if !s.Stopped && (s.Ready || s.Pending != "") {
			return true
		}
	}
	return false
}

// UserQuery filters the user list.
type UserQuery struct {
	// State is "", "active", "ready" or "inactive".
	State string
	// PageSize is the page size (default 200, the hub's maximum).
	PageSize int
}

// paginationType asks the hub for paginated answers.
const paginationType = "application/jupyterhub-pagination+json"

type page struct {
	Items      []User `json:"items"`
	Pagination struct {
		Next *struct {
			Offset int `json:"offset"`
			Limit  int `json:"limit"`
		} `json:"next"`
	} `json:"_pagination"`
}

// Users lists users page by page, following the hub's next links (by offset
// against this client's own base URL). An old hub's bare list is accepted.
func (c *Client) Users(ctx context.Context, q UserQuery) iter.Seq2[User, error] {
	return func(yield func(User, error) bool) {
		limit := q.PageSize
		if limit <= 0 {
			limit = 200
		}
		offset := 0
		for {
			p, err := c.usersPage(ctx, q.State, offset, limit)
			if err != nil {
				yield(User{}, err)
				return
			}
			for _, u := range p.Items {
				if !yield(u, nil) {
					return
				}
			}
			if p.Pagination.Next == nil || len(p.Items) == 0 {
				return
			}
			offset, limit = p.Pagination.Next.Offset, max(p.Pagination.Next.Limit, 1)
		}
	}
}

func (c *Client) usersPage(ctx context.Context, state string, offset, limit int) (page, error) {
	v := url.Values{"offset": {strconv.Itoa(offset)}, "limit": {strconv.Itoa(limit)}}
	if state != "" {
		v.Set("state", state)
	}
	var raw json.RawMessage
	err := c.do(ctx, request{method: http.MethodGet, path: "/users", query: v, accept: paginationType}, &raw)
	if err != nil {
		return page{}, err
	}
	return decodeUsersPage(raw)
}

// decodeUsersPage decodes one answer of GET /users: the paginated form, or a
// bare list from hubs older than 2.0.
func decodeUsersPage(raw []byte) (page, error) {
	var p page
	if len(raw) > 0 && raw[0] == '[' {
		err := json.Unmarshal(raw, &p.Items)
		return p, wrapDecode(err)
	}
	return p, wrapDecode(json.Unmarshal(raw, &p))
}

func wrapDecode(err error) error {
	if err != nil {
		return &decodeError{err}
	}
	return nil
}

type decodeError struct{ err error }

func (e *decodeError) Error() string { return "hubclient: GET /users: decode: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// User reads one user, with auth_state when the token may read it.
func (c *Client) User(ctx context.Context, name string) (User, error) {
	var u User
	err := c.do(ctx, request{method: http.MethodGet, path: userPath(name)}, &u)
	return u, err
}

// SetAuthState replaces the user's whole auth_state. state must be a JSON
// object; nil clears it ({}).
func (c *Client) SetAuthState(ctx context.Context, name string, state json.RawMessage) error {
	if state == nil {
		state = json.RawMessage(`{}`)
	}
	body := map[string]json.RawMessage{"auth_state": state}
	return c.do(ctx, request{method: http.MethodPatch, path: userPath(name), body: body}, nil)
}
