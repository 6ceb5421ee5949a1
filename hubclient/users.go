package hubclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// User is a hub user as the API returns it. Which keys the hub fills in
// depends on the token's scopes: Servers needs read:servers, and AuthState
// needs admin:auth_state and is only ever filled in by GET /users/{name}
// (the list and GET /user answer null).
type User struct {
	Name    string            `json:"name"`
	Admin   bool              `json:"admin"`
	Servers map[string]Server `json:"servers"`
	// LastActivity is the hub's RFC 3339 time of the user's last activity
	// (a login counts), "" when the hub sent null.
	LastActivity string `json:"last_activity"`
	// AuthState is kept raw so that callers can parse it and write back the
	// keys they do not know. It is nil when the answer had no auth_state key
	// and the JSON literal null when the hub sent null.
	AuthState json.RawMessage `json:"auth_state"`
}

// Server is one of a user's servers; the default server's name is "".
// Timestamps are the hub's RFC 3339 strings, "" when the hub sent null.
type Server struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	Pending      string `json:"pending"` // "spawn", "stop" or ""
	Stopped      bool   `json:"stopped"` // only with include_stopped_servers
	Started      string `json:"started"`
	LastActivity string `json:"last_activity"`
	URL          string `json:"url"`
}

// Active reports whether the user has any server that is ready or pending
// (running or starting).
func (u User) Active() bool {
	for _, s := range u.Servers {
		if !s.Stopped && (s.Ready || s.Pending != "") {
			return true
		}
	}
	return false
}

// UserQuery selects the users that Users lists.
type UserQuery struct {
	// State is "" (all users), "active" (a server ready or pending),
	// "ready" or "inactive".
	State string
	// PageSize is the number of users asked for per request. Zero or less
	// means 200, the hub's default maximum; the hub clamps larger values.
	PageSize int
}

// defaultPageSize is JupyterHub's default api_page_max_limit.
const defaultPageSize = 200

// paginationType asks the hub for paginated answers.
const paginationType = "application/jupyterhub-pagination+json"

// window is the offset and limit of one page.
type window struct {
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// page is one answer of GET /users. Next's URL is ignored: the hub builds it
// from the host the request came in on, which need not be reachable from
// here.
type page struct {
	Items      []User `json:"items"`
	Pagination struct {
		Next *window `json:"next"`
	} `json:"_pagination"`
}

// Users lists users page by page. It follows the hub's next links by offset
// and limit against this client's own API URL and accepts the bare list of
// hubs without pagination. A failed page ends the sequence with its error.
func (c *Client) Users(ctx context.Context, q UserQuery) iter.Seq2[User, error] {
	return func(yield func(User, error) bool) {
		w := &window{Offset: 0, Limit: q.PageSize}
		if w.Limit <= 0 {
			w.Limit = defaultPageSize
		}
		for w != nil {
			p, err := c.usersPage(ctx, q.State, *w)
			if err != nil {
				yield(User{}, err)
				return
			}
			for _, u := range p.Items {
				if !yield(u, nil) {
					return
				}
			}
			if w, err = p.next(*w); err != nil {
				yield(User{}, err)
				return
			}
		}
	}
}

// next returns the window of the page after p, which was read at w, or nil
// when p is the last page. A next link that does not move forward is an
// error, so a confused hub cannot keep Users in a loop.
func (p page) next(w window) (*window, error) {
	n := p.Pagination.Next
	if n == nil || len(p.Items) == 0 {
		return nil, nil
	}
	if n.Offset <= w.Offset {
		return nil, fmt.Errorf("hubclient: GET /users: next offset %d does not follow offset %d", n.Offset, w.Offset)
	}
	return &window{Offset: n.Offset, Limit: max(n.Limit, 1)}, nil
}

func (c *Client) usersPage(ctx context.Context, state string, w window) (page, error) {
	v := url.Values{"offset": {strconv.Itoa(w.Offset)}, "limit": {strconv.Itoa(w.Limit)}}
	if state != "" {
		v.Set("state", state)
	}
	r := request{method: http.MethodGet, path: "/users", query: v, accept: paginationType}
	var raw json.RawMessage
	if err := c.do(ctx, r, &raw); err != nil {
		return page{}, err
	}
	p, err := decodeUsersPage(raw)
	if err != nil {
		return page{}, r.fail("decode", err)
	}
	return p, nil
}

// decodeUsersPage decodes one answer of GET /users: the paginated object or
// the bare list of hubs older than 2.0, which never has a next page.
func decodeUsersPage(raw []byte) (page, error) {
	var p page
	if trimmed := bytes.TrimLeft(raw, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
		return p, json.Unmarshal(raw, &p.Items)
	}
	return p, json.Unmarshal(raw, &p)
}

// User reads one user, with auth_state when the token holds
// admin:auth_state. An unknown user is an *APIError with status 404.
func (c *Client) User(ctx context.Context, name string) (User, error) {
	var u User
	err := c.do(ctx, request{method: http.MethodGet, path: userPath(name)}, &u)
	return u, err
}

// errNotObject is the error for an auth_state that is not a JSON object,
// which the hub would refuse with 400.
var errNotObject = errors.New("auth_state must be a JSON object")

// SetAuthState replaces the user's whole auth_state; the hub does not merge.
// state must be a JSON object; nil clears it ({}). Writing auth_state needs
// the admin:users scope, and writing a hub admin's needs an admin token.
func (c *Client) SetAuthState(ctx context.Context, name string, state json.RawMessage) error {
	r := request{method: http.MethodPatch, path: userPath(name)}
	if state == nil {
		state = json.RawMessage(`{}`)
	}
	if err := checkObject(state); err != nil {
		return r.fail("encode", err)
	}
	r.body = map[string]json.RawMessage{"auth_state": state}
	return c.do(ctx, r, nil)
}

// checkObject returns errNotObject unless state is a valid JSON object.
func checkObject(state json.RawMessage) error {
	trimmed := bytes.TrimLeft(state, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return errNotObject
	}
	return nil
}
