//go:build integration

package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// stack is the one stack every integration test runs against; hubProxy
// stands between tokenkeeper and the hub's API.
var (
	stack      *Stack
	hubProxy   *HubProxy
	jobService *jobAPI
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

// stopBeforeTimeout stops the stack shortly before go test's -timeout ends
// the binary, which would skip every deferred call and leave the processes
// running.
func stopBeforeTimeout(s *Stack) {
	flag.Parse()
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	timeout, _ := f.Value.(flag.Getter).Get().(time.Duration)
	if timeout <= 0 {
		return
	}
	time.AfterFunc(timeout-min(time.Minute, timeout/10), func() {
		fmt.Fprintln(os.Stderr, "integration: the test timeout is near: stopping the stack")
		s.Stop()
	})
}

// stopOnSignal stops the stack and exits when the run is interrupted
// (Ctrl-C or SIGTERM), since the stack's processes live in process groups
// of their own and do not get the terminal's signal.
func stopOnSignal(s *Stack) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-ch
		fmt.Fprintf(os.Stderr, "integration: %v: stopping the stack\n", sig)
		s.Stop()
		os.Exit(1)
	}()
}

func runTests(m *testing.M) int {
	if listing() {
		return m.Run()
	}
	repo, _ := filepath.Abs("..")
	if _, err := os.Stat(filepath.Join(repo, "bin", "tokenkeeper")); err != nil {
		fmt.Fprintln(os.Stderr, "integration: bin/tokenkeeper missing: run `make build` (make test does)")
		return 1
	}
	runDir, err := os.MkdirTemp("", "tokenkeeper-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	base := portBase()
	proxy, err := StartHubProxy(fmt.Sprintf("127.0.0.1:%d", base+40), fmt.Sprintf("http://127.0.0.1:%d", base+81))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer proxy.Close()
	hubProxy = proxy
	jobs, err := startJobAPI(fmt.Sprintf("127.0.0.1:%d", base+50), fmt.Sprintf("http://127.0.0.1:%d/realms/jupyter", base+80))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer jobs.Close()
	jobService = jobs
	venv, err := HubVenv(os.Getenv("TK_HUB_VERSION"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	s, err := New(Config{Repo: repo, Cache: DefaultCache(), RunDir: runDir, PortBase: base, Venv: venv,
		Env: []string{"TOKENKEEPER_HUB_API_URL=" + proxy.URL(), "TK_JOB_API_URL=" + jobs.URL()}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	stack = s
	defer s.Stop()
	stopBeforeTimeout(s)
	stopOnSignal(s)
	start := time.Now()
	if err := s.Start(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "integration: stack did not start: %v\nlogs: %s %s\n", err, s.KeycloakLog(), s.HubLog())
		return 1
	}
	fmt.Printf("integration: stack up in %s with the hub from %s (logs in %s)\n",
		time.Since(start).Round(100*time.Millisecond), venv, runDir)
	code := m.Run()
	s.Stop()
	if err := UnexpectedExceptions(s); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		code = 1
	}
	if code != 0 {
		fmt.Printf("integration: logs kept in %s\n", runDir)
		return code
	}
	if err := os.RemoveAll(runDir); err != nil {
		fmt.Fprintln(os.Stderr, "integration: remove the run directory:", err)
	}
	return code
}

// listing reports whether the binary only lists its tests (-test.list), as
// the suite runner asks it to: that needs no stack.
func listing() bool {
	flag.Parse()
	f := flag.Lookup("test.list")
	return f != nil && f.Value.String() != ""
}

// portBase is where the test stack's ports start: 28000, or
// TK_TEST_PORT_BASE so that two checkouts can run the suite side by side.
func portBase() int {
	if v, err := strconv.Atoi(os.Getenv("TK_TEST_PORT_BASE")); err == nil && v > 0 {
		return v
	}
	return 28000
}
