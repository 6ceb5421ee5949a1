package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machine describes where the figures were measured.
type machine struct {
	Nproc, CPU, Memory, GoVersion, Kernel string
	LoadStart, LoadEnd                    string
	// Others lists, by phase, the stacks of the demo or the tests found
	// running when the phase began.
	Others []phaseOthers
}

// phaseOthers is what else ran when a phase began.
type phaseOthers struct {
	Phase  string
	Stacks []string
}

// notePhase records the other stacks running as a phase begins.
func (m *machine) notePhase(phase string) {
	m.Others = append(m.Others, phaseOthers{Phase: phase, Stacks: otherStacks()})
}

func describeMachine(ctx context.Context) machine {
	return machine{
		Nproc:     command(ctx, "nproc"),
		CPU:       procField("/proc/cpuinfo", "model name"),
		Memory:    memTotal(),
		GoVersion: command(ctx, "go", "version"),
		Kernel:    firstLine("/proc/sys/kernel/osrelease"),
		LoadStart: loadAverage(),
	}
}

func command(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// procField returns the first "key : value" value in a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	v := strings.Fields(procField("/proc/meminfo", "MemTotal"))
	if len(v) == 0 {
		return "unknown"
	}
	kb, err := strconv.ParseFloat(v[0], 64)
	if err != nil {
		return "unknown"
	}
	return strconv.FormatFloat(kb/1024/1024, 'f', 1, 64) + " GiB"
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	f := strings.Fields(firstLine("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// otherStacks reports which of the demo's and the tests' hub APIs answer on
// 127.0.0.1: they share the machine's cores with the bench.
func otherStacks() []string {
	var found []string
	for name, port := range map[string]int{"make demo (18000)": 18081, "make test (28000)": 28081} {
		c, err := net.DialTimeout("tcp", loopback(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			found = append(found, name)
		}
	}
	slices.Sort(found)
	return found
}
