// Command demo brings up tokenkeeper's whole stack on 127.0.0.1 (Keycloak,
// JupyterHub with OAuthenticator, the proxy, tokenkeeper as a managed
// service), prints the hub URL and a test login, shows tokenkeeper's log
// lines as they come, and stops everything on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	runDir := filepath.Join(repo, ".cache", "demo", time.Now().Format("20060102-150405"))
	s, err := integration.New(integration.Config{
		Repo: repo, Cache: integration.DefaultCache(), RunDir: runDir, PortBase: 18000,
	})
	if err != nil {
		return err
	}
	defer s.Stop()
	start := time.Now()
	fmt.Fprintln(out, "starting Keycloak and JupyterHub (logs in", runDir+") ...")
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nstack up in %s\n\n  JupyterHub: %s/hub/login\n  log in as:  alice / alice-pw  (also bob, carol, dave with NAME-pw)\n"+
		"              or through \"External\" on Keycloak's page as xavier / xavier-pw\n"+
		"  tokenkeeper's page: %s/services/tokenkeeper/ui/  (also in the hub's Services menu)\n"+
		"  Keycloak:   %s/admin  (admin / admin)\n\nStart a server, then watch tokenkeeper refresh the tokens. Ctrl-C stops everything.\n\n",
		time.Since(start).Round(time.Second), s.HubURL(), s.HubURL(), s.KeycloakURL())
	return follow(ctx, s.HubLog(), out)
}

// follow prints tokenkeeper's JSON log lines from the hub log until ctx ends.
func follow(ctx context.Context, path string, out io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		line, err := r.ReadString('\n')
		if text, ok := logText(line); ok {
			fmt.Fprintln(out, text)
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// logText turns one of tokenkeeper's JSON log lines into
// "15:04:05 INFO refreshed user=alice expires_at=..."; ok is false for the
// hub's own lines.
func logText(line string) (text string, ok bool) {
	var rec map[string]any
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] == nil {
		return "", false
	}
	var b strings.Builder
	if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"])); err == nil {
		b.WriteString(t.Local().Format("15:04:05 "))
	}
	fmt.Fprintf(&b, "%-5v %v", rec["level"], rec["msg"])
	keys := make([]string, 0, len(rec))
	for k := range rec {
		if k != "time" && k != "level" && k != "msg" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, rec[k])
	}
	return b.String(), true
}
