package hubclient_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// A sweep lists the users with a running or starting server, then reads
// each one's auth_state, which only GET /users/{name} returns.
func ExampleClient_Users() {
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hub/api/users":
			fmt.Fprint(w, `{"items":[{"name":"alice","servers":{"":{"ready":true}}}],"_pagination":{"next":null}}`)
		case "/hub/api/users/alice":
			fmt.Fprint(w, `{"name":"alice","auth_state":{"access_token":"…"}}`)
		}
	}))
	defer hub.Close()

	ctx := context.Background()
	c := hubclient.New(hub.URL+"/hub/api", "service-token")
	for u, err := range c.Users(ctx, hubclient.UserQuery{State: "active"}) {
		if err != nil {
			fmt.Println("list:", err)
			return
		}
		full, err := c.User(ctx, u.Name)
		if err != nil {
			fmt.Println("read:", err)
			continue
		}
		fmt.Println(u.Name, u.Active(), string(full.AuthState))
	}
	// Output: alice true {"access_token":"…"}
}

// A token that the hub refuses is an *APIError with status 403.
func ExampleClient_Identify() {
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "token alice-token" {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"status":403,"message":"Forbidden"}`)
			return
		}
		fmt.Fprint(w, `{"kind":"user","name":"alice","scopes":["custom:tokenkeeper:tokens!user=alice"]}`)
	}))
	defer hub.Close()

	c := hubclient.New(hub.URL+"/hub/api", "service-token")
	id, err := c.Identify(context.Background(), "alice-token")
	fmt.Println(id.Name, id.Allows("custom:tokenkeeper:tokens", "alice"), id.Allows("custom:tokenkeeper:tokens", "bob"), err)
	_, err = c.Identify(context.Background(), "stolen-token")
	fmt.Println(hubclient.IsStatus(err, http.StatusForbidden), err)
	// Output:
	// alice true false <nil>
	// true hubclient: GET /user: 403 Forbidden
}
