package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// getJSON polls url until it answers, then returns the status and body.
func getJSON(t *testing.T, u string) (int, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
			return resp.StatusCode, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", u, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a listener that is starting, with a deadline
	}
}

// TestRunUnderHubWithBadConfigStaysUp: JupyterHub shuts down when a managed
// service exits, so under the hub a bad configuration is answered at the
// service's address instead: health 503 with the class and count (the log
// lists every problem), fresh-token
// 503 with a clear message, until the hub stops the service.
func TestRunUnderHubWithBadConfigStaysUp(t *testing.T) {
	addr := freePort(t)
	env := map[string]string{
		"JUPYTERHUB_API_TOKEN":      "svc-token",
		"JUPYTERHUB_API_URL":        "http://127.0.0.1:1/hub/api",
		"JUPYTERHUB_SERVICE_URL":    "http://" + addr,
		"JUPYTERHUB_SERVICE_PREFIX": "/services/tokenkeeper/",
		"JUPYTERHUB_SERVICE_NAME":   "tokenkeeper",
		"TOKENKEEPER_ISSUER_URL":    "http://127.0.0.1:1/realms/jupyter",
		"TOKENKEEPER_STATE_KEY":     "c2hvcnQ=",
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, nil, envOf(env), &bytes.Buffer{}, &stderr) }()
	status, body := getJSON(t, "http://"+addr+"/services/tokenkeeper/health")
	problems := fmt.Sprint(body["problems"])
	if status != http.StatusServiceUnavailable || !strings.Contains(problems, "configuration has 2 problem(s)") {
		t.Errorf("health = %d %v, want 503 with the class and the count of problems", status, body)
	}
	if strings.Contains(problems, "state key") || strings.Contains(problems, "client secret") {
		t.Errorf("health = %v: the public answer names the settings; only the log may", body)
	}
	// JupyterHub waits at start for the service's root to answer without a
	// 5xx, and shuts down if it never does.
	if status, _ := getJSON(t, "http://"+addr+"/services/tokenkeeper/"); status != http.StatusOK {
		t.Errorf("the prefix's root = %d, want 200 so that the hub starts", status)
	}
	status, body = getJSON(t, "http://"+addr+"/services/tokenkeeper/fresh-token")
	if status != http.StatusServiceUnavailable || body["error"] != "unavailable" {
		t.Errorf("fresh-token = %d %v, want 503 unavailable", status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run under the hub with a bad configuration = %v, want nil once stopped", err)
	}
	if got := strings.Count(stderr.String(), `"msg":"bad configuration"`); got != 2 {
		t.Errorf("log lines naming a configuration problem = %d, want 2:\n%s", got, &stderr)
	}
}

