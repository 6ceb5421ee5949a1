//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// The token-file tests' users have servers with token files (the stack's
// jupyterhub_config.py gives files to them alone): base (raw), header,
// json, and trino (json, audience trino). The notebook package's Jupyter
// server extension keeps them fresh inside the single-user server.

// tokenFileLife is the test realm's access-token lifetime.
const tokenFileLife = 30 * time.Second

// ensureKeycloakUser creates user in the test realm, with password
// user+"-pw", unless it exists.
func ensureKeycloakUser(t *testing.T, user string) {
	t.Helper()
	body := map[string]any{
		"username": user, "enabled": true, "email": user + "@example.org", "emailVerified": true,
		"firstName": user, "lastName": "Tester",
		"credentials": []map[string]any{{"type": "password", "value": user + "-pw", "temporary": false}},
	}
	err := stack.KeycloakAdmin(context.Background(), http.MethodPost, "/users", body, nil)
	if err != nil && !IsStatus(err, http.StatusConflict) {
		t.Fatalf("create Keycloak user %s: %v", user, err)
	}
}

// tokenFiles reads the paths of a server's token files from its environment
// and checks they agree with TOKENKEEPER_TOKEN_FILES.
func tokenFiles(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	var spec map[string]struct {
		Path   string `json:"path"`
		Format string `json:"format"`
	}
	if err := json.Unmarshal([]byte(env["TOKENKEEPER_TOKEN_FILES"]), &spec); err != nil {
		t.Fatalf("TOKENKEEPER_TOKEN_FILES in the server's environment: %v", err)
	}
	paths := map[string]string{}
	for name, f := range spec {
		paths[name] = f.Path
		if v := env["TOKENKEEPER_TOKEN_FILE_"+strings.ToUpper(name)]; v != f.Path {
			t.Errorf("TOKENKEEPER_TOKEN_FILE_%s = %q, want %q", strings.ToUpper(name), v, f.Path)
		}
	}
	if got := slices.Sorted(maps.Keys(paths)); !slices.Equal(got, []string{"base", "header", "json", "trino"}) {
		t.Fatalf("token files in the server's environment: %v", got)
	}
	return paths
}

