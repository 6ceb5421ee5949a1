//go:build z2jh

package z2jh

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/config"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if chartDir != "" {
		os.RemoveAll(filepath.Dir(chartDir))
	}
	os.Exit(code)
}

// The chart's proxy.https modes, and TLS ended at an ingress, each as helm
// --set flags.
var httpsModes = []struct {
	name string
	set  []string
}{
	{"off", nil},
	{"letsencrypt", []string{"proxy.https.enabled=true", "proxy.https.type=letsencrypt",
		"proxy.https.hosts={hub.example.org}", "proxy.https.letsencrypt.contactEmail=admin@example.org"}},
	{"manual", []string{"proxy.https.enabled=true", "proxy.https.type=manual", "proxy.https.hosts={hub.example.org}",
		"proxy.https.manual.key=KEY", "proxy.https.manual.cert=CERT"}},
	{"secret", []string{"proxy.https.enabled=true", "proxy.https.type=secret", "proxy.https.hosts={hub.example.org}",
		"proxy.https.secret.name=hub-tls"}},
	{"offload", []string{"proxy.https.enabled=true", "proxy.https.type=offload", "proxy.https.hosts={hub.example.org}"}},
	{"ingress", []string{"ingress.enabled=true", "ingress.hosts={hub.example.org}",
		"ingress.tls[0].hosts={hub.example.org}", "ingress.tls[0].secretName=hub-tls"}},
}

// sidecarEnviron is the sidecar's environment with its secrets filled in.
func sidecarEnviron(tk container) map[string]string {
	stateKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	environ := map[string]string{}
	for _, e := range tk.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = map[string]string{"state-key": stateKey, "spawn-secret": strings.Repeat("s", 43)}[e.ValueFrom.SecretKeyRef.Key]
			v = cmp.Or(v, "secret-"+e.ValueFrom.SecretKeyRef.Key)
		}
		environ[e.Name] = v
	}
	return environ
}

// sidecarHub is what tokenkeeper's own configuration makes of the sidecar's
// environment: the prefix it serves under and the hub API URL it asks.
func sidecarHub(t *testing.T, tk container) config.Hub {
	t.Helper()
	environ := sidecarEnviron(tk)
	c, _, err := config.Load(nil, func(k string) string { return environ[k] }, io.Discard)
	if err != nil {
		t.Fatalf("tokenkeeper's configuration from the sidecar's environment: %v", err)
	}
	return c.Hub
}

// TestNotebooksAndHookReachTokenkeeper renders the values for each base URL
// and each of the chart's HTTPS modes and checks, in each, where the
// pre-spawn hook and a notebook ask: the hook the sidecar in its own pod;
// a notebook the sidecar on the hub's Service, so that no proxy (and no
// https redirect, which tokenkeeper's clients refuse) is on the way; both
// under the prefix the sidecar serves, which follows the hub's base URL, as
// does the hub API URL the sidecar asks. The network policies must let a
// notebook pod reach the sidecar's port and the proxy too (Keycloak's
// back-channel logout, CI), and nothing wider.
func TestNotebooksAndHookReachTokenkeeper(t *testing.T) {
	for _, base := range []string{"", "/jhub/"} {
		for _, mode := range httpsModes {
			v := variant{baseURL: base, edited: base != "", set: mode.set}
			t.Run(fmt.Sprintf("base=%s+https=%s", cmp.Or(strings.Trim(base, "/"), "root"), mode.name), func(t *testing.T) {
				r := renderVariant(t, v)
				checkReach(t, r, cmp.Or(base, "/"))
			})
		}
	}
}

