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
[E 2026-12-07 07:39:50.100 JupyterHub ioloop:945] Exception in callback <bound method JupyterHub.check_services_health of <jupyterhub.app.JupyterHub object at 0x7f842e1ff110>>
    Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/jupyterhub/app.py", line 2974, in check_services_health
    AttributeError: 'NoneType' object has no attribute 'before'
[C 2026-12-07 07:39:55.469 JupyterHub app:3889] Received signal SIGTERM, initiating shutdown...
[E 2026-12-07 07:39:55.687 JupyterHub ioloop:945] Exception in callback <bound method JupyterHub.check_services_health of <jupyterhub.app.JupyterHub object at 0x7f842e1ff110>>
    Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/jupyterhub/objects.py", line 128, in _orm_server_changed
    AttributeError: 'NoneType' object has no attribute 'proto'
[E 2026-12-07 07:39:55.702 JupyterHub ioloop:945] Exception in callback <bound method JupyterHub.update_last_activity of <jupyterhub.app.JupyterHub object at 0x7f842e1ff110>>
    Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/jupyterhub/proxy.py", line 938, in _wait_for_api_request
    ConnectionRefusedError: [Errno 111] Connection refused
[E 2026-12-07 07:39:55.800 JupyterHub web:1875] Uncaught exception GET /hub/home
    Traceback (most recent call last):
    KeyError: 'during shutdown, but not a periodic callback'
[I 2026-12-07 07:40:01.000 JupyterHub app:3800] JupyterHub is now running at http://127.0.0.1:28000/
[E 2026-12-07 07:41:55.702 JupyterHub ioloop:945] Exception in callback <bound method JupyterHub.update_last_activity of <jupyterhub.app.JupyterHub object at 0x7f842e1ff110>>
    Traceback (most recent call last):
    ConnectionRefusedError: [Errno 111] Connection refused
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
		// A periodic callback's traceback counts outside a shutdown, and
		// any other traceback during one; the two periodic callbacks'
		// tracebacks during the shutdown do not.
		"AttributeError: 'NoneType' object has no attribute 'before'",
		"KeyError: 'during shutdown, but not a periodic callback'",
		"ConnectionRefusedError: [Errno 111] Connection refused",
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
