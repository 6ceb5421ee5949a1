//go:build integration

package integration

import (
	"net/http"
	"os"
)

// hubMajor is the major version of the JupyterHub under test: 5 with
// TK_HUB_VERSION=5, else 6.
func hubMajor() int {
	if os.Getenv("TK_HUB_VERSION") == "5" {
		return 5
	}
	return 6
}

// loggedOutTokenStatuses are fresh-token's answers to a logged-out user's
// own hub token. JupyterHub 6.1 keeps accepting the token (its
// auth_refresh_strict is off by default), so tokenkeeper identifies the user
// and answers 409, log in again. JupyterHub 5 refuses the token itself once
// refresh_user has answered False, which it asks again only after
// auth_refresh_age (what auth_refresh_strict=True does on 6.1): tokenkeeper
// answers 409 before that and 401 (it cannot identify the caller) after.
func loggedOutTokenStatuses() []int {
	if hubMajor() == 5 {
		return []int{http.StatusConflict, http.StatusUnauthorized}
	}
	return []int{http.StatusConflict}
}
