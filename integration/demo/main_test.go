package main

import "testing"

func TestLogText(t *testing.T) {
	tests := []struct {
		line, want string
		ok         bool
	}{
		{
			line: `{"time":"2026-11-22T12:32:02.7Z","level":"INFO","msg":"refreshed","user":"alice","expires_at":"2026-11-22T12:32:32Z"}` + "\n",
			want: "INFO  refreshed expires_at=2026-11-22T12:32:32Z user=alice",
			ok:   true,
		},
		{line: "[I 2026-11-22 12:31:33.991 JupyterHub app:3720] JupyterHub is now running\n"},
		{line: `{"no":"message"}` + "\n"},
	}
	for _, tt := range tests {
		got, ok := logText(tt.line)
		if ok != tt.ok {
			t.Errorf("logText(%q) ok = %v, want %v", tt.line, ok, tt.ok)
			continue
		}
		// The clock time depends on the local zone; compare what follows it.
		if ok && (len(got) < 9 || got[9:] != tt.want) {
			t.Errorf("logText(%q) = %q, want HH:MM:SS %q", tt.line, got, tt.want)
		}
	}
}
