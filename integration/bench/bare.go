package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// bareCommand is the argument that makes the bench serve the bare handler
// in a process of its own (the fair ceiling for fresh-token, which also
// answers from another process).
const bareCommand = "bare-handler"

// serveBare reads the access token from the first line of stdin, listens
// on 127.0.0.1, prints its address, and serves the bare handler until stdin
// closes (the bench that started it is done).
func serveBare(stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReader(stdin)
	token, err := in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("bare handler: read the token: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: bareHandler(strings.TrimSpace(token)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		_, _ = io.Copy(io.Discard, in)
		srv.Close()
	}()
	fmt.Fprintln(stdout, ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startBareProcess runs the bare handler in a child process and returns its
// URL and a function that stops it.
func startBareProcess(ctx context.Context, token string) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, bareCommand)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("bare handler process: %w", err)
	}
	stop := func() {
		stdin.Close()
		_ = cmd.Wait()
	}
	if _, err := io.WriteString(stdin, token+"\n"); err != nil {
		stop()
		return "", nil, fmt.Errorf("bare handler process: %w", err)
	}
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("bare handler process: no address: %w", err)
	}
	return "http://" + strings.TrimSpace(addr), stop, nil
}
