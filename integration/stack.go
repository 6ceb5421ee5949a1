// Package integration runs tokenkeeper's real stack as local processes on
// 127.0.0.1 — Keycloak with the test realm, JupyterHub with OAuthenticator and
// configurable-http-proxy, and tokenkeeper as the hub's managed service — for
// the end-to-end tests and `make demo`. integration/stack/install.sh installs
// the pieces into the cache first.
package integration

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KeycloakVersion is the Keycloak that install.sh installs.
const KeycloakVersion = "26.5.5"

// Config says where the stack's pieces are and where it runs.
type Config struct {
	// Repo is the repository root (for the hub glue, scripts and bin/tokenkeeper).
	Repo string
	// Cache is where install.sh put Keycloak, the virtualenv and the proxy.
	Cache string
	// RunDir holds this run's data and logs.
	RunDir string
	// PortBase is B: hub B, proxy API B+1, tokenkeeper B+23, Keycloak B+80, hub API B+81.
	PortBase int
	// Env adds variables to the hub's environment (TOKENKEEPER_* ones reach tokenkeeper).
	Env []string
	// Venv is the virtualenv under Cache that runs the hub and the
	// single-user servers (see HubVenv); empty means "venv".
	Venv string
}

// HubVenv returns the virtualenv install.sh made for a JupyterHub major
// version: "venv" for 6 (or ""), "venv-jh5" for 5, the version Zero to
// JupyterHub pins.
func HubVenv(version string) (string, error) {
	switch version {
	case "", "6":
		return "venv", nil
	case "5":
		return "venv-jh5", nil
	}
	return "", fmt.Errorf("TK_HUB_VERSION=%q: want 5 or 6", version)
}

// Stack is a running set of processes. Its methods are safe to call from
// several goroutines.
type Stack struct {
	cfg Config
	// ClientSecret is the secret of the realm's jupyterhub client for this run.
	ClientSecret string
	// SASecret is the secret of the realm's tokenkeeper-sa service account client.
	SASecret string
	// AdminSecret is the secret of the realm's tokenkeeper-admin client, whose
	// service account holds view-users and manage-users.
	AdminSecret string
	// BrokerSecret is the secret of the external realm's jupyter-broker
	// client, with which the test realm brokers logins to it.
	BrokerSecret string
	// StateKey is tokenkeeper's TOKENKEEPER_STATE_KEY for this run.
	StateKey string
	// TestToken is the hub API token of the tk-test-admin service, which
	// administers users and servers and holds tokenkeeper's custom scopes.
	TestToken string
	// cryptKey is the hub's JUPYTERHUB_CRYPT_KEY, the same at every hub
	// start so that users' auth_state survives a restart.
	cryptKey string

	mu       sync.Mutex // guards keycloak, hub and baseURL
	keycloak *process
	hub      *process
	// baseURL is the hub's c.JupyterHub.base_url, "/" unless a test
	// restarted the hub under another (RestartHubAt).
	baseURL string
}

// DefaultCache is where install.sh installs unless TOKENKEEPER_CACHE says otherwise.
func DefaultCache() string {
	if c := os.Getenv("TOKENKEEPER_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "tokenkeeper")
}

// New prepares a stack with fresh secrets in cfg.RunDir; Start starts it.
func New(cfg Config) (*Stack, error) {
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("state key: %w", err)
	}
	return &Stack{
		cfg: cfg, ClientSecret: randomHex(16), SASecret: randomHex(16), AdminSecret: randomHex(16), BrokerSecret: randomHex(16),
		StateKey: base64.StdEncoding.EncodeToString(key), TestToken: randomHex(24), cryptKey: randomHex(32),
	}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// venv is the virtualenv's directory.
func (s *Stack) venv() string {
	return filepath.Join(s.cfg.Cache, cmp.Or(s.cfg.Venv, "venv"))
}

// HubURL is the hub's public URL, served by the proxy.
func (s *Stack) HubURL() string { return s.url(0) }

// HubAPI is the hub's REST API, reached directly on its internal port.
func (s *Stack) HubAPI() string { return s.url(81) + s.BaseURL() + "hub/api" }

// BaseURL is the hub's base URL, with a leading and a trailing slash.
func (s *Stack) BaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cmp.Or(s.baseURL, "/")
}

