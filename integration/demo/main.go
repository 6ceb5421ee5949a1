// Command demo brings up tokenkeeper's whole stack on 127.0.0.1 (Keycloak,
// JupyterHub with OAuthenticator, the proxy, tokenkeeper as a managed
// service), prints the hub URL and a test login, shows tokenkeeper's log
// lines as they come, and stops everything on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
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
		"  Keycloak:   %s/admin  (admin / admin)\n\nStart a server, then watch tokenkeeper refresh the tokens. Ctrl-C stops everything.\n\n",
		time.Since(start).Round(time.Second), s.HubURL(), s.KeycloakURL())
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
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"msg"`) {
			fmt.Fprint(out, "tokenkeeper: ", line)
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
