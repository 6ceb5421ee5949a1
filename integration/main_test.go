//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// stack is the one stack every integration test runs against.
var stack *Stack

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
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
	s, err := New(Config{Repo: repo, Cache: DefaultCache(), RunDir: runDir, PortBase: 28000})
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	stack = s
	defer s.Stop()
	start := time.Now()
	if err := s.Start(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "integration: stack did not start: %v\nlogs: %s %s\n", err, s.KeycloakLog(), s.HubLog())
		return 1
	}
	fmt.Printf("integration: stack up in %s (logs in %s)\n", time.Since(start).Round(100*time.Millisecond), runDir)
	code := m.Run()
	if code != 0 {
		fmt.Printf("integration: logs kept in %s\n", runDir)
	}
	return code
}
