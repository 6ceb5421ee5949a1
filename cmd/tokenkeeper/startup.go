package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// underHub reports whether JupyterHub started this process as a managed
// service: it then must not exit on a problem, because the hub shuts down
// when a managed service exits. From a shell (no JUPYTERHUB_SERVICE_URL),
// with --check-config, or with exit_on_error (a container that Kubernetes
// restarts, which sets the hub's variables by hand), problems exit non-zero.
func underHub(getenv func(string) string) bool {
	return getenv("JUPYTERHUB_SERVICE_URL") != "" && getenv("JUPYTERHUB_SERVICE_NAME") != ""
}

// problem is one reason tokenkeeper cannot serve, as health shows it.
type problem struct {
	Class   string `json:"class"`
	Message string `json:"message"`
}

// startError is a startup failure with the class health shows for it.
type startError struct {
	class string
	err   error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// problemsOf describes a startup failure for the unauthenticated health
// answer: the scope check's own text (it names scopes, nothing secret), a
// fixed text otherwise; the details are in the log.
func problemsOf(err error) []problem {
	var se *startError
	if errors.As(err, &se) && se.class == "hub_scopes" && !retryable(err) {
		var out []problem
		for _, line := range strings.Split(se.err.Error(), "\n") {
			out = append(out, problem{Class: "hub_scopes", Message: line})
		}
		return out
	}
	if errors.As(err, &se) {
		return []problem{{Class: se.class, Message: "tokenkeeper could not start; its log says why."}}
	}
	return []problem{{Class: "startup", Message: "tokenkeeper could not start; its log says why."}}
}

// holdOrFail handles a startup failure: with hold (under the hub, without
// exit_on_error) it logs the failure, answers every request with the
// problems until ctx ends, and returns nil; otherwise it returns the failure.
func holdOrFail(ctx context.Context, err error, sw *switchHandler, prefix string, log *slog.Logger, hold bool) error {
	if !hold || ctx.Err() != nil {
		return err
	}
	log.Error("tokenkeeper could not start; answering 503 until restarted", "err", err)
	sw.set(problemHandler(prefix, problemsOf(err)))
	<-ctx.Done()
	return nil
}

// holdBadConfig logs every configuration problem and answers 503 at the
// service's address until ctx ends, so that the hub stays up. The public
// health answer gives the class and the number of problems, never their
// text, which may name internal hosts or secret file paths.
func holdBadConfig(ctx context.Context, err error, getenv func(string) string, stderr io.Writer) error {
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	lines := strings.Split(err.Error(), "\n")
	for _, line := range lines {
		log.Error("bad configuration", "problem", line)
	}
	problems := []problem{{Class: "configuration",
		Message: fmt.Sprintf("tokenkeeper's configuration has %d problem(s); its log lists them.", len(lines))}}
	u, perr := url.Parse(getenv("JUPYTERHUB_SERVICE_URL"))
	if perr != nil {
		return errors.Join(configError(err), fmt.Errorf("JUPYTERHUB_SERVICE_URL: %w", perr))
	}
	ln, lerr := net.Listen("tcp", listenAddr(u.String()))
	if lerr != nil {
		return errors.Join(configError(err), fmt.Errorf("listen: %w", lerr))
	}
	prefix := config.ServicePrefix(getenv)
	log.Error("bad configuration; answering 503 until restarted", "listen", ln.Addr().String())
	sw := &switchHandler{}
	sw.set(problemHandler(prefix, problems))
	return serveHTTP(ctx, newServer(config.Default(), sw), ln)
}

// problemHandler answers health with 503 and the problems, the prefix's
// root with 200 (JupyterHub waits at start until a managed service's root
// answers without a 5xx, and shuts down if it never does), and every other
// request with 503 and a clear JSON error.
func problemHandler(prefix string, problems []problem) http.Handler {
	root := strings.TrimSuffix(prefix, "/")
	health := root + "/health"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case root, root + "/":
			json.NewEncoder(w).Encode(map[string]any{"name": "tokenkeeper", "version": version, "status": "unhealthy"})
		case health:
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]any{"status": "unhealthy", "problems": problems})
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "unavailable",
				"message": "tokenkeeper is not running: " + problems[0].Message + " An admin must fix it; see tokenkeeper's health and log."})
		}
	})
}

// switchHandler serves whichever handler was set last.
type switchHandler struct{ h atomic.Pointer[http.Handler] }

func (s *switchHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// retryable reports whether a startup step failed because the hub could not
// be reached or answered 5xx, which passes by itself.
func retryable(err error) bool {
	var apiErr *hubclient.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status >= 500
	}
	var uerr *url.Error
	return errors.As(err, &uerr)
}

// retryHub runs f until it succeeds, fails for a reason that waits for an
// admin, or ctx ends, backing off from 1 s to 30 s while the hub cannot be
// reached.
func retryHub(ctx context.Context, log *slog.Logger, f func(context.Context) error) error {
	wait := time.Second
	for {
		err := f(ctx)
		if err == nil || !retryable(err) {
			return err
		}
		log.Warn("the hub cannot be reached yet; retrying", "err", err, "in", wait.String())
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}
