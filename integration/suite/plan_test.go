package main

import (
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPlanBalancesLongestFirst(t *testing.T) {
	s := func(n int) time.Duration { return time.Duration(n) * time.Second }
	estimates := map[string]time.Duration{"TestA": s(600), "TestB": s(300), "TestC": s(250), "TestD": s(200), "TestE": s(100), "TestPure": 0}
	tests := []string{"TestE", "TestD", "TestC", "TestB", "TestA", "TestNew", "TestOther", "TestPure"}
	suites := []suite{
		{Hub: "6", Shards: 3, Run: regexp.MustCompile(".")},
		{Hub: "5", Shards: 2, Run: regexp.MustCompile(`^(TestB|TestE)$`)},
	}
	got := plan(suites, tests, estimates)
	want := []shard{
		// TestNew and TestOther have no measured duration: 90 s each.
		// TestPure was measured at 0 s: it goes where the least work is.
		{Name: "jh6-1", Hub: "6", Tests: []string{"TestA"}, Estimate: s(600)},
		{Name: "jh6-2", Hub: "6", Tests: []string{"TestB", "TestE", "TestNew", "TestPure"}, Estimate: s(490)},
		{Name: "jh6-3", Hub: "6", Tests: []string{"TestC", "TestD", "TestOther"}, Estimate: s(540)},
		{Name: "jh5-1", Hub: "5", Tests: []string{"TestB"}, Estimate: s(300)},
		{Name: "jh5-2", Hub: "5", Tests: []string{"TestE"}, Estimate: s(100)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
}

// TestPlanRunsEveryTestOnce: whatever the estimates and the number of
// shards, each selected test is in exactly one shard of its suite, and
// no shard is empty.
func TestPlanRunsEveryTestOnce(t *testing.T) {
	tests := []string{"TestA", "TestB", "TestC", "TestD", "TestE"}
	for shards := 1; shards <= 7; shards++ {
		got := plan([]suite{{Hub: "6", Shards: shards, Run: regexp.MustCompile(".")}}, slices.Clone(tests),
			map[string]time.Duration{"TestC": time.Hour})
		var all []string
		for _, s := range got {
			if len(s.Tests) == 0 {
				t.Errorf("%d shards: %s is empty", shards, s.Name)
			}
			all = append(all, s.Tests...)
		}
		slices.Sort(all)
		if !slices.Equal(all, tests) {
			t.Errorf("%d shards: tests run = %v, want each of %v once", shards, all, tests)
		}
	}
}

func TestRunPatternSelectsExactlyTheShardsTests(t *testing.T) {
	re := regexp.MustCompile(shard{Tests: []string{"TestA", "TestAB"}}.runPattern())
	for name, want := range map[string]bool{"TestA": true, "TestAB": true, "TestABC": false, "XTestA": false, "TestB": false} {
		if got := re.MatchString(name); got != want {
			t.Errorf("%s matches %v, want %v", name, got, want)
		}
	}
}

func TestParseSuite(t *testing.T) {
	for _, tt := range []struct {
		in, wantErr string
		hub         string
		shards      int
	}{
		{in: "6:4:.", hub: "6", shards: 4},
		{in: "5:1:^(TestA|TestB)$", hub: "5", shards: 1},
		{in: "7:1:.", wantErr: `suite "7:1:.": hub version "7", want 5 or 6`},
		{in: "6:0:.", wantErr: `suite "6:0:.": shards "0", want a number of at least 1`},
		{in: "6:.", wantErr: `suite "6:.": want HUB:SHARDS:PATTERN`},
		{in: "6:1:(", wantErr: "suite \"6:1:(\": error parsing regexp: missing closing ): `(`"},
	} {
		got, err := parseSuite(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("parseSuite(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Hub != tt.hub || got.Shards != tt.shards {
			t.Errorf("parseSuite(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestParseDurations(t *testing.T) {
	got, err := parseDurations("# measured\nTestA 605.1\n\n  TestB 12\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"TestA": 605100 * time.Millisecond, "TestB": 12 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("durations (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"TestA", "TestA x", "TestA -1", "TestA 1 2"} {
		if _, err := parseDurations(bad); err == nil {
			t.Errorf("parseDurations(%q) = nil error", bad)
		}
	}
}

// TestCountFailsTestsWithoutAVerdict: a shard whose stack never started
// gives no verdicts; its tests count as failed, never as passed.
func TestCountFailsTestsWithoutAVerdict(t *testing.T) {
	shards := []shard{
		{Name: "jh6-1", Tests: []string{"TestA", "TestB", "TestC"}},
		{Name: "jh6-2", Tests: []string{"TestD"}},
		{Name: "jh5-1", Tests: []string{"TestA"}},
	}
	var results []result
	for _, line := range []string{
		"--- PASS: TestA (12.50s)",
		"    --- FAIL: TestB/sub (1.00s)",
		"--- SKIP: TestC (0.00s)",
		"=== RUN   TestB",
	} {
		if r, ok := parseResult("jh6-1", line); ok {
			results = append(results, r)
		}
	}
	if r, ok := parseResult("jh5-1", "--- FAIL: TestA (3.25s)"); ok {
		results = append(results, r)
	}
	if got, want := count(shards, results), (tally{Passed: 1, Failed: 3, Skipped: 1}); got != want {
		t.Errorf("count = %+v, want %+v", got, want)
	}
	if got := slowest(results, 2); len(got) != 2 || got[0].Test != "TestA" || got[0].Took != 12500*time.Millisecond || got[1].Shard != "jh5-1" {
		t.Errorf("slowest = %+v", got)
	}
}

func TestMeasuredRoundTrips(t *testing.T) {
	results := []result{
		{Test: "TestA", Shard: "jh6-1", Took: 12 * time.Second},
		{Test: "TestB", Shard: "jh6-2", Took: 30 * time.Second},
		{Test: "TestA", Shard: "jh5-1", Took: 14500 * time.Millisecond},
	}
	got, err := parseDurations(measured(results))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"TestA": 14500 * time.Millisecond, "TestB": 30 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("measured durations (-want +got):\n%s", diff)
	}
}

// TestVerdictFailsAShardThatFailedAfterItsTests: a shard whose binary
// exits non-zero after every test passed (an exception no test expected
// in the stack's logs) fails the run.
func TestVerdictFailsAShardThatFailedAfterItsTests(t *testing.T) {
	shards := []shard{{Name: "jh6-1"}, {Name: "jh5-1"}}
	if err := verdict(shards, []error{nil, nil}, tally{Passed: 3}); err != nil {
		t.Errorf("verdict with every test and shard passed = %v, want nil", err)
	}
	err := verdict(shards, []error{nil, errors.New("exit status 1")}, tally{Passed: 3})
	if err == nil || err.Error() != "every test passed, but jh5-1 failed after them: see the end of their output" {
		t.Errorf("verdict with jh5-1 failed = %v", err)
	}
	if err := verdict(shards, []error{nil, nil}, tally{Passed: 2, Failed: 1}); err == nil || err.Error() != "1 of 3 tests failed" {
		t.Errorf("verdict with a failed test = %v", err)
	}
}
