//go:build z2jh

package z2jh

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// rendered is what load_hub_config.py prints.
type rendered struct {
	Objects map[string]map[string]object `json:"objects"`
	Secret  map[string]string            `json:"secret"`
	Config  map[string]map[string]any    `json:"config"`
	// Tokenkeeper holds the URLs of the configured pre-spawn hook and
	// whether it sends a spawn secret.
	Tokenkeeper struct {
		HookURL          string `json:"hook_url"`
		NotebookURL      string `json:"notebook_url"`
		SendsSpawnSecret bool   `json:"sends_spawn_secret"`
	} `json:"tokenkeeper"`
}

type object struct {
	Spec struct {
		Template struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec podSpec `json:"spec"`
		} `json:"template"`
		Ports []servicePort `json:"ports"`
		// Selector is a Service's selector (a Deployment's has another shape).
		Selector    json.RawMessage `json:"selector"`
		PodSelector *selector       `json:"podSelector"`
		PolicyTypes []string        `json:"policyTypes"`
		Ingress     []rule          `json:"ingress"`
		Egress      []rule          `json:"egress"`
	} `json:"spec"`
}

type selector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []any             `json:"matchExpressions"`
}

type podSpec struct {
	Containers                   []container    `json:"containers"`
	InitContainers               []container    `json:"initContainers"`
	Volumes                      []volume       `json:"volumes"`
	SecurityContext              map[string]any `json:"securityContext"`
	AutomountServiceAccountToken *bool          `json:"automountServiceAccountToken"`
}

type volume struct {
	Name                  string         `json:"name"`
	EmptyDir              map[string]any `json:"emptyDir"`
	PersistentVolumeClaim *struct {
		ClaimName string `json:"claimName"`
	} `json:"persistentVolumeClaim"`
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	SubPath   string `json:"subPath"`
	ReadOnly  bool   `json:"readOnly"`
}

type container struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Env   []envVar `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	Command         []string       `json:"command"`
	VolumeMounts    []volumeMount  `json:"volumeMounts"`
	SecurityContext map[string]any `json:"securityContext"`
	StartupProbe    *probe         `json:"startupProbe"`
	LivenessProbe   *probe         `json:"livenessProbe"`
	ReadinessProbe  *probe         `json:"readinessProbe"`
}

type probe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"` // a number or a container port's name
	} `json:"httpGet"`
	PeriodSeconds    int `json:"periodSeconds"`
	FailureThreshold int `json:"failureThreshold"`
}

type envVar struct {
	Name      string `json:"name"`
	Value     string `json:"value,omitempty"`
	ValueFrom *struct {
		SecretKeyRef *secretRef `json:"secretKeyRef"`
	} `json:"valueFrom,omitempty"`
}

type secretRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type servicePort struct {
	Name       string `json:"name"`
	Port       int    `json:"port"`
	TargetPort any    `json:"targetPort"`
}

type rule struct {
	Ports []rulePort `json:"ports"`
	From  []peer     `json:"from"`
	To    []peer     `json:"to"`
}

type rulePort struct {
	Port    any `json:"port"` // a number, a port's name, or none (every port)
	EndPort int `json:"endPort"`
}

type peer struct {
	PodSelector       *selector `json:"podSelector"`
	NamespaceSelector *selector `json:"namespaceSelector"`
	IPBlock           *struct {
		CIDR   string   `json:"cidr"`
		Except []string `json:"except"`
	} `json:"ipBlock"`
}

// variant is one way an admin installs the values: deploy/z2jh/values.yaml
// as it is, or with the hub's base URL put into every line marked
// "# hub.baseUrl" (as its head says to), and helm's --set flags.
type variant struct {
	// baseURL is hub.baseUrl, "" for the chart's "/".
	baseURL string
	// edited puts baseURL into the lines marked "# hub.baseUrl"; without
	// it only hub.baseUrl is set.
	edited bool
	set    []string
}

func (v variant) String() string {
	return fmt.Sprintf("base %q (lines edited %v) %v", cmp.Or(v.baseURL, "/"), v.edited, v.set)
}

var (
	renderMu   sync.Mutex
	renderings = map[string]rendered{}
	chartOnce  sync.Once
	chartDir   string
)

