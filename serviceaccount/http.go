package serviceaccount

import (
	"errors"
	"fmt"
	"net/http"
)

// noRedirects returns a copy of h that hands a redirect back as the answer
// instead of following it: requests to Keycloak and the job API carry client
// secrets and tokens meant for that server alone, and a 307 or 308 would
// send them, body and all, wherever the Location points.
func noRedirects(h *http.Client) *http.Client {
	cp := *h
	cp.CheckRedirect = refuseRedirect
	return &cp
}

// refuseRedirect is an http.Client CheckRedirect that follows nothing and
// hands the redirect back as the answer.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// errRedirect is a redirect refused where a redirect answer would not be
// seen as an error (gocloak treats every status below 400 as success).
var errRedirect = errors.New("refusing to follow a redirect")

// failRedirect is an http.Client CheckRedirect that follows nothing and
// fails the request.
func failRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("%w to %s", errRedirect, req.URL.Redacted())
}
