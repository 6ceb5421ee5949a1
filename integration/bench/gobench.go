package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// goBench is one `go test -bench` run and its parsed lines.
type goBench struct {
	Env     []string
	Args    []string
	Results []benchLine
}

// benchLine is one benchmark result: its name without the -N suffix, the
// iterations, and its values by unit.
type benchLine struct {
	Name   string
	N      int
	Values map[string]float64
}

// Command is the shell command that ran the benchmark.
func (g goBench) Command() string {
	parts := append([]string{}, g.Env...)
	parts = append(parts, "go")
	for _, a := range g.Args {
		if strings.ContainsAny(a, "^$|()*") {
			a = "'" + a + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Value returns a result's value in unit.
func (g goBench) Value(name, unit string) (float64, bool) {
	for _, r := range g.Results {
		if r.Name == name {
			v, ok := r.Values[unit]
			return v, ok
		}
	}
	return 0, false
}

// measureGo runs the in-memory benchmarks with the stack stopped, with the
// real tokens' sizes.
func measureGo(ctx context.Context, repo string, rep *report) error {
	sizes := rep.Fresh.Sizes
	env := []string{fmt.Sprintf("TOKENKEEPER_BENCH_TOKEN_SIZES=%d,%d,%d", sizes[0], sizes[1], sizes[2])}
	rep.Schedule = goBench{Env: env, Args: []string{"test", "-run", "^$", "-bench", "^BenchmarkSchedule100k$",
		"-benchtime", "5x", "-count", "1", "./refresh/"}}
	rep.Handler = goBench{Env: env, Args: []string{"test", "-run", "^$", "-bench",
		"^Benchmark(FreshTokenHandler|BareHandler)$", "-benchmem", "-count", "1", "./spawnerhook/"}}
	for _, g := range []*goBench{&rep.Schedule, &rep.Handler} {
		rep.Machine.notePhase(g.Args[len(g.Args)-1])
		if err := g.run(ctx, repo); err != nil {
			return err
		}
	}
	return nil
}

func (g *goBench) run(ctx context.Context, repo string) error {
	fmt.Println("bench:", g.Command())
	cmd := exec.CommandContext(ctx, "go", g.Args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), g.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", g.Command(), err, out.String())
	}
	g.Results = parseBench(out.String())
	if len(g.Results) == 0 {
		return fmt.Errorf("%s: no results\n%s", g.Command(), out.String())
	}
	for _, r := range g.Results {
		fmt.Printf("bench: %s %v\n", r.Name, r.Values)
	}
	return nil
}

// parseBench reads the result lines of `go test -bench` output.
func parseBench(out string) []benchLine {
	var lines []benchLine
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		b := benchLine{Name: name, N: n, Values: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Values[f[i+1]] = v
			}
		}
		lines = append(lines, b)
	}
	return lines
}