// render renders the chart with deploy/z2jh/values.yaml as it is and loads
// the hub configuration, once for all tests.
func render(t *testing.T) rendered {
	t.Helper()
	return renderVariant(t, variant{})
}

// renderVariant renders the chart with the values of v (validating them
// against the chart's schema) and loads the hub configuration, once per
// variant.
func renderVariant(t *testing.T, v variant) rendered {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if r, ok := renderings[v.String()]; ok {
		return r
	}
	out, err := renderChart(t, v)
	if err != nil {
		t.Fatalf("%v: %v", v, err)
	}
	var r rendered
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: load_hub_config.py: %v", v, err)
	}
	renderings[v.String()] = r
	return r
}

// chart returns a copy of the chart, with values.schema.json, made once.
func chart(t *testing.T) string {
	t.Helper()
	chartOnce.Do(func() {
		dir, err := os.MkdirTemp("", "z2jh-chart-")
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dir, "jupyterhub")
		from := cmp.Or(os.Getenv("TK_Z2JH_CHART"), filepath.Join("..", "..", "..", "shared", "z2jh", "jupyterhub"))
		if err := os.CopyFS(to, os.DirFS(from)); err != nil {
			t.Fatalf("copy the chart from %s: %v", from, err)
		}
		// The chart validates values only against values.schema.json, which its
		// release tooling makes from the YAML.
		run(t, python(), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2], 'w'))",
			filepath.Join(to, "values.schema.yaml"), filepath.Join(to, "values.schema.json"))
		chartDir = to
	})
	if chartDir == "" {
		t.Fatal("copying the chart failed (see the first test's failure)")
	}
	return chartDir
}

func python() string {
	return cmp.Or(os.Getenv("TK_PYTHON"), filepath.Join(cacheDir(), "venv-jh5", "bin", "python"))
}

// renderChart renders the chart for v and returns what load_hub_config.py
// prints; an error carries its standard error (the hub's configuration
// failing to load, say).
func renderChart(t *testing.T, v variant) ([]byte, error) {
	t.Helper()
	helm := os.Getenv("TK_HELM")
	if helm == "" {
		t.Fatal("TK_HELM is not set: `make z2jh` builds helm and runs this test")
	}
	values, err := os.ReadFile(filepath.Join("..", "..", "deploy", "z2jh", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if v.edited {
		values = withBaseURL(t, values, v.baseURL)
	}
	dir := t.TempDir()
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"template", "jupyterhub", chart(t), "-f", valuesFile, "--kube-version", "1.33.0"}
	if v.baseURL != "" {
		args = append(args, "--set", "hub.baseUrl="+v.baseURL)
	}
	for _, s := range v.set {
		args = append(args, "--set", s)
	}
	manifests := run(t, helm, args...)
	out := filepath.Join(dir, "rendered.yaml")
	if err := os.WriteFile(out, manifests, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(python(), "load_hub_config.py", out, chart(t), t.TempDir())
	cmd.Stderr = &stderr
	loaded, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("load_hub_config.py: %w\n%s", err, stderr.String())
	}
	return loaded, nil
}

// baseURLMark ends every line of values.yaml that holds the hub's base URL.
const baseURLMark = " # hub.baseUrl"

// withBaseURL puts base into every line of values marked baseURLMark, as
// the values' head tells an admin to, and fails unless every one changed.
func withBaseURL(t *testing.T, values []byte, base string) []byte {
	t.Helper()
	lines := strings.Split(string(values), "\n")
	marked := 0
	for i, line := range lines {
		value, ok := strings.CutSuffix(line, baseURLMark)
		if !ok || strings.HasPrefix(strings.TrimSpace(value), "#") {
			continue
		}
		marked++
		edited := strings.ReplaceAll(value, "/hub/", base+"hub/")
		edited = strings.ReplaceAll(edited, "/services/", base+"services/")
		if rest, ok := strings.CutSuffix(edited, ": /"); ok {
			edited = rest + ": " + base
		}
		if edited == value {
			t.Fatalf("values.yaml line %d is marked%s but holds no base URL to change: %q", i+1, baseURLMark, line)
		}
		lines[i] = edited + baseURLMark
	}
	if marked == 0 {
		t.Fatalf("values.yaml marks no line with%q", baseURLMark)
	}
	return []byte(strings.Join(lines, "\n"))
}

func cacheDir() string {
	if c := os.Getenv("TOKENKEEPER_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "tokenkeeper")
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args[:min(2, len(args))], " "), err, stderr.String())
	}
	return out
}

