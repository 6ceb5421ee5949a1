package main

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// A result is what go test -v said of one top-level test.
type result struct {
	Test    string
	Shard   string
	Outcome string // PASS, FAIL or SKIP
	Took    time.Duration
}

// resultLine matches go test -v's verdict on a top-level test; a subtest's
// verdict is indented and does not match.
var resultLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)

// parseResult reads one line of a shard's output.
func parseResult(shardName, line string) (result, bool) {
	m := resultLine.FindStringSubmatch(line)
	if m == nil {
		return result{}, false
	}
	s, _ := strconv.ParseFloat(m[3], 64)
	return result{Test: m[2], Shard: shardName, Outcome: m[1], Took: time.Duration(s * float64(time.Second))}, true
}

// A tally counts a run's outcomes. A test a shard was given but never gave
// a verdict on (its stack did not start, or the binary was killed) counts
// as failed.
type tally struct{ Passed, Failed, Skipped int }

func count(shards []shard, results []result) tally {
	seen := map[string]string{}
	for _, r := range results {
		seen[r.Shard+"/"+r.Test] = r.Outcome
	}
	var t tally
	for _, s := range shards {
		for _, name := range s.Tests {
			switch seen[s.Name+"/"+name] {
			case "PASS":
				t.Passed++
			case "SKIP":
				t.Skipped++
			default:
				t.Failed++
			}
		}
	}
	return t
}

// slowest returns the n longest results, longest first.
func slowest(results []result, n int) []result {
	out := slices.Clone(results)
	slices.SortStableFunc(out, func(a, b result) int { return cmp.Compare(b.Took, a.Took) })
	return out[:min(n, len(out))]
}

// show says whether a line of a shard's output is worth printing as it
// comes: test starts and verdicts, the stack's own lines, and a failing
// test's file:line messages.
var show = regexp.MustCompile(`^(=== RUN|--- |\s+--- FAIL|PASS$|FAIL|ok|integration:)|_test\.go:\d+`)

// measured returns the results as a durations file: each test's longest
// time over the shards that ran it, longest first.
func measured(results []result) string {
	longest := map[string]time.Duration{}
	for _, r := range results {
		longest[r.Test] = max(longest[r.Test], r.Took)
	}
	names := make([]string, 0, len(longest))
	for n := range longest {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(longest[b], longest[a]), cmp.Compare(a, b)) })
	out := "# Measured by integration/suite in one run; copy to integration/durations.txt to rebalance the shards.\n"
	for _, n := range names {
		out += fmt.Sprintf("%s %.1f\n", n, longest[n].Seconds())
	}
	return out
}
