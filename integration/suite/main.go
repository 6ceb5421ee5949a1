// Command suite runs tokenkeeper's integration tests side by side: it
// splits the tests of the integration package's test binary into shards,
// starts one binary per shard, each with a whole stack of its own (Keycloak,
// JupyterHub, the proxy, tokenkeeper) on its own ports, and reports the
// tests' verdicts, each shard's wall time and the ten slowest tests.
//
// The real-stack tests mostly wait out token and session lifetimes, so a
// few stacks on one machine finish the suite in a fraction of the time of
// one stack running every test in turn. A shard runs its tests one after
// another, as the whole suite once did, so that a test that restarts the
// hub or Keycloak, or changes the realm's settings, disturbs only the
// tests of its own shard, which expect it.
//
//	suite -binary .cache/integration.test -durations integration/durations.txt \
//	      -suite '6:4:.' -suite '5:1:^(TestA|TestB)$'
//
// `make integration` runs it; `-plan` prints the shards without running them.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	binary, dir, durations, logs string
	suites                       []suite
	portBase                     int
	timeout                      time.Duration
	planOnly                     bool
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	fs.StringVar(&o.binary, "binary", ".cache/integration.test", "the integration package's test binary (go test -c -tags integration)")
	fs.StringVar(&o.dir, "dir", "integration", "the integration package's directory, where each binary runs")
	fs.StringVar(&o.durations, "durations", "integration/durations.txt", "measured test durations (\"TestName SECONDS\" lines) that balance the shards")
	fs.StringVar(&o.logs, "logs", ".cache/integration", "where each shard's whole output goes")
	fs.IntVar(&o.portBase, "port-base", 28000, "the first shard's port base; each next shard's is 100 higher")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "each shard's go test -timeout")
	fs.BoolVar(&o.planOnly, "plan", false, "print the shards and their tests, run nothing")
	fs.Func("suite", "HUB:SHARDS:PATTERN: the tests matching PATTERN against JupyterHub HUB (5 or 6) on SHARDS stacks (repeatable)", func(s string) error {
		su, err := parseSuite(s)
		o.suites = append(o.suites, su)
		return err
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if len(o.suites) == 0 {
		return o, errors.New("no -suite given")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	binary, err := filepath.Abs(o.binary)
	if err != nil {
		return err
	}
	tests, err := listTests(ctx, binary, o.dir)
	if err != nil {
		return err
	}
	text, err := os.ReadFile(o.durations)
	if err != nil {
		return fmt.Errorf("durations: %w", err)
	}
	estimates, err := parseDurations(string(text))
	if err != nil {
		return fmt.Errorf("durations %s: %w", o.durations, err)
	}
	shards := plan(o.suites, tests, estimates)
	printPlan(stdout, shards)
	if o.planOnly {
		return nil
	}
	return runShards(ctx, o, binary, shards, &lockedWriter{w: stdout})
}

// listTests asks the test binary for its tests; the integration package's
// TestMain starts no stack for -test.list.
func listTests(ctx context.Context, binary, dir string) ([]string, error) {
	cmd := exec.CommandContext(ctx, binary, "-test.list", "^Test")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the tests of %s: %w", binary, err)
	}
	var tests []string
	for _, line := range strings.Fields(string(out)) {
		if strings.HasPrefix(line, "Test") {
			tests = append(tests, line)
		}
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("%s lists no tests", binary)
	}
	return tests, nil
}

func printPlan(w io.Writer, shards []shard) {
	n := 0
	for _, s := range shards {
		n += len(s.Tests)
	}
	fmt.Fprintf(w, "integration: %d tests on %d stacks side by side\n", n, len(shards))
	for _, s := range shards {
		fmt.Fprintf(w, "integration: %s: %d tests, about %s: %s\n", s.Name, len(s.Tests),
			s.Estimate.Round(time.Second), strings.Join(s.Tests, " "))
	}
}

// runShards runs every shard at once and reports when all have ended.
func runShards(ctx context.Context, o options, binary string, shards []shard, out *lockedWriter) error {
	// A fresh directory: no shard's output from an earlier run is left to mislead.
	if err := os.RemoveAll(o.logs); err != nil {
		return err
	}
	if err := os.MkdirAll(o.logs, 0o755); err != nil {
		return err
	}
	var mu sync.Mutex
	var results []result
	exits := make([]error, len(shards))
	var g errgroup.Group
	for i, s := range shards {
		g.Go(func() error {
			start := time.Now()
			err := runShard(ctx, o, binary, i, s, out, func(r result) {
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
			exits[i] = err
			verdict := "passed"
			if err != nil {
				verdict = "failed (" + err.Error() + ")"
			}
			out.printf("integration: %s %s in %s; its whole output: %s\n", s.Name, verdict,
				time.Since(start).Round(time.Second), logPath(o, s))
			return nil
		})
	}
	_ = g.Wait()
	report(out, shards, results)
	if err := os.WriteFile(filepath.Join(o.logs, "durations.txt"), []byte(measured(results)), 0o644); err != nil {
		return err
	}
	return verdict(shards, exits, count(shards, results))
}

// verdict fails the run when a test failed or gave no verdict, and when a
// shard's binary failed after its tests passed (the stack's logs held an
// exception no test expected, or the stack did not stop).
func verdict(shards []shard, exits []error, t tally) error {
	var failed []string
	for i, err := range exits {
		if err != nil {
			failed = append(failed, shards[i].Name)
		}
	}
	switch {
	case t.Failed > 0:
		return fmt.Errorf("%d of %d tests failed", t.Failed, t.Passed+t.Failed+t.Skipped)
	case len(failed) > 0:
		return fmt.Errorf("every test passed, but %s failed after them: see the end of their output",
			strings.Join(failed, ", "))
	}
	return nil
}

func logPath(o options, s shard) string { return filepath.Join(o.logs, s.Name+".log") }

// runShard runs one shard's tests on a stack of its own: port base
// o.portBase + 100 × i, the shard's hub version.
func runShard(ctx context.Context, o options, binary string, i int, s shard, out *lockedWriter, record func(result)) error {
	logf, err := os.Create(logPath(o, s))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, binary, "-test.v", "-test.count=1",
		"-test.timeout="+o.timeout.String(), "-test.run="+s.runPattern())
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), "TK_HUB_VERSION="+s.Hub, "TK_TEST_PORT_BASE="+strconv.Itoa(o.portBase+100*i))
	// The binary stops its stack on SIGTERM; SIGKILL only if it hangs.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(logf, line)
		if r, ok := parseResult(s.Name, line); ok {
			record(r)
		}
		if show.MatchString(line) {
			out.printf("[%s] %s\n", s.Name, line)
		}
	}
	return cmd.Wait()
}

// report prints the tests' verdicts: the failed ones, the ten slowest, and
// a closing count.
func report(out *lockedWriter, shards []shard, results []result) {
	for _, r := range results {
		if r.Outcome == "FAIL" {
			out.printf("integration: FAIL %s on %s\n", r.Test, r.Shard)
		}
	}
	out.printf("integration: the ten slowest tests:\n")
	for _, r := range slowest(results, 10) {
		out.printf("  %7.1f s  %s (%s)\n", r.Took.Seconds(), r.Test, r.Shard)
	}
	t := count(shards, results)
	out.printf("integration: %d passed, %d failed, %d skipped\n", t.Passed, t.Failed, t.Skipped)
}

// lockedWriter lets the shards print whole lines without interleaving them.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
