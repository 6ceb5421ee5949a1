package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// refreshLine is one "refreshed" line of tokenkeeper's log.
type refreshLine struct {
	Time time.Time
	User string
	// ExpiresAt is the new access token's expiry.
	ExpiresAt time.Time
}

// refreshLog follows tokenkeeper's JSON lines in the hub's log and keeps
// every "refreshed" line seen.
type refreshLog struct {
	path  string
	off   int64
	lines []refreshLine
}

// read appends the "refreshed" lines written since the last read.
func (l *refreshLog) read() error {
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("hub log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return fmt.Errorf("hub log: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil // a partial last line is read next time
		}
		l.off += int64(len(line))
		l.parse(line)
	}
}

func (l *refreshLog) parse(line []byte) {
	if !bytes.HasPrefix(line, []byte("{")) || !bytes.Contains(line, []byte(`"msg":"refreshed"`)) {
		return
	}
	var v struct {
		Time      time.Time `json:"time"`
		Msg       string    `json:"msg"`
		User      string    `json:"user"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if json.Unmarshal(line, &v) == nil && v.Msg == "refreshed" {
		l.lines = append(l.lines, refreshLine{Time: v.Time, User: v.User, ExpiresAt: v.ExpiresAt})
	}
}

// late counts the refreshes among lines[from:to] that came after the
// user's previous access token (from an earlier line) had expired, and how
// many of them had an earlier line to compare with.
func (l *refreshLog) late(from, to int) (late, known int) {
	prev := map[string]time.Time{}
	for i, line := range l.lines[:to] {
		if exp, ok := prev[line.User]; ok && i >= from {
			known++
			if line.Time.After(exp) {
				late++
			}
		}
		prev[line.User] = line.ExpiresAt
	}
	return late, known
}

// count is the "refreshed" lines of user seen so far.
func (l *refreshLog) count(user string) int {
	n := 0
	for _, line := range l.lines {
		if line.User == user {
			n++
		}
	}
	return n
}

// interval is the mean time between consecutive refreshes of one user,
// over the pairs whose later refresh is among lines[from:to], for users in
// ours, and how many pairs there were.
func (l *refreshLog) interval(from, to int, ours map[string]time.Time) (time.Duration, int) {
	last := map[string]time.Time{}
	var sum time.Duration
	n := 0
	for i, line := range l.lines[:to] {
		if _, ok := ours[line.User]; !ok {
			continue
		}
		if prev, ok := last[line.User]; ok && i >= from {
			sum += line.Time.Sub(prev)
			n++
		}
		last[line.User] = line.Time
	}
	if n == 0 {
		return 0, 0
	}
	return sum / time.Duration(n), n
}