// TestServeUnderHubStartupFailureStaysUp: a store that cannot be opened
// (the path is a directory) leaves tokenkeeper answering 503 with the class
// of the problem and no internal text.
func TestServeUnderHubStartupFailureStaysUp(t *testing.T) {
	addr := freePort(t)
	dir := t.TempDir()
	env := map[string]string{
		"JUPYTERHUB_API_TOKEN":      "svc-token",
		"JUPYTERHUB_API_URL":        "http://127.0.0.1:1/hub/api",
		"JUPYTERHUB_SERVICE_URL":    "http://" + addr,
		"JUPYTERHUB_SERVICE_PREFIX": "/services/tokenkeeper/",
		"JUPYTERHUB_SERVICE_NAME":   "tokenkeeper",
		"TOKENKEEPER_ISSUER_URL":    "http://127.0.0.1:1/realms/jupyter",
		"TOKENKEEPER_CLIENT_SECRET": "client-secret",
		"TOKENKEEPER_STATE_KEY":     stateKey,
		"TOKENKEEPER_DATABASE":      dir,
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envOf(env), &bytes.Buffer{}, &bytes.Buffer{}) }()
	deadline := time.Now().Add(10 * time.Second)
	var body map[string]any
	for time.Now().Before(deadline) {
		_, body = getJSON(t, "http://"+addr+"/services/tokenkeeper/health")
		if strings.Contains(fmt.Sprint(body["problems"]), "database") {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling for the startup to fail, with a deadline
	}
	if got := fmt.Sprint(body["problems"]); !strings.Contains(got, "database") || strings.Contains(got, dir) {
		t.Errorf("health problems = %s, want the database class without the path", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve = %v, want nil once stopped", err)
	}
	env["JUPYTERHUB_SERVICE_URL"] = ""
	env["TOKENKEEPER_HUB_API_URL"] = "http://127.0.0.1:1/hub/api"
	if err := run(t.Context(), []string{"--db", filepath.Join(dir)}, envOf(env), &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("run from a shell with a store that cannot be opened = nil, want an error")
	}
}

// TestRunUnderHubExitsOnErrorWhenAsked: with exit_on_error (a Kubernetes
// sidecar, which sets the hub's variables by hand), a configuration or
// startup problem returns an error, which main turns into exit 1, instead
// of holding the service's address: Kubernetes then shows the container
// failing and restarts it. The variable counts even when the configuration
// itself is what failed.
func TestRunUnderHubExitsOnErrorWhenAsked(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(error) bool
	}{
		{name: "bad configuration", env: map[string]string{"TOKENKEEPER_STATE_KEY": "c2hvcnQ="},
			check: func(err error) bool { return strings.HasPrefix(err.Error(), "bad configuration:\n  - ") }},
		{name: "bad flag", args: []string{"--no-such-flag"},
			check: func(err error) bool { return errors.As(err, new(*config.UsageError)) }},
		{name: "store cannot be opened", env: map[string]string{"TOKENKEEPER_DATABASE": dir},
			check: func(err error) bool {
				var se *startError
				return errors.As(err, &se) && se.class == "database"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"JUPYTERHUB_API_TOKEN":      "svc-token",
				"JUPYTERHUB_API_URL":        "http://127.0.0.1:1/hub/api",
				"JUPYTERHUB_SERVICE_URL":    "http://" + freePort(t),
				"JUPYTERHUB_SERVICE_PREFIX": "/services/tokenkeeper/",
				"JUPYTERHUB_SERVICE_NAME":   "tokenkeeper",
				"TOKENKEEPER_ISSUER_URL":    "http://127.0.0.1:1/realms/jupyter",
				"TOKENKEEPER_CLIENT_SECRET": "client-secret",
				"TOKENKEEPER_STATE_KEY":     stateKey,
				"TOKENKEEPER_EXIT_ON_ERROR": "true",
			}
			for k, v := range tt.env {
				env[k] = v
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(ctx, tt.args, envOf(env), &bytes.Buffer{}, &bytes.Buffer{}) }()
			select {
			case err := <-done:
				if err == nil || !tt.check(err) {
					t.Errorf("run with exit_on_error under the hub = %v, want the problem as an error", err)
				}
			case <-time.After(10 * time.Second): // a deadline, not synchronisation
				t.Fatal("run with exit_on_error under the hub still runs after 10s: it holds instead of exiting")
			}
		})
	}
}

func TestRetryHub(t *testing.T) {
	unreachable := &url.Error{Op: "Get", URL: "http://hub", Err: errors.New("connection refused")}
	refused := &hubclient.APIError{Method: "GET", Path: "/user", Status: http.StatusForbidden}
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		err := retryHub(t.Context(), discardLog(), func(context.Context) error {
			if calls++; calls < 4 {
				return unreachable
			}
			return nil
		})
		if err != nil || calls != 4 {
			t.Errorf("retryHub over an unreachable hub = %v after %d calls, want nil after 4", err, calls)
		}
		calls = 0
		err = retryHub(t.Context(), discardLog(), func(context.Context) error { calls++; return refused })
		if !errors.Is(err, refused) || calls != 1 {
			t.Errorf("retryHub with a refusal = %v after %d calls, want the refusal at once", err, calls)
		}
	})
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestRunHelpAndVersion: --help prints the usage, naming the token
// subcommand, and exits 0; --version prints the stamped version.
func TestRunHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"token", "--help"}} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, envOf(map[string]string{"JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:1",
			"JUPYTERHUB_SERVICE_NAME": "tokenkeeper"}), &stdout, &stderr); err != nil {
			t.Errorf("run(%q) = %v, want nil", args, err)
		}
		if !strings.Contains(stderr.String(), "tokenkeeper token") || !strings.Contains(stderr.String(), "-min-valid") && args[0] == "token" {
			t.Errorf("run(%q) usage = %q, want it to name the token subcommand", args, &stderr)
		}
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"--version"}, envOf(nil), &stdout, &bytes.Buffer{}); err != nil ||
		stdout.String() != "tokenkeeper "+version+"\n" {
		t.Errorf("run(--version) = %q, %v; want %q", &stdout, err, "tokenkeeper "+version+"\n")
	}
}
