//go:build integration

package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoTokenBytesInLogsOrDatabase refreshes a user a few times, then looks
// for every token it saw in tokenkeeper's log lines and in its SQLite files.
func TestNoTokenBytesInLogsOrDatabase(t *testing.T) {
	t.Parallel()
	login(t, "quinn")
	startServer(t, "quinn")
	stopServerAtEnd(t, "quinn")
	var secrets []string
	at, _ := accessToken(t, "quinn")
	for range 2 {
		at = waitNewToken(t, "quinn", at, 60*time.Second)
		st, err := stack.AuthState(context.Background(), "quinn")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"access_token", "refresh_token", "id_token"} {
			if v, _ := st[k].(string); len(v) > 20 {
				secrets = append(secrets, v)
			}
		}
	}
	logs := tokenkeeperLines(t)
	files, _ := filepath.Glob(filepath.Join(stack.StateDir(), "tokenkeeper.db*"))
	if len(files) == 0 {
		t.Fatal("no tokenkeeper database found")
	}
	for _, s := range secrets {
		// The signature part alone is unique to the token.
		sig := s[strings.LastIndex(s, ".")+1:]
		if bytes.Contains(logs, []byte(sig)) {
			t.Errorf("tokenkeeper's log holds token bytes")
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte(sig)) {
				t.Errorf("%s holds token bytes in plaintext", filepath.Base(f))
			}
		}
	}
}

// tokenkeeperLines returns tokenkeeper's JSON log lines from the hub log.
func tokenkeeperLines(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for line := range bytes.Lines(b) {
		if bytes.HasPrefix(line, []byte("{")) {
			out = append(out, line...)
		}
	}
	return out
}