// HubBaseURL is the hub's public URL with its base URL, without the
// trailing slash: HubBaseURL() + "/hub/login" is the login page.
func (s *Stack) HubBaseURL() string { return s.HubURL() + strings.TrimSuffix(s.BaseURL(), "/") }

// KeycloakURL is Keycloak's base URL.
func (s *Stack) KeycloakURL() string { return s.url(80) }

// Issuer is the test realm's OpenID Connect issuer.
func (s *Stack) Issuer() string { return s.url(80) + "/realms/jupyter" }

// ExternalIssuer is the issuer of the realm that stands for an external
// identity provider, brokered into the test realm as "external".
func (s *Stack) ExternalIssuer() string { return s.url(80) + "/realms/external" }

// ServiceURL is tokenkeeper's URL including its prefix, reached directly.
func (s *Stack) ServiceURL() string { return s.url(23) + s.BaseURL() + "services/tokenkeeper/" }

func (s *Stack) url(offset int) string {
	return "http://127.0.0.1:" + strconv.Itoa(s.cfg.PortBase+offset)
}

// HubLog is the hub's log file, which also holds tokenkeeper's log lines.
func (s *Stack) HubLog() string { return filepath.Join(s.cfg.RunDir, "hub.log") }

// KeycloakLog is Keycloak's log file.
func (s *Stack) KeycloakLog() string { return filepath.Join(s.cfg.RunDir, "keycloak.log") }

// StateDir holds the hub's database, tokenkeeper's database and the env files
// single-user servers write.
func (s *Stack) StateDir() string { return filepath.Join(s.cfg.RunDir, "state") }

// Start starts Keycloak, then the hub (which starts the proxy and tokenkeeper),
// and waits until all answer.
func (s *Stack) Start(ctx context.Context) error {
	if err := s.StartKeycloak(ctx); err != nil {
		return err
	}
	return s.StartHub(ctx)
}

// Stop stops everything the stack started, including processes the hub
// started in sessions of their own.
func (s *Stack) Stop() {
	s.StopHub()
	s.StopKeycloak()
	killStragglers(s.StateDir())
}