// readTokenFile reads a token file in its format and returns the access
// token; for json it also checks expires_at agrees with the token.
func readTokenFile(path, format string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm() != 0o600 {
		return "", fmt.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	text := string(b)
	switch format {
	case "raw":
		if !strings.HasSuffix(text, "\n") || strings.Count(text, "\n") != 1 {
			return "", fmt.Errorf("%s: want the token and one newline, got %q", path, text)
		}
		return strings.TrimSpace(text), nil
	case "header":
		tok, ok := strings.CutPrefix(strings.TrimSuffix(text, "\n"), "Authorization: Bearer ")
		if !ok {
			return "", fmt.Errorf("%s: not an Authorization header line: %q", path, text)
		}
		return tok, nil
	}
	var f struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresAt   string `json:"expires_at"`
		User        string `json:"user"`
		Audience    string `json:"audience"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	c, err := refresh.ParseClaims(f.AccessToken)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if exp, err := time.Parse(time.RFC3339, f.ExpiresAt); err != nil || !exp.Equal(c.Expiry) {
		return "", fmt.Errorf("%s: expires_at %q, want the token's expiry %s (%v)", path, f.ExpiresAt, c.Expiry, err)
	}
	if f.TokenType == "" || f.User == "" {
		return "", fmt.Errorf("%s: token_type %q, user %q: want both", path, f.TokenType, f.User)
	}
	return f.AccessToken, nil
}

// watchTokenFiles waits for the files to appear, then reads them every
// 250 ms for the given time: every read must find a token of mode 0600 that
// has not expired and that Keycloak accepts (userinfo; introspection for
// the trino file), and each token must be replaced at two thirds of its
// life. It returns how many distinct tokens each file held.
func watchTokenFiles(t *testing.T, files, formats map[string]string, watch time.Duration) map[string]int {
	t.Helper()
	ctx := context.Background()
	err := Poll(ctx, 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		for name, format := range formats {
			if _, err := readTokenFile(files[name], format); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("token files did not appear: %v", err)
	}
	watches := map[string]*fileWatch{}
	for name, format := range formats {
		watches[name] = &fileWatch{name: name, path: files[name], format: format, accept: userinfoAccepts, seen: map[string]bool{}}
		if name == "trino" {
			// Userinfo wants the openid scope, which an exchanged token lacks.
			watches[name].accept = func(_ context.Context, tok string) error {
				if !introspect(t, tok) {
					return errors.New("Keycloak's introspection: not active")
				}
				return nil
			}
		}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(watch); time.Now().Before(end); <-tick.C {
		for _, w := range watches {
			if err := w.check(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := map[string]int{}
	for name, w := range watches {
		counts[name] = len(w.seen)
	}
	return counts
}

// fileWatch is what watchTokenFiles knows of one file.
type fileWatch struct {
	name, path, format string
	accept             func(context.Context, string) error // Keycloak's verdict on a token
	seen               map[string]bool                     // the tokens the file held
	issued             time.Time                           // when its current token was issued
	life               time.Duration                       // and its lifetime
}

// check reads the file once and records its token.
func (w *fileWatch) check(ctx context.Context) error {
	now := time.Now()
	tok, err := readTokenFile(w.path, w.format)
	if err != nil {
		return fmt.Errorf("token file %s: %w", w.name, err)
	}
	c, err := refresh.ParseClaims(tok)
	if err != nil || !c.Expiry.After(now) {
		return fmt.Errorf("token file %s holds an expired or unreadable token (%v, expiry %s)", w.name, err, c.Expiry)
	}
	if w.seen[tok] {
		return nil
	}
	// The keeper rewrites a file at two thirds of its token's life.
	if age := now.Sub(w.issued); len(w.seen) > 0 && (age < w.life/2 || age > w.life*2/3+6*time.Second) {
		return fmt.Errorf("token file %s replaced %s after its token was issued, want about %s (two thirds of %s)",
			w.name, age.Round(100*time.Millisecond), w.life*2/3, w.life)
	}
	if err := w.accept(ctx, tok); err != nil {
		return fmt.Errorf("token file %s's token: %w", w.name, err)
	}
	w.seen[tok], w.issued, w.life = true, c.IssuedAt, c.Expiry.Sub(c.IssuedAt)
	return nil
}

// userinfoAccepts checks Keycloak's userinfo accepts a user's token.
func userinfoAccepts(ctx context.Context, tok string) error {
	if status, err := stack.Userinfo(ctx, tok); err != nil || status != http.StatusOK {
		return fmt.Errorf("Keycloak userinfo: %d, %v", status, err)
	}
	return nil
}

// runPythonInServer runs the server's Python with exactly the environment
// the hub gave the server; it returns the output and the exit status.
func runPythonInServer(t *testing.T, env map[string]string, code string) (string, int) {
	t.Helper()
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	cmd := exec.Command(filepath.Join(stack.venv(), "bin", "python"), "-c", code)
	cmd.Env, cmd.Dir = environ, t.TempDir()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("python in the server's environment: %v", err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// getTokenScript calls get_token and exits 0 with a token, 3 for
// LoginRequired, 4 for any other TokenkeeperError, printing the message.
const getTokenScript = `
import sys, tokenkeeper
try:
    tokenkeeper.get_token(min_valid=5)
except tokenkeeper.LoginRequired as e:
    print("LoginRequired:", e); sys.exit(3)
except tokenkeeper.TokenkeeperError as e:
    print("TokenkeeperError:", e); sys.exit(4)
print("token")
`

// audienceScript prints get_token(audience="trino"), then the error
// get_token raises for an audience tokenkeeper does not serve.
const audienceScript = `
import sys, tokenkeeper
print(tokenkeeper.get_token(audience="trino", min_valid=5))
try:
    tokenkeeper.get_token(audience="realm-management")
except tokenkeeper.NotAllowed as e:
    print("NotAllowed:", e)
else:
    sys.exit(5)
`

func TestServerKeepsTokenFilesFreshUntilTheSessionEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ensureKeycloakUser(t, "tess")
	login(t, "tess")
	startServer(t, "tess")
	stopServerAtEnd(t, "tess")
	env := serverEnv(t, "tess")
	files := tokenFiles(t, env)
	// The keeper starts in a thread of the server, which may answer the
	// hub a moment before the keeper's first write.
	var dirMode os.FileMode
	err := Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		fi, err := os.Stat(filepath.Dir(files["base"]))
		if err != nil {
			return false, err
		}
		dirMode = fi.Mode().Perm()
		return true, nil
	})
	if err != nil || dirMode != 0o700 {
		t.Errorf("token files' directory: mode %v, %v; want mode 0700", dirMode, err)
	}
	formats := map[string]string{"base": "raw", "header": "header", "json": "json"}
	noAudiences := audienceTokensUnserved(t, env)
	if noAudiences == "" {
		formats["trino"] = "json"
	}
	counts := watchTokenFiles(t, files, formats, 3*tokenFileLife+2*time.Second)
	for name, n := range counts {
		// A file holds a new token every 20 s: its first and at least four more in 92 s.
		if n < 5 {
			t.Errorf("token file %s held %d tokens over three lifetimes, want at least 5", name, n)
		}
	}
	t.Run("audience", func(t *testing.T) {
		if noAudiences != "" {
			t.Skip(noAudiences)
		}
		testAudienceTokenFile(t, env, files["trino"])
	})

	start, logAt := time.Now(), fileSize(stack.HubLog())
	if err := stack.KeycloakLogout(ctx, "tess"); err != nil {
		t.Fatal(err)
	}
	// The keeper waiting on session-end hears of the logout and removes
	// the files at once; else it asks tokenkeeper at the latest two thirds
	// of a lifetime later and removes them when it answers 409 (JupyterHub
	// 6), or when the hub refuses the server's token (401, JupyterHub 5).
	err = Poll(ctx, tokenFileLife*2/3+10*time.Second, 250*time.Millisecond, func() (bool, error) {
		for name, path := range files {
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				return false, fmt.Errorf("token file %s still there (%v)", name, err)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("after the Keycloak logout: %v", err)
	}
	t.Logf("token files removed %s after the logout", time.Since(start).Round(100*time.Millisecond))
	if out, code := runPythonInServer(t, env, getTokenScript); code != 3 || !strings.Contains(out, "log in to JupyterHub again") {
		t.Errorf("get_token inside the server after the logout: exit %d, %q; want LoginRequired", code, out)
	}
	// Removed because the session ended, not because their tokens expired:
	// session-end said so, or tokenkeeper answered 409, or (JupyterHub 5,
	// past auth_refresh_age) the hub refused the server's token.
	reasons := []string{"the user's session has ended: ", "The user has no valid Keycloak session"}
	if hubMajor() == 5 {
		reasons = append(reasons, "the hub refuses this server's JupyterHub token")
	}
	// From the logout on: other tests' servers log the same lines.
	lines := append(hubLogContaining(t, "tokenkeeper: token file base removed: ", logAt),
		hubLogContaining(t, "tokenkeeper: token files removed, the user's session has ended: ", logAt)...)
	if len(lines) != 1 || !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(lines[0], r) }) {
		t.Errorf("the server's log of the base file's removal: %q, want one line saying one of %q", lines, reasons)
	}
}

// audienceTokensUnserved returns why tokenkeeper serves no audience
// tokens (its fresh-token refuses or ignores ?audience=), or "" when it
// serves them.
func audienceTokensUnserved(t *testing.T, env map[string]string) string {
	t.Helper()
	status, body := freshToken(t, env["JUPYTERHUB_API_TOKEN"], "?audience=trino")
	switch {
	case status == http.StatusBadRequest:
		return fmt.Sprintf("tokenkeeper's fresh-token refuses ?audience= (400 %v): it serves no audience tokens yet", body["message"])
	case status == http.StatusOK && body["audience"] != "trino":
		return "tokenkeeper's fresh-token ignores ?audience= (its answer names no audience): it serves no audience tokens yet"
	case status != http.StatusOK:
		t.Fatalf("fresh-token?audience=trino with the server's token: %d %v", status, body)
	}
	return ""
}

// testAudienceTokenFile checks the trino file holds the user's token
// exchanged for audience trino, in the same Keycloak session, and that
// get_token(audience=) works inside the server.
func testAudienceTokenFile(t *testing.T, env map[string]string, path string) {
	var tok string
	err := Poll(context.Background(), 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		var err error
		tok, err = readTokenFile(path, "json")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("trino token file: %v", err)
	}
	if aud := audiences(t, tok); len(aud) != 1 || aud[0] != "trino" {
		t.Errorf("trino token file's token has aud %q, want exactly [trino]", aud)
	}
	if !introspect(t, tok) {
		t.Error("Keycloak's introspection of the trino token file's token: not active")
	}
	out, code := runPythonInServer(t, env, audienceScript)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 ||
		!strings.HasPrefix(lines[1], "NotAllowed: HTTP 403: ") || !slices.Equal(audiences(t, lines[0]), []string{"trino"}) {
		t.Errorf("get_token(audience=...) inside the server: exit %d, %q; want a trino token, then NotAllowed", code, out)
	}
	base, err := readTokenFile(filepath.Join(filepath.Dir(path), "base"), "raw")
	if err != nil {
		t.Fatal(err)
	}
	var a, b struct {
		Sid string `json:"sid"`
	}
	if decodeClaims(tok, &a) != nil || decodeClaims(base, &b) != nil || a.Sid == "" || a.Sid != b.Sid {
		t.Errorf("trino token's sid %q, the user's token's %q: want the same session", a.Sid, b.Sid)
	}
}

// hubLogContaining returns the lines of the hub's log (which holds the
// single-user servers' output too) that contain text, from the byte
// offset from[0] on when given.
func hubLogContaining(t *testing.T, text string, from ...int64) []string {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	if len(from) > 0 {
		b = b[min(from[0], int64(len(b))):]
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, text) {
			out = append(out, l)
		}
	}
	return out
}

func TestTokenFilesGoWithTheServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ensureKeycloakUser(t, "theo")
	login(t, "theo")
	startServer(t, "theo")
	files := tokenFiles(t, serverEnv(t, "theo"))
	err := Poll(ctx, 20*time.Second, 250*time.Millisecond, func() (bool, error) {
		tok, err := readTokenFile(files["base"], "raw")
		return err == nil && tok != "", err
	})
	if err != nil {
		t.Fatalf("token file base: %v", err)
	}
	if err := stack.StopServer(ctx, "theo"); err != nil {
		t.Fatal(err)
	}
	for name, path := range files {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("token file %s outlived the server (%v)", name, err)
		}
	}
}