func sidecar(t *testing.T, r rendered) (container, podSpec) {
	t.Helper()
	pod := r.Objects["Deployment"]["hub"].Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c container) bool { return c.Name == "tokenkeeper" })
	if i < 0 {
		t.Fatalf("the hub pod has no tokenkeeper container: %v", pod.Containers)
	}
	return pod.Containers[i], pod
}

func hubContainer(t *testing.T, pod podSpec) container {
	t.Helper()
	i := slices.IndexFunc(pod.Containers, func(c container) bool { return c.Name == "hub" })
	if i < 0 {
		t.Fatalf("the hub pod has no hub container: %v", pod.Containers)
	}
	return pod.Containers[i]
}

// mounted is a container's mount with the pod's volume it names (nil when
// the pod has none by that name).
type mounted struct {
	volumeMount
	volume *volume
}

func mounts(c container, pod podSpec) []mounted {
	var ms []mounted
	for _, m := range c.VolumeMounts {
		var v *volume
		if i := slices.IndexFunc(pod.Volumes, func(v volume) bool { return v.Name == m.Name }); i >= 0 {
			v = &pod.Volumes[i]
		}
		ms = append(ms, mounted{m, v})
	}
	return ms
}

func env(c container) map[string]envVar {
	m := map[string]envVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestSidecarInTheHubPod(t *testing.T) {
	r := render(t)
	tk, pod := sidecar(t, r)
	if len(tk.Ports) != 1 || tk.Ports[0].ContainerPort != 10101 || tk.Ports[0].Name != "tokenkeeper" {
		t.Errorf("sidecar ports = %+v, want tokenkeeper 10101", tk.Ports)
	}
	e := env(tk)
	token := e["JUPYTERHUB_API_TOKEN"]
	if token.ValueFrom == nil || gocmp.Diff(token.ValueFrom.SecretKeyRef, &secretRef{"hub", "hub.services.tokenkeeper.apiToken"}) != "" {
		t.Errorf("JUPYTERHUB_API_TOKEN = %+v, want the chart's Secret hub, key hub.services.tokenkeeper.apiToken", token)
	}
	for name, want := range map[string]string{
		"JUPYTERHUB_SERVICE_URL":  "http://0.0.0.0:10101",
		"JUPYTERHUB_SERVICE_NAME": "tokenkeeper",
		"JUPYTERHUB_BASE_URL":     "/",
		"TOKENKEEPER_CLIENT_ID":   "jupyterhub",
		"TOKENKEEPER_DATABASE":    "/var/lib/tokenkeeper/tokenkeeper.db",
	} {
		if got := e[name].Value; got != want {
			t.Errorf("sidecar %s = %q, want %q", name, got, want)
		}
	}
	for name, key := range map[string]string{
		"TOKENKEEPER_CLIENT_SECRET": "client-secret", "TOKENKEEPER_STATE_KEY": "state-key",
		"TOKENKEEPER_SPAWN_SECRET":           "spawn-secret",
		"TOKENKEEPER_SERVICE_ACCOUNT_SECRET": "sa-secret", "TOKENKEEPER_ADMIN_CLIENT_SECRET": "admin-client-secret",
	} {
		if v := e[name]; v.Value != "" || v.ValueFrom == nil || gocmp.Diff(v.ValueFrom.SecretKeyRef, &secretRef{"tokenkeeper", key}) != "" {
			t.Errorf("sidecar %s = %+v, want Secret tokenkeeper key %s and no plain value", name, v, key)
		}
	}
	hub := hubContainer(t, pod)
	for name, key := range map[string]string{"OAUTH_CLIENT_SECRET": "client-secret", "TOKENKEEPER_SPAWN_SECRET": "spawn-secret"} {
		if v := env(hub)[name]; v.Value != "" || v.ValueFrom == nil || gocmp.Diff(v.ValueFrom.SecretKeyRef, &secretRef{"tokenkeeper", key}) != "" {
			t.Errorf("hub %s = %+v, want Secret tokenkeeper key %s and no plain value", name, v, key)
		}
	}
	// configure() read the hub's TOKENKEEPER_SPAWN_SECRET and gave it to the hook.
	if !r.Tokenkeeper.SendsSpawnSecret {
		t.Error("the pre-spawn hook sends no spawn secret: configure() did not get the hub's TOKENKEEPER_SPAWN_SECRET")
	}
}

// TestSidecarEnvironmentIsAValidConfiguration runs bin/tokenkeeper
// --check-config with the sidecar's environment, secrets filled in.
func TestSidecarEnvironmentIsAValidConfiguration(t *testing.T) {
	r := render(t)
	tk, _ := sidecar(t, r)
	var environ []string
	for k, v := range sidecarEnviron(tk) {
		environ = append(environ, k+"="+v)
	}
	cmd := exec.Command(filepath.Join("..", "..", "bin", "tokenkeeper"), "--check-config")
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Errorf("tokenkeeper --check-config with the sidecar's environment: %v\n%s", err, out)
	}
}

