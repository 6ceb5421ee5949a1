//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coreos/go-oidc/v3/oidc"
)

// jobAPI is a small FirecREST-v2-shaped job API. It accepts only access
// tokens of tokenkeeper's service account that verify against the real
// Keycloak's keys.
type jobAPI struct {
	issuer string
	calls  atomic.Int64
	srv    *http.Server
	addr   string

	once     sync.Once
	verifier *oidc.IDTokenVerifier
	err      error
}

var jobStates = map[string]string{"42": "RUNNING", "43": "COMPLETED", "44": "PENDING"}

func startJobAPI(addr, issuer string) (*jobAPI, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	j := &jobAPI{issuer: issuer, addr: ln.Addr().String()}
	j.srv = &http.Server{Handler: http.HandlerFunc(j.serve)}
	go j.srv.Serve(ln)
	return j, nil
}

func (j *jobAPI) URL() string { return "http://" + j.addr }

func (j *jobAPI) Close() { j.srv.Close() }

func (j *jobAPI) serve(w http.ResponseWriter, r *http.Request) {
	j.calls.Add(1)
	if err := j.authorize(r); err != nil {
		http.Error(w, `{"message":"`+err.Error()+`"}`, http.StatusUnauthorized)
		return
	}
	var system, id string
	if _, err := fmt.Sscanf(strings.ReplaceAll(r.URL.Path, "/", " "), " compute %s jobs %s", &system, &id); err != nil {
		http.NotFound(w, r)
		return
	}
	state, ok := jobStates[id]
	if !ok {
		http.Error(w, `{"message":"job not found"}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"jobs": []any{map[string]any{
		"jobId": id, "name": "notebook", "status": map[string]any{"state": state, "stateReason": "None", "exitCode": 0},
	}}})
}

func (j *jobAPI) authorize(r *http.Request) error {
	j.once.Do(func() {
		p, err := oidc.NewProvider(context.Background(), j.issuer)
		if err != nil {
			j.err = err
			return
		}
		j.verifier = p.Verifier(&oidc.Config{SkipClientIDCheck: true})
	})
	if j.err != nil {
		return j.err
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return fmt.Errorf("bearer token required")
	}
	tok, err := j.verifier.Verify(r.Context(), raw)
	if err != nil {
		return fmt.Errorf("token rejected")
	}
	var claims struct {
		Azp string `json:"azp"`
	}
	if err := tok.Claims(&claims); err != nil || claims.Azp != "tokenkeeper-sa" {
		return fmt.Errorf("not the service account")
	}
	return nil
}
