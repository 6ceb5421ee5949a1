package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExceptionsIn(t *testing.T) {
	log := `[E 2026-11-27 19:22:18 JupyterHub web:1875] Uncaught exception GET /hub/home
    Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/tornado/web.py", line 1790, in _execute
        result = await result
    AttributeError: 'HomeHandler' object has no attribute '_token_authenticated'
[I 2026-11-27 19:22:19 JupyterHub log:192] 302 GET /hub/home
2026-11-27 19:22:20,001 ERROR [io.quarkus] boom
java.lang.IllegalStateException: pool closed
	at org.example.Pool.get(Pool.java:10)
	at org.example.Main.run(Main.java:5)
	... 3 more
Caused by: java.io.IOException: broken
	at org.example.Io.read(Io.java:1)
plain line
`
	path := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := exceptionsIn(path)
	want := []string{
		"AttributeError: 'HomeHandler' object has no attribute '_token_authenticated'",
		"java.lang.IllegalStateException: pool closed",
		"Caused by: java.io.IOException: broken",
	}
	if diff := cmp.Diff(want, got); err != nil || diff != "" {
		t.Errorf("exceptionsIn: %v (-want +got):\n%s", err, diff)
	}
	if !expected("2026-11-27 19:55:56,532 WARN  [org.keycloak.services] (executor-thread-1) KC-SERVICES0057: Logout for client 'jupyterhub' failed: org.apache.http.conn.HttpHostConnectException: Connect to 127.0.0.1:12097 [/127.0.0.1] failed: Connection refused") ||
		!expected("Caused by: java.net.ConnectException: Connection refused") {
		t.Error("an undelivered back-channel logout is not among the expected exceptions")
	}
	if !expected(got[0]) || expected(got[1]) {
		t.Errorf("expected(%q) = %t, expected(%q) = %t; want true, false", got[0], expected(got[0]), got[1], expected(got[1]))
	}
}