func TestHubConfigRegistersTheServiceAndRoles(t *testing.T) {
	r := render(t)
	hub := r.Config["JupyterHub"]
	var services []map[string]any
	for _, s := range hub["services"].([]any) {
		if m := s.(map[string]any); m["name"] == "tokenkeeper" {
			services = append(services, m)
		}
	}
	token := r.Secret["hub.services.tokenkeeper.apiToken"]
	if len(token) < 32 {
		t.Fatalf("the chart's Secret holds no API token for tokenkeeper: %q", token)
	}
	want := []map[string]any{{"name": "tokenkeeper", "api_token": token, "url": "http://hub:10101", "display": true,
		"oauth_no_confirm": true, "oauth_client_allowed_scopes": []any{"custom:tokenkeeper:sessions", "custom:tokenkeeper:guard"}}}
	if diff := gocmp.Diff(want, services); diff != "" {
		t.Errorf("tokenkeeper's service entries (-want +got):\n%s", diff)
	}
	roles := map[string][]any{}
	members := map[string]any{}
	for _, ro := range hub["load_roles"].([]any) {
		m := ro.(map[string]any)
		if _, dup := roles[m["name"].(string)]; dup {
			t.Errorf("role %s defined twice: the hub would refuse to start", m["name"])
		}
		roles[m["name"].(string)] = m["scopes"].([]any)
		members[m["name"].(string)] = m["services"]
	}
	access := "access:services!service=tokenkeeper"
	for name, want := range map[string][]any{
		"tokenkeeper-service": {"admin:users", "read:servers"},
		// JupyterHub 5's default server and user roles, extended.
		"server": {"users:activity!user", "access:servers!server", access},
		"user":   {"self", access},
	} {
		if diff := gocmp.Diff(want, roles[name]); diff != "" {
			t.Errorf("role %s scopes (-want +got):\n%s", name, diff)
		}
	}
	if diff := gocmp.Diff([]any{"tokenkeeper"}, members["tokenkeeper-service"]); diff != "" {
		t.Errorf("tokenkeeper-service members (-want +got):\n%s", diff)
	}
	scopes, _ := hub["custom_scopes"].(map[string]any)
	lazy, _ := scopes["lazy"].(map[string]any)
	defined, _ := lazy["update"].(map[string]any)
	for _, s := range []string{"custom:tokenkeeper:tokens", "custom:tokenkeeper:service-account"} {
		if _, ok := defined[s]; !ok {
			t.Errorf("custom scope %s not defined: %v", s, scopes)
		}
	}
}

func TestHubConfigInstallsTheHooks(t *testing.T) {
	r := render(t)
	for section, keys := range map[string][]string{
		"Spawner":        {"pre_spawn_hook"},
		"OAuthenticator": {"refresh_user_hook", "enable_auth_state"},
		"Authenticator":  {"post_auth_hook"},
	} {
		for _, k := range keys {
			got := r.Config[section][k]
			if k == "enable_auth_state" {
				if got != true {
					t.Errorf("%s.%s = %v, want true", section, k, got)
				}
				continue
			}
			if s, _ := got.(string); !strings.HasPrefix(s, "<callable make_") {
				t.Errorf("%s.%s = %v, want tokenkeeper's hook", section, k, got)
			}
		}
	}
	oauth := r.Config["GenericOAuthenticator"]
	if oauth["client_secret"] != "<tokenkeeper/client-secret>-----" {
		t.Errorf("GenericOAuthenticator.client_secret = %v, want the hub's OAUTH_CLIENT_SECRET from Secret tokenkeeper", oauth["client_secret"])
	}
	if oauth["token_url"] != "https://keycloak.example.org/realms/jupyter/protocol/openid-connect/token" {
		t.Errorf("GenericOAuthenticator.token_url = %v", oauth["token_url"])
	}
	if r.Config["JupyterHub"]["default_url"] != "/hub/home" {
		t.Errorf("JupyterHub.default_url = %v, want /hub/home", r.Config["JupyterHub"]["default_url"])
	}
}

