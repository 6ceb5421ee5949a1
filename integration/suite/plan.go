package main

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A suite is a set of integration tests run against one JupyterHub major
// version, split into Shards stacks that run side by side.
type suite struct {
	Hub    string         // "6" or "5": TK_HUB_VERSION
	Shards int            // stacks for this suite
	Run    *regexp.Regexp // which tests of the package belong to it
}

// parseSuite reads "HUB:SHARDS:PATTERN", e.g. "6:4:." or "5:1:^(TestA|TestB)$".
func parseSuite(s string) (suite, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return suite{}, fmt.Errorf("suite %q: want HUB:SHARDS:PATTERN", s)
	}
	if parts[0] != "5" && parts[0] != "6" {
		return suite{}, fmt.Errorf("suite %q: hub version %q, want 5 or 6", s, parts[0])
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < 1 {
		return suite{}, fmt.Errorf("suite %q: shards %q, want a number of at least 1", s, parts[1])
	}
	re, err := regexp.Compile(parts[2])
	if err != nil {
		return suite{}, fmt.Errorf("suite %q: %w", s, err)
	}
	return suite{Hub: parts[0], Shards: n, Run: re}, nil
}

// A shard is one stack and the tests it runs one after another.
type shard struct {
	Name     string // e.g. "jh6-2"
	Hub      string
	Tests    []string
	Estimate time.Duration
}

// runPattern is the -test.run pattern that selects exactly the shard's tests.
func (s shard) runPattern() string {
	quoted := make([]string, len(s.Tests))
	for i, t := range s.Tests {
		quoted[i] = regexp.QuoteMeta(t)
	}
	return "^(" + strings.Join(quoted, "|") + ")$"
}

// defaultEstimate is what a test not in the durations file is expected to take.
const defaultEstimate = 90 * time.Second

// plan splits each suite's tests over its shards, longest first, each test
// to the shard with the least work so far (ties to the lower-numbered
// shard), so that the shards end as close together as the estimates allow.
// Every test the suite selects is in exactly one of its shards; a shard
// that would get no test is left out.
func plan(suites []suite, tests []string, estimates map[string]time.Duration) []shard {
	var out []shard
	for _, su := range suites {
		var mine []string
		for _, t := range tests {
			if su.Run.MatchString(t) {
				mine = append(mine, t)
			}
		}
		out = append(out, split(su, mine, estimates)...)
	}
	return out
}

func split(su suite, tests []string, estimates map[string]time.Duration) []shard {
	est := func(t string) time.Duration {
		if d, ok := estimates[t]; ok {
			return d
		}
		return defaultEstimate
	}
	slices.SortStableFunc(tests, func(a, b string) int { return cmp.Compare(est(b), est(a)) })
	shards := make([]shard, su.Shards)
	for i := range shards {
		shards[i] = shard{Name: fmt.Sprintf("jh%s-%d", su.Hub, i+1), Hub: su.Hub}
	}
	for _, t := range tests {
		i := 0
		for j := range shards {
			if shards[j].Estimate < shards[i].Estimate {
				i = j
			}
		}
		shards[i].Tests = append(shards[i].Tests, t)
		shards[i].Estimate += est(t)
	}
	return slices.DeleteFunc(shards, func(s shard) bool { return len(s.Tests) == 0 })
}

// parseDurations reads lines "TestName SECONDS"; blank lines and lines
// starting with # are skipped.
func parseDurations(text string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"TestName SECONDS\", got %q", i+1, line)
		}
		s, err := strconv.ParseFloat(f[1], 64)
		if err != nil || s < 0 {
			return nil, fmt.Errorf("line %d: seconds %q", i+1, f[1])
		}
		out[f[0]] = time.Duration(s * float64(time.Second))
	}
	return out, nil
}
