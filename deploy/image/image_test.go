//go:build image

package main

import (
	"bytes"
	"debug/elf"
	"encoding/base64"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestBuiltImageRunsCheckConfig unpacks the image `make image` wrote
// (TK_IMAGE), checks that its configuration names its binary's platform and
// carries the OCI labels, and runs its binary with --check-config: chrooted
// into the unpacked layer as the image's user when the test runs as root, so
// that nothing from the host (libc, a shell) is there to help.
func TestBuiltImageRunsCheckConfig(t *testing.T) {
	path := os.Getenv("TK_IMAGE")
	if path == "" {
		t.Fatal("TK_IMAGE is not set: `make image-test` builds the image and runs this test")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := readImage(t, f)
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil { // the image's root, entered as the image's user
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(img.layer)) // directories before their files
	for _, name := range names {
		h := img.layer[name]
		target := filepath.Join(root, name)
		if h.Typeflag == '5' {
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(target, img.data[name], os.FileMode(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	assertStatic(t, filepath.Join(root, "tokenkeeper"))
	if err := checkPlatform(img.data["tokenkeeper"], img.config.OS, img.config.Architecture); err != nil {
		t.Errorf("the image's platform %s/%s is not its binary's: %v", img.config.OS, img.config.Architecture, err)
	}
	if img.platform == nil || *img.platform != (platform{Architecture: img.config.Architecture, OS: img.config.OS}) {
		t.Errorf("index.json's platform %+v, want the configuration's %s/%s", img.platform, img.config.OS, img.config.Architecture)
	}
	labels := img.config.Config.Labels
	if rev := labels["org.opencontainers.image.revision"]; !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(rev) {
		t.Errorf("revision label %q, want the git commit `make image` built", rev)
	}
	if labels["org.opencontainers.image.version"] == "" || labels["org.opencontainers.image.licenses"] != License ||
		labels["org.opencontainers.image.source"] != Source {
		t.Errorf("labels %v, want the version, license and source", labels)
	}
	for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox"} {
		if _, ok := img.layer[sh]; ok {
			t.Errorf("the image has a shell: %s", sh)
		}
	}

	good := []string{
		"JUPYTERHUB_API_TOKEN=hub-token", "TOKENKEEPER_ISSUER_URL=https://keycloak.example.org/realms/jupyter",
		"TOKENKEEPER_CLIENT_SECRET=client-secret",
		"TOKENKEEPER_STATE_KEY=" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)),
	}
	out, code := runInImage(t, root, good, "--check-config")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("--check-config with a good configuration: exit %d\n%s", code, out)
	}
	out, code = runInImage(t, root, nil, "--check-config")
	if code != 1 || !strings.Contains(out, "TOKENKEEPER_STATE_KEY") || !strings.Contains(out, "issuer_url") {
		t.Errorf("--check-config with no configuration: exit %d, want 1 listing the problems\n%s", code, out)
	}
}

// runInImage runs /tokenkeeper with args and env in the unpacked image at
// root: chrooted, as the image's non-root user, when the test runs as root.
func runInImage(t *testing.T, root string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "tokenkeeper"), args...)
	cmd.Env = env
	if os.Geteuid() == 0 {
		cmd.Path = "/tokenkeeper"
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	} else {
		t.Log("not root: running the unpacked binary without a chroot")
	}
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("run the image's binary: %v", err)
	}
	return string(out), 0
}

// assertStatic checks that the binary needs no dynamic loader or shared libraries.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("the image's tokenkeeper is not an ELF binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the image's tokenkeeper is dynamically linked (it has an ELF interpreter)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the image's tokenkeeper needs shared libraries: %v", libs)
	}
}