const (
	hubUID           = 1000 // the chart's hub.containerSecurityContext
	hubDir           = "/srv/jupyterhub"
	stateClaim       = "tokenkeeper-state" // README: the claim the admin creates
	tokenDir         = "/var/run/secrets/kubernetes.io/serviceaccount"
	hubVolumeName    = "pvc"        // the chart's name for the hub's volume (hub.db.type sqlite-pvc)
	hubVolumeClaimed = "hub-db-dir" // and its claim
)

// TestSidecarIsIsolatedFromTheHub checks what keeps code running as the
// sidecar from the hub's database and the hub's Kubernetes token: its own
// uid and gid, hardened; its own volume and never the hub's; no pod-wide
// group that both share; no service-account token.
func TestSidecarIsIsolatedFromTheHub(t *testing.T) {
	r := render(t)
	tk, pod := sidecar(t, r)
	sc := tk.SecurityContext

	uid, uidOK := sc["runAsUser"].(float64)
	gid, gidOK := sc["runAsGroup"].(float64)
	if !uidOK || uid == hubUID || uid == 0 {
		t.Errorf("sidecar runAsUser = %v, want set, neither the hub's %d nor root", sc["runAsUser"], hubUID)
	}
	if !gidOK || gid == hubUID || gid == 0 {
		t.Errorf("sidecar runAsGroup = %v, want set, neither the hub's %d nor root", sc["runAsGroup"], hubUID)
	}
	for k, want := range map[string]any{"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "privileged": nil} {
		if sc[k] != want {
			t.Errorf("sidecar securityContext %s = %v, want %v", k, sc[k], want)
		}
	}
	caps, _ := sc["capabilities"].(map[string]any)
	if drop, _ := caps["drop"].([]any); !slices.Contains(drop, any("ALL")) || caps["add"] != nil {
		t.Errorf("sidecar capabilities = %v, want drop [ALL] and none added", sc["capabilities"])
	}

	// fsGroup and supplementalGroups are pod-wide: every container, the
	// sidecar too, joins the group, and fsGroup makes every volume, the
	// hub's too, group-writable by it.
	for _, k := range []string{"fsGroup", "supplementalGroups"} {
		if v, ok := pod.SecurityContext[k]; ok {
			t.Errorf("hub pod securityContext %s = %v: the sidecar shares that group with the hub and its volume", k, v)
		}
	}
	if pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken {
		t.Errorf("the hub pod has automountServiceAccountToken false: KubeSpawner needs the hub's token")
	}

	var state *mounted
	tokenMasked := false
	for _, m := range mounts(tk, pod) {
		if m.volume == nil {
			t.Errorf("sidecar mounts %s at %s, which the pod does not have", m.Name, m.MountPath)
			continue
		}
		if m.Name == hubVolumeName || m.volume.PersistentVolumeClaim != nil && m.volume.PersistentVolumeClaim.ClaimName == hubVolumeClaimed || m.MountPath == hubDir {
			t.Errorf("sidecar mounts the hub's volume (%s at %s)", m.Name, m.MountPath)
		}
		if m.volume.PersistentVolumeClaim != nil && m.volume.PersistentVolumeClaim.ClaimName == stateClaim && !m.ReadOnly {
			state = &m
		}
		if path.Clean(m.MountPath) == tokenDir {
			tokenMasked = m.volume.EmptyDir != nil && m.SubPath == ""
		}
	}
	if !tokenMasked {
		t.Errorf("sidecar has no emptyDir at %s: it gets the hub's Kubernetes token (mounts %+v)", tokenDir, tk.VolumeMounts)
	}
	if state == nil {
		t.Fatalf("sidecar does not mount the claim %s writable: %+v", stateClaim, tk.VolumeMounts)
	}
	if db := path.Clean(env(tk)["TOKENKEEPER_DATABASE"].Value); !strings.HasPrefix(db, path.Clean(state.MountPath)+"/") {
		t.Errorf("TOKENKEEPER_DATABASE = %q, not on the sidecar's volume at %s", db, state.MountPath)
	}
	if slices.ContainsFunc(pod.Volumes, func(v volume) bool {
		return v.Name != state.Name && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == stateClaim
	}) {
		t.Errorf("the claim %s is in the pod twice: %+v", stateClaim, pod.Volumes)
	}

	hub := hubContainer(t, pod)
	hubMounts := mounts(hub, pod)
	if !slices.ContainsFunc(hubMounts, func(m mounted) bool { return m.Name == hubVolumeName && m.MountPath == hubDir }) {
		t.Errorf("the hub does not mount its volume at %s: %+v", hubDir, hub.VolumeMounts)
	}
	for _, m := range hubMounts {
		if m.Name == state.Name {
			t.Errorf("the hub mounts the sidecar's volume at %s", m.MountPath)
		}
		if path.Clean(m.MountPath) == tokenDir {
			t.Errorf("the hub's token directory is covered by %s: KubeSpawner needs the token", m.Name)
		}
	}
	for _, c := range pod.Containers {
		if c.Name != "hub" && c.Name != tk.Name && slices.ContainsFunc(c.VolumeMounts, func(m volumeMount) bool { return m.Name == state.Name }) {
			t.Errorf("container %s mounts the sidecar's volume", c.Name)
		}
	}

	// Without fsGroup, an init container gives each volume to its user.
	owners := fmt.Sprintf("chown %d:%d %s", int(uid), int(gid), path.Clean(state.MountPath))
	i := slices.IndexFunc(pod.InitContainers, func(c container) bool {
		return strings.Contains(strings.Join(c.Command, " "), owners)
	})
	if i < 0 {
		t.Fatalf("no init container runs %q: %+v", owners, pod.InitContainers)
	}
	ic := pod.InitContainers[i]
	if ic.Image != hub.Image {
		t.Errorf("init container %s image = %q, want the hub's %q (its shell and coreutils)", ic.Name, ic.Image, hub.Image)
	}
	script := strings.Join(ic.Command, " ")
	for _, want := range []string{fmt.Sprintf("chown %d:%d %s", hubUID, hubUID, hubDir), "chmod 0700 " + hubDir, "chmod 0700 " + path.Clean(state.MountPath)} {
		if !strings.Contains(script, want) {
			t.Errorf("init container %s does not run %q: %q", ic.Name, want, script)
		}
	}
	initMounts := map[string]string{}
	masked := false
	for _, m := range mounts(ic, pod) {
		initMounts[m.Name] = m.MountPath
		masked = masked || path.Clean(m.MountPath) == tokenDir && m.volume != nil && m.volume.EmptyDir != nil
	}
	if initMounts[hubVolumeName] != hubDir || initMounts[state.Name] != state.MountPath {
		t.Errorf("init container %s mounts %v, want %s at %s and %s at %s", ic.Name, initMounts, hubVolumeName, hubDir, state.Name, state.MountPath)
	}
	if !masked {
		t.Errorf("init container %s has no emptyDir at %s", ic.Name, tokenDir)
	}
	icCaps, _ := ic.SecurityContext["capabilities"].(map[string]any)
	drop, _ := icCaps["drop"].([]any)
	add, _ := icCaps["add"].([]any)
	slices.SortFunc(add, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	if !slices.Contains(drop, any("ALL")) || gocmp.Diff([]any{"CHOWN", "FOWNER"}, add) != "" || ic.SecurityContext["allowPrivilegeEscalation"] != false {
		t.Errorf("init container %s securityContext = %v, want drop ALL, add only CHOWN and FOWNER, no privilege escalation", ic.Name, ic.SecurityContext)
	}
}

// TestSidecarProbesAndRestarts checks what lets Kubernetes run the sidecar:
// it exits on a bad setting instead of holding its address as under
// JupyterHub, so that Kubernetes shows it failing and restarts it; its
// startup and liveness probes ask the service's root on its port, never
// health, whose 503 during an incident (Keycloak down, the logout guard
// tripped) must restart nothing; it has no readiness probe, which would
// take the hub pod out of its Service; and a writable /tmp under its
// read-only root, for SQLite's temporary files.
func TestSidecarProbesAndRestarts(t *testing.T) {
	r := render(t)
	tk, pod := sidecar(t, r)
	e := env(tk)

	if v := e["TOKENKEEPER_EXIT_ON_ERROR"]; v.Value != "true" || v.ValueFrom != nil {
		t.Errorf("sidecar TOKENKEEPER_EXIT_ON_ERROR = %+v, want \"true\": under the hub's variables it would hold its address on a bad setting, and Kubernetes would never show it failing", v)
	}

	root := sidecarHub(t, tk).Prefix
	serviceURL, err := url.Parse(e["JUPYTERHUB_SERVICE_URL"].Value)
	if root == "" || err != nil || serviceURL.Port() == "" {
		t.Fatalf("sidecar prefix = %q, JUPYTERHUB_SERVICE_URL = %q: want a prefix and a URL with a port",
			root, e["JUPYTERHUB_SERVICE_URL"].Value)
	}
	// onServicePort reports whether a probe's port is the one tokenkeeper
	// listens on, by number or by the container port's name.
	onServicePort := func(port any) bool {
		switch p := port.(type) {
		case float64:
			return fmt.Sprint(int(p)) == serviceURL.Port()
		case string:
			return slices.ContainsFunc(tk.Ports, func(cp struct {
				Name          string `json:"name"`
				ContainerPort int    `json:"containerPort"`
			}) bool {
				return cp.Name == p && fmt.Sprint(cp.ContainerPort) == serviceURL.Port()
			})
		}
		return false
	}
	for name, p := range map[string]*probe{"startupProbe": tk.StartupProbe, "livenessProbe": tk.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("sidecar %s = %+v, want an httpGet on the service's root %s", name, p, root)
			continue
		}
		if p.HTTPGet.Path != root || strings.Contains(strings.ToLower(p.HTTPGet.Path), "health") {
			t.Errorf("sidecar %s path = %q, want the service's root %q (never health: its 503 during an incident must restart nothing)", name, p.HTTPGet.Path, root)
		}
		if !onServicePort(p.HTTPGet.Port) {
			t.Errorf("sidecar %s port = %v, want the sidecar's port %s (JUPYTERHUB_SERVICE_URL)", name, p.HTTPGet.Port, serviceURL.Port())
		}
	}
	if p := tk.StartupProbe; p != nil {
		period := cmp.Or(p.PeriodSeconds, 10) // Kubernetes' defaults
		failures := cmp.Or(p.FailureThreshold, 3)
		if budget := period * failures; budget < 120 {
			t.Errorf("sidecar startupProbe allows %d s (period %d s × %d failures), want at least 120 s before the liveness probe counts", budget, period, failures)
		}
	}
	if tk.ReadinessProbe != nil {
		t.Errorf("sidecar readinessProbe = %+v: an unready sidecar takes the whole hub pod out of its Service", tk.ReadinessProbe)
	}

	i := slices.IndexFunc(mounts(tk, pod), func(m mounted) bool { return path.Clean(m.MountPath) == "/tmp" })
	if i < 0 {
		t.Fatalf("sidecar mounts nothing at /tmp: SQLite has no writable temporary directory under the read-only root (mounts %+v)", tk.VolumeMounts)
	}
	tmp := mounts(tk, pod)[i]
	if tmp.volume == nil || tmp.volume.EmptyDir == nil || tmp.ReadOnly || tmp.SubPath != "" {
		t.Errorf("sidecar /tmp = %+v (volume %+v), want a writable emptyDir of its own", tmp.volumeMount, tmp.volume)
	}
	for _, c := range append(slices.Clone(pod.Containers), pod.InitContainers...) {
		if c.Name != tk.Name && slices.ContainsFunc(c.VolumeMounts, func(m volumeMount) bool { return m.Name == tmp.Name }) {
			t.Errorf("container %s mounts the sidecar's /tmp volume %s", c.Name, tmp.Name)
		}
	}
	for _, name := range []string{"TMPDIR", "SQLITE_TMPDIR"} {
		if v := e[name].Value; v != "" && path.Clean(v) != "/tmp" {
			t.Errorf("sidecar %s = %q, want /tmp, the emptyDir (or unset)", name, v)
		}
	}
}