func checkReach(t *testing.T, r rendered, base string) {
	t.Helper()
	if got, _ := r.Config["JupyterHub"]["base_url"].(string); cmp.Or(got, "/") != base {
		t.Fatalf("the hub's base_url = %q, want %q", got, base)
	}
	tk, _ := sidecar(t, r)
	hub := sidecarHub(t, tk)
	prefix := base + "services/tokenkeeper/"
	if hub.Prefix != prefix {
		t.Errorf("the sidecar serves under %q, but the hub routes %q to it", hub.Prefix, prefix)
	}
	if api, err := url.Parse(hub.APIURL); err != nil || api.Path != base+"hub/api" || api.Port() != "8081" || api.Hostname() != "127.0.0.1" {
		t.Errorf("the sidecar asks the hub's API at %q, want http://127.0.0.1:8081%shub/api (the hub in its pod)", hub.APIURL, base)
	}
	servicePort := strconv.Itoa(tk.Ports[0].ContainerPort)

	// The hook: the sidecar in the hub's own pod, on loopback (no network
	// policy, no proxy).
	hook, err := url.Parse(r.Tokenkeeper.HookURL)
	if err != nil || hook.Scheme != "http" || hook.Hostname() != "127.0.0.1" || hook.Port() != servicePort || hook.Path != hub.Prefix {
		t.Errorf("the pre-spawn hook asks %q, want http://127.0.0.1:%s%s (the sidecar, in the hub's pod)", r.Tokenkeeper.HookURL, servicePort, hub.Prefix)
	}

	// A notebook: a Service of the release, whose port leads to the
	// sidecar's container itself, never to a proxy.
	nb, err := url.Parse(r.Tokenkeeper.NotebookURL)
	if err != nil || nb.Scheme != "http" || nb.Path != hub.Prefix {
		t.Fatalf("notebooks ask %q, want http://<service>:<port>%s", r.Tokenkeeper.NotebookURL, hub.Prefix)
	}
	target, targetPod, port := resolve(t, r, nb)
	if target != tk.Name {
		t.Errorf("notebooks' URL %q leads to container %q, not the sidecar %q: through a proxy, whose https redirect tokenkeeper's clients refuse", nb, target, tk.Name)
	}

	// The network policies: a notebook reaches that port, and so does the
	// proxy (the public route); nothing else is opened.
	notebook := notebookPod(t, r)
	hubP := podOf("hub", r.Objects["Deployment"]["hub"])
	if targetPod != "hub" {
		t.Fatalf("notebooks' URL leads to pod %q, not the hub's", targetPod)
	}
	pols := r.Objects["NetworkPolicy"]
	for _, name := range []string{"hub", "singleuser", "proxy"} {
		if _, ok := pols[name]; !ok {
			t.Fatalf("no NetworkPolicy %s: every pod may reach every other", name)
		}
	}
	proxy := podOf("proxy", r.Objects["Deployment"]["proxy"])
	other := pod{name: "another pod that may reach the hub", labels: map[string]string{"hub.jupyter.org/network-access-hub": "true", "component": "other"}}
	unlabelled := pod{name: "an unlabelled pod", labels: map[string]string{}}
	for _, c := range []struct {
		from, to pod
		port     int
		want     bool
	}{
		{notebook, hubP, port, true},
		{proxy, hubP, port, true},
		// Nothing wider: not from other pods that may reach the hub's API,
		// nor from unlabelled ones.
		{other, hubP, port, false},
		{unlabelled, hubP, port, false},
	} {
		if got, why := allowed(t, pols, c.from, c.to, c.port); got != c.want {
			t.Errorf("%s → %s port %d allowed = %v, want %v (%s)", c.from.name, c.to.name, c.port, got, c.want, why)
		}
	}
	// Nor does a notebook's egress open to other ports of the hub pod, or
	// to other pods on this port, whatever their own policies say.
	for _, to := range []struct {
		pod  pod
		port int
	}{
		{hubP, port + 1},
		{proxy, port},
		{pod{name: "another pod", labels: map[string]string{"component": "other"}}, port},
	} {
		if got, why := direction(t, pols, notebook, to.pod, to.pod, to.port, "Egress"); got {
			t.Errorf("a notebook's egress to %s port %d is open (%s): want only the sidecar's port", to.pod.name, to.port, why)
		}
	}
}

// TestBaseURLInOnePlaceOnlyStopsTheHub sets hub.baseUrl without the lines
// the values mark: the hub's configuration must refuse to load, naming
// what to change, rather than start and fail every spawn.
func TestBaseURLInOnePlaceOnlyStopsTheHub(t *testing.T) {
	_, err := renderChart(t, variant{baseURL: "/jhub/"})
	if err == nil {
		t.Fatal("the hub's configuration loaded with hub.baseUrl /jhub/ and the sidecar's base URL /: every spawn would fail with 404")
	}
	for _, want := range []string{"set its JUPYTERHUB_BASE_URL to '/jhub/'", "set its path to '/jhub/services/tokenkeeper/'"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the hub's configuration failed without saying %q:\n%v", want, err)
		}
	}
}

// pod is a pod as network policies see it.
type pod struct {
	name   string
	labels map[string]string
	ports  map[string]int // its containers' ports by name
}

// podIP is every pod's address: the chart's policies tell pods from the
// rest of the world by private ranges.
var podIP = netip.MustParseAddr("10.1.2.3")

func podOf(name string, d object) pod {
	p := pod{name: name, labels: d.Spec.Template.Metadata.Labels, ports: map[string]int{}}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, cp := range c.Ports {
			p.ports[cp.Name] = cp.ContainerPort
		}
	}
	return p
}

// notebookPod is a user server's pod: the labels the singleuser policy
// selects, and the one KubeSpawner adds to let it reach the hub.
func notebookPod(t *testing.T, r rendered) pod {
	t.Helper()
	sel := r.Objects["NetworkPolicy"]["singleuser"].Spec.PodSelector
	if sel == nil {
		t.Fatal("the singleuser NetworkPolicy selects no pods")
	}
	labels := map[string]string{"hub.jupyter.org/network-access-hub": "true"}
	for k, v := range sel.MatchLabels {
		labels[k] = v
	}
	return pod{name: "a notebook", labels: labels, ports: map[string]int{"notebook-port": 8888}}
}

