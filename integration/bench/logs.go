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
		Time time.Time `json:"time"`
		Msg  string    `json:"msg"`
		User string    `json:"user"`
	}
	if json.Unmarshal(line, &v) == nil && v.Msg == "refreshed" {
		l.lines = append(l.lines, refreshLine{Time: v.Time, User: v.User})
	}
}