// StartKeycloak starts Keycloak on its own data directory with the test
// realm and the external realm imported, and waits for both realms'
// discovery documents.
func (s *Stack) StartKeycloak(ctx context.Context) error {
	if err := s.portsFree(80, 90); err != nil {
		return err
	}
	home, err := s.keycloakHome()
	if err != nil {
		return err
	}
	javaHome, err := os.ReadFile(filepath.Join(s.cfg.Cache, "java-home"))
	if err != nil {
		return fmt.Errorf("no Java recorded by install.sh (run make install-stack): %w", err)
	}
	env := append(os.Environ(),
		"JAVA_HOME="+strings.TrimSpace(string(javaHome)),
		"KC_BOOTSTRAP_ADMIN_USERNAME=admin", "KC_BOOTSTRAP_ADMIN_PASSWORD=admin",
		"TK_CLIENT_SECRET="+s.ClientSecret, "TK_SA_SECRET="+s.SASecret, "TK_ADMIN_SECRET="+s.AdminSecret,
		"TK_BACKCHANNEL_URL="+s.ServiceURL()+"backchannel-logout", "TK_HUB_URL="+s.HubURL(),
		"TK_KEYCLOAK_URL="+s.KeycloakURL(), "TK_BROKER_SECRET="+s.BrokerSecret,
	)
	if os.Getenv("JAVA_OPTS_APPEND") == "" {
		// The JIT's first tier only: a third less CPU to start, which
		// matters when several stacks start side by side, and fast enough
		// for the tests' few requests.
		env = append(env, "JAVA_OPTS_APPEND=-XX:TieredStopAtLevel=1")
	}
	unlock, err := lockFile(filepath.Join(s.cfg.Cache, "keycloak-"+KeycloakVersion+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	logStart := fileSize(s.KeycloakLog())
	p, err := startProcess(s.KeycloakLog(), env, filepath.Join(home, "bin", "kc.sh"), "start-dev",
		"--http-host=127.0.0.1", "--http-port="+strconv.Itoa(s.cfg.PortBase+80), "--import-realm",
		"--http-management-port="+strconv.Itoa(s.cfg.PortBase+90))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.keycloak = p
	s.mu.Unlock()
	if err := waitLogLine(ctx, s.KeycloakLog(), logStart, keycloakBuilt, keycloakStartLimit, p); err != nil {
		return err
	}
	unlock()
	if err := waitHTTP(ctx, s.Issuer()+"/.well-known/openid-configuration", keycloakStartLimit, p); err != nil {
		return err
	}
	return waitHTTP(ctx, s.ExternalIssuer()+"/.well-known/openid-configuration", time.Minute, p)
}

// keycloakStartLimit bounds each step of Keycloak's start. Alone on two
// cores it starts in about 40 s; several stacks starting side by side
// share the cores.
const keycloakStartLimit = 6 * time.Minute

// keycloakBuilt is the line Keycloak logs once its start-dev has built
// (or found built) the server image in the distribution's lib/quarkus.
const keycloakBuilt = "Running the server in development mode"

// lockFile takes an exclusive lock on path, waiting for it; the returned
// function releases it and may be called more than once. Stacks started
// side by side share the cache's Keycloak distribution, whose first
// start-dev writes the built server into it: the lock lets one Keycloak
// at a time through that step.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitLogLine polls the log at path, from offset on, until a line holds
// want, the process exits, or the deadline passes.
func waitLogLine(ctx context.Context, path string, offset int64, want string, limit time.Duration, p *process) error {
	return waitUntil(ctx, limit, p, fmt.Sprintf("%q in %s", want, path), fmt.Sprintf("logging %q", want), func(context.Context) bool {
		b, err := os.ReadFile(path)
		return err == nil && int64(len(b)) > offset && strings.Contains(string(b[offset:]), want)
	})
}

// keycloakHome lays out a Keycloak home for this run: the distribution's
// code from the cache, and data and configuration of its own, so runs do not
// share a database.
func (s *Stack) keycloakHome() (string, error) {
	dist := filepath.Join(s.cfg.Cache, "keycloak-"+KeycloakVersion)
	if _, err := os.Stat(filepath.Join(dist, "bin", "kc.sh")); err != nil {
		return "", fmt.Errorf("no Keycloak %s in the cache (run make install-stack): %w", KeycloakVersion, err)
	}
	home := filepath.Join(s.cfg.RunDir, "keycloak")
	if err := os.MkdirAll(filepath.Join(home, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("keycloak home: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(home, "data", "import"), 0o700); err != nil {
		return "", fmt.Errorf("keycloak home: %w", err)
	}
	for _, d := range []string{"lib", "providers", "themes", "conf", "version.txt"} {
		if err := os.Symlink(filepath.Join(dist, d), filepath.Join(home, d)); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("keycloak home: %w", err)
		}
	}
	if err := copyFile(filepath.Join(dist, "bin", "kc.sh"), filepath.Join(home, "bin", "kc.sh"), 0o755); err != nil {
		return "", err
	}
	// Keycloak imports every JSON file in data/import: the test realm, and
	// the realm that stands for an external identity provider.
	for _, f := range []string{"realm.json", "external-realm.json"} {
		from := filepath.Join(s.cfg.Repo, "integration", "stack", f)
		if err := copyRealm(from, filepath.Join(home, "data", "import", f)); err != nil {
			return "", err
		}
	}
	return home, nil
}

// testPasswordPolicy is the test stack's password hashing: one PBKDF2
// iteration instead of Keycloak's 210,000. Importing the test realm's users
// and checking their passwords at every login then costs milliseconds
// instead of about half a minute of CPU per Keycloak, which lets several
// stacks start side by side on a small machine. Nothing tokenkeeper does
// depends on how Keycloak stores passwords.
const testPasswordPolicy = "hashIterations(1)"

// copyRealm copies a realm export for import, with the test stack's
// password policy unless the export sets one.
func copyRealm(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(from), err)
	}
	var realm map[string]any
	if err := json.Unmarshal(b, &realm); err != nil {
		return fmt.Errorf("realm %s: %w", filepath.Base(from), err)
	}
	if _, ok := realm["passwordPolicy"]; !ok {
		realm["passwordPolicy"] = testPasswordPolicy
	}
	if b, err = json.Marshal(realm); err != nil {
		return fmt.Errorf("realm %s: %w", filepath.Base(from), err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(from), err)
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(from), err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(from), err)
	}
	return nil
}