// resolve follows u's host and port to a Service of the release, then to
// the pod it selects and the container listening on the target port;
// it returns that container, that pod (a Deployment's name) and the
// container's port.
func resolve(t *testing.T, r rendered, u *url.URL) (container, pod string, port int) {
	t.Helper()
	svc, ok := r.Objects["Service"][u.Hostname()]
	if !ok {
		t.Fatalf("%s names no Service of the release", u)
	}
	var selector map[string]string
	if err := json.Unmarshal(svc.Spec.Selector, &selector); err != nil {
		t.Fatalf("Service %s selector: %v", u.Hostname(), err)
	}
	urlPort := cmp.Or(u.Port(), "80")
	i := slices.IndexFunc(svc.Spec.Ports, func(p servicePort) bool { return strconv.Itoa(p.Port) == urlPort })
	if i < 0 {
		t.Fatalf("Service %s has no port %s: %+v", u.Hostname(), urlPort, svc.Spec.Ports)
	}
	targetPort := svc.Spec.Ports[i].TargetPort
	for name, d := range r.Objects["Deployment"] {
		if !matches(selector, d.Spec.Template.Metadata.Labels) {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, cp := range c.Ports {
				if targetPort == cp.Name || targetPort == float64(cp.ContainerPort) {
					return c.Name, name, cp.ContainerPort
				}
			}
		}
	}
	t.Fatalf("Service %s port %s (target %v) leads to no container", u.Hostname(), urlPort, targetPort)
	return "", "", 0
}

// matches reports whether labels carry every label of sel.
func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// allowed reports whether the network policies let from connect to to on
// port, and why: Kubernetes allows a connection when every policy
// isolating from (for egress) or to (for ingress) has a rule admitting it
// in that direction, a pod no policy isolates being open. Peers of other
// namespaces (a namespaceSelector with labels) never match: the release's
// namespace carries none.
func allowed(t *testing.T, pols map[string]object, from, to pod, port int) (bool, string) {
	t.Helper()
	out, whyOut := direction(t, pols, from, to, to, port, "Egress")
	in, whyIn := direction(t, pols, to, from, to, port, "Ingress")
	return out && in, whyOut + "; " + whyIn
}

// direction checks the policies selecting subject for policy type kind;
// other is the other end, dest the pod whose named ports a rule names.
func direction(t *testing.T, pols map[string]object, subject, other, dest pod, port int, kind string) (bool, string) {
	t.Helper()
	isolated := false
	var names []string
	for name, pol := range pols {
		if pol.Spec.PodSelector == nil || !selectorMatches(t, *pol.Spec.PodSelector, subject.labels) {
			continue
		}
		types := pol.Spec.PolicyTypes
		rules := pol.Spec.Ingress
		if kind == "Egress" {
			rules = pol.Spec.Egress
		}
		if !slices.Contains(types, kind) && !(len(types) == 0 && (kind == "Ingress" || len(rules) > 0)) {
			continue
		}
		isolated = true
		names = append(names, name)
		for _, ru := range rules {
			peers := ru.From
			if kind == "Egress" {
				peers = ru.To
			}
			if portMatches(ru.Ports, dest, port) && (len(peers) == 0 || slices.ContainsFunc(peers, func(p peer) bool { return peerMatches(t, p, other) })) {
				return true, fmt.Sprintf("%s: NetworkPolicy %s admits it", kind, name)
			}
		}
	}
	if !isolated {
		return true, kind + ": no NetworkPolicy isolates " + subject.name
	}
	return false, fmt.Sprintf("%s: no rule of NetworkPolicy %v admits it", kind, names)
}

func portMatches(ports []rulePort, dest pod, port int) bool {
	if len(ports) == 0 {
		return true
	}
	return slices.ContainsFunc(ports, func(p rulePort) bool {
		switch v := p.Port.(type) {
		case nil:
			return true
		case float64:
			return int(v) == port || p.EndPort != 0 && int(v) <= port && port <= p.EndPort
		case string:
			n, ok := dest.ports[v]
			return ok && n == port
		}
		return false
	})
}

func peerMatches(t *testing.T, p peer, q pod) bool {
	t.Helper()
	if p.IPBlock != nil {
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			t.Fatalf("ipBlock %q: %v", p.IPBlock.CIDR, err)
		}
		if !cidr.Contains(podIP) {
			return false
		}
		return !slices.ContainsFunc(p.IPBlock.Except, func(e string) bool {
			ex, err := netip.ParsePrefix(e)
			return err == nil && ex.Contains(podIP)
		})
	}
	if p.NamespaceSelector != nil && (len(p.NamespaceSelector.MatchLabels) > 0 || len(p.NamespaceSelector.MatchExpressions) > 0) {
		return false
	}
	if p.PodSelector == nil {
		return p.NamespaceSelector != nil // every pod of every namespace
	}
	return selectorMatches(t, *p.PodSelector, q.labels)
}

func selectorMatches(t *testing.T, s selector, labels map[string]string) bool {
	t.Helper()
	if len(s.MatchExpressions) > 0 {
		t.Fatalf("a pod selector with matchExpressions (%v): this test reads matchLabels only", s.MatchExpressions)
	}
	return matches(s.MatchLabels, labels)
}
