// Command bench measures tokenkeeper on this machine and writes
// BENCHMARKS.md. It starts the real stack on 127.0.0.1 (Keycloak with its
// default 5-minute access tokens, JupyterHub with OAuthenticator, the
// proxy, tokenkeeper as a managed service under a hub budget) and measures:
//
//   - fresh-token at min_valid 1, 60 and 300 s against a bare Go handler in
//     its own process and in this one, and the hub's own user API, with a
//     closed-loop load generator in this process; and what a token
//     lifetime of calls costs the hub;
//   - for 100 and 1,000 users with real Keycloak sessions, whose tokens
//     fall due together: that tokenkeeper refreshes them all in time
//     without exceeding the hub budget in any second, and its hub requests
//     over two token lifetimes against a naive refresher's;
//
// then stops the stack and runs the in-memory benchmarks (`go test -bench`)
// of the schedule at 100k users and of the fresh-token handler. `make bench`
// runs it; all figures in the file come from one run.
//
// "bench bare-handler" serves the bare handler alone; the bench starts
// itself that way for the bare handler in its own process.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	out      string
	portBase int
	users    []int
	conns    []int
	warm     time.Duration
	run      time.Duration
	window   time.Duration
	ticks    int
	sweep    time.Duration
	// freshWatch is how long each fresh user's calls are watched.
	freshWatch time.Duration
	// hubRPS is tokenkeeper's hub_max_rps.
	hubRPS float64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == bareCommand {
		if err := serveBare(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err == nil {
		err = run(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	var users, conns string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "the report to write")
	fs.IntVar(&o.portBase, "port-base", 38000, "the stack's port base on 127.0.0.1")
	fs.StringVar(&users, "users", "100,1000", "user counts for the sweep measurements")
	fs.StringVar(&conns, "conns", "16,64", "concurrent connections for the fresh-token measurements")
	fs.DurationVar(&o.warm, "warm", time.Second, "warm-up before each load run")
	fs.DurationVar(&o.run, "duration", 5*time.Second, "measured time of each load run")
	fs.DurationVar(&o.window, "window", 2*realmLife, "steady-state window of the sweep measurements")
	fs.DurationVar(&o.freshWatch, "fresh-watch", realmLife+30*time.Second, "how long fresh-token's callers are watched")
	fs.Float64Var(&o.hubRPS, "hub-max-rps", 20, "tokenkeeper's hub request budget per second")
	fs.IntVar(&o.ticks, "naive-ticks", 2, "ticks of the naive refresher")
	fs.DurationVar(&o.sweep, "sweep-interval", 15*time.Second, "tokenkeeper's sweep interval (and the naive tick)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.users, err = intList(users); err != nil {
		return o, fmt.Errorf("-users: %w", err)
	}
	if o.conns, err = intList(conns); err != nil {
		return o, fmt.Errorf("-conns: %w", err)
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// run measures everything and writes the report.
func run(ctx context.Context, o options) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	rep := &report{Opts: o, Started: time.Now(), Machine: describeMachine(ctx)}
	rep.Command = "go run ./integration/bench " + strings.Join(os.Args[1:], " ")
	if err := measureStack(ctx, repo, o, rep); err != nil {
		return err
	}
	if err := measureGo(ctx, repo, rep); err != nil {
		return err
	}
	rep.Machine.LoadEnd = loadAverage()
	rep.Machine.notePhase("end")
	rep.Wall = time.Since(rep.Started)
	if err := os.WriteFile(o.out, []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Printf("bench: wrote %s in %s\n", o.out, rep.Wall.Round(time.Second))
	return nil
}