// portsFree checks that nothing listens on the stack's ports at the given
// offsets, so a process left from an earlier run cannot answer in place of
// the one about to start.
func (s *Stack) portsFree(offsets ...int) error {
	for _, off := range offsets {
		addr := "127.0.0.1:" + strconv.Itoa(s.cfg.PortBase+off)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("port %s is taken (a stack from an earlier run still up?): %w", addr, err)
		}
		ln.Close()
	}
	return nil
}

// StopKeycloak stops Keycloak; its data stays for a later StartKeycloak.
func (s *Stack) StopKeycloak() {
	s.mu.Lock()
	p := s.keycloak
	s.keycloak = nil
	s.mu.Unlock()
	p.stop()
}

// StartHub starts JupyterHub and waits for its API and for tokenkeeper.
func (s *Stack) StartHub(ctx context.Context) error {
	p, err := s.startHub(ctx, s.cfg.Env)
	if err != nil {
		return err
	}
	return waitHTTP(ctx, s.ServiceURL(), time.Minute, p)
}

// startHub starts JupyterHub with env added to its environment and waits
// for its API.
func (s *Stack) startHub(ctx context.Context, extra []string) (*process, error) {
	if err := s.portsFree(0, 1, 23, 81); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.StateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	env := append(os.Environ(), "TK_BASE_URL="+s.BaseURL(),
		"TK_PORT_BASE="+strconv.Itoa(s.cfg.PortBase), "TK_REPO="+s.cfg.Repo, "TK_CACHE="+s.cfg.Cache,
		"TK_STATE_DIR="+s.StateDir(), "TK_BIN="+filepath.Join(s.cfg.Repo, "bin", "tokenkeeper"), "TK_VENV="+s.venv(),
		"TK_CLIENT_SECRET="+s.ClientSecret, "TK_SA_SECRET="+s.SASecret, "TK_ADMIN_SECRET="+s.AdminSecret,
		"TK_STATE_KEY="+s.StateKey,
		"TK_TEST_ADMIN_TOKEN="+s.TestToken, "JUPYTERHUB_CRYPT_KEY="+s.cryptKey,
	)
	env = append(env, extra...)
	hub := filepath.Join(s.venv(), "bin", "jupyterhub")
	p, err := startProcess(s.HubLog(), env, hub, "-f",
		filepath.Join(s.cfg.Repo, "integration", "stack", "jupyterhub_config.py"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.hub = p
	s.mu.Unlock()
	// Through the proxy: its route to the hub is added after the hub's API is up.
	return p, waitHTTP(ctx, s.HubBaseURL()+"/hub/api/", 2*time.Minute, p)
}

// RestartHubAt restarts the hub as RestartHub does, with env, under base
// URL base (such as "/jhub/"): its c.JupyterHub.base_url, which the stack's
// URLs (HubAPI, HubBaseURL, ServiceURL) follow. RestartHubAt(ctx, "/")
// returns to the stack's own.
func (s *Stack) RestartHubAt(ctx context.Context, base string, env ...string) error {
	s.mu.Lock()
	s.baseURL = base
	s.mu.Unlock()
	return s.RestartHub(ctx, env...)
}

// StopHub stops the hub, and with it the proxy, tokenkeeper and any servers.
func (s *Stack) StopHub() {
	s.mu.Lock()
	p := s.hub
	s.hub = nil
	s.mu.Unlock()
	p.stop()
}

// process is a child started in its own process group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(logPath string, env []string, name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	cmd.Dir = filepath.Dir(logPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := startOnSpawnThread(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", filepath.Base(name), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the whole process group: SIGTERM, then SIGKILL after 15 s.
func (p *process) stop() {
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // anything left in the group
}

// waitHTTP polls url until it answers 200, the process exits, or the
// deadline passes.
func waitHTTP(ctx context.Context, url string, limit time.Duration, p *process) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return waitUntil(ctx, limit, p, url, url+" answered", func(ctx context.Context) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitUntil checks ready every 250 ms until it holds, the process p exits
// ("exited before <event>"), or limit passes ("waiting for <what>").
func waitUntil(ctx context.Context, limit time.Duration, p *process, what, event string, ready func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before %s: %v", filepath.Base(p.cmd.Path), event, p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
