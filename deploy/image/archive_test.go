package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// image is an archive read back: its files by name and what they describe.
type image struct {
	files    map[string][]byte
	manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Cmd        []string          `json:"Cmd"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	platform *platform              // the platform index.json gives the image
	layer    map[string]*tar.Header // the layer's entries
	data     map[string][]byte      // the layer's regular files
}

// readImage reads an archive Write made, checking every digest and size on the way.
func readImage(t *testing.T, r io.Reader) image {
	t.Helper()
	img := image{files: map[string][]byte{}, layer: map[string]*tar.Header{}, data: map[string][]byte{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		img.files[h.Name] = b
	}
	if got := string(img.files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	decode(t, img.files["index.json"], &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(index.Manifests))
	}
	img.platform = index.Manifests[0].Platform
	decode(t, blobOf(t, img, index.Manifests[0]), &img.manifest)
	decode(t, blobOf(t, img, img.manifest.Config), &img.config)
	if len(img.manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(img.manifest.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobOf(t, img, img.manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if diff := cmp.Diff([]string{digest(raw)}, img.config.RootFS.DiffIDs); diff != "" {
		t.Errorf("diff_ids (-uncompressed layer +config):\n%s", diff)
	}
	lr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		img.layer[h.Name] = h
		img.data[h.Name], _ = io.ReadAll(lr)
	}
	return img
}

func blobOf(t *testing.T, img image, d descriptor) []byte {
	t.Helper()
	b, ok := img.files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s", d.Digest)
	}
	if digest(b) != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: digest %s size %d, want size %d", d.Digest, digest(b), len(b), d.Size)
	}
	return b
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func TestImageRunsTheBinaryAsNonRootWithoutAShell(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, Spec{Binary: []byte("\x7fELF fake"), CACerts: []byte("-----BEGIN CERTIFICATE-----\n"),
		Version: "v1.2.3", Revision: "0123456789abcdef0123456789abcdef01234567", OS: "linux", Architecture: "arm64",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	img := readImage(t, &buf)
	if img.config.Config.User != "65532:65532" {
		t.Errorf("User = %q, want a non-root uid:gid", img.config.Config.User)
	}
	if diff := cmp.Diff([]string{"/tokenkeeper"}, img.config.Config.Entrypoint); diff != "" || img.config.Config.Cmd != nil {
		t.Errorf("Entrypoint %v Cmd %v, want the binary alone", img.config.Config.Entrypoint, img.config.Config.Cmd)
	}
	if img.config.OS != "linux" || img.config.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want the Spec's linux/arm64", img.config.OS, img.config.Architecture)
	}
	if diff := cmp.Diff(&platform{Architecture: "arm64", OS: "linux"}, img.platform); diff != "" {
		t.Errorf("index.json's platform (-want +got):\n%s", diff)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":       "tokenkeeper",
		"org.opencontainers.image.description": Description,
		"org.opencontainers.image.version":     "v1.2.3",
		"org.opencontainers.image.revision":    "0123456789abcdef0123456789abcdef01234567",
		"org.opencontainers.image.source":      "https://github.com/tokenkeeper/tokenkeeper",
		"org.opencontainers.image.licenses":    "BSD-3-Clause",
	}
	if diff := cmp.Diff(wantLabels, img.config.Config.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	var names []string
	for name := range img.layer {
		names = append(names, name)
	}
	want := []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "tokenkeeper"}
	if diff := cmp.Diff(want, names, cmpSorted); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
	if h := img.layer["tokenkeeper"]; h.Mode != 0o755 || h.Uid != 0 || string(img.data["tokenkeeper"]) != "\x7fELF fake" {
		t.Errorf("tokenkeeper in the layer: mode %o uid %d", h.Mode, h.Uid)
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	decode(t, img.files["manifest.json"], &docker)
	if len(docker) != 1 || docker[0].RepoTags[0] != "tokenkeeper:v1.2.3" || img.files[docker[0].Config] == nil ||
		img.files[docker[0].Layers[0]] == nil {
		t.Errorf("manifest.json (docker load) = %+v", docker)
	}
}

var cmpSorted = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestImageWithoutARevisionHasNoRevisionLabel(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, Spec{Version: "dev", OS: "linux", Architecture: "amd64"}); err != nil {
		t.Fatal(err)
	}
	img := readImage(t, &buf)
	if rev, ok := img.config.Config.Labels["org.opencontainers.image.revision"]; ok {
		t.Errorf("revision label %q, want none", rev)
	}
	if err := Write(&bytes.Buffer{}, Spec{Version: "dev"}); err == nil {
		t.Error("Write without a platform succeeded")
	}
}

// fakeELF is the header of a 64-bit Linux executable for machine, and
// nothing after it.
func fakeELF(machine elf.Machine) []byte {
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT), Ehsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, h)
	return buf.Bytes()
}

func TestRunWritesTheArchive(t *testing.T) {
	dir := t.TempDir()
	bin, ca, out := dir+"/tk", dir+"/ca.crt", dir+"/image.tar"
	if err := os.WriteFile(bin, fakeELF(elf.EM_AARCH64), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, []byte("certs"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Version: "v9", Revision: "abc", OS: "linux", Architecture: "arm64"}
	if err := run(bin, ca, spec, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := readImage(t, f)
	if string(img.data["tokenkeeper"]) != string(fakeELF(elf.EM_AARCH64)) || string(img.data["etc/ssl/certs/ca-certificates.crt"]) != "certs" {
		t.Errorf("layer files: %q", img.data)
	}
	if img.config.Architecture != "arm64" || img.config.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("architecture %q, labels %v; want the Spec's", img.config.Architecture, img.config.Config.Labels)
	}
	if err := run(dir+"/missing", ca, spec, out); err == nil || !strings.Contains(err.Error(), "binary") {
		t.Errorf("run with a missing binary: %v", err)
	}
}

func TestABinaryBuiltForThisPlatformIsAccepted(t *testing.T) {
	if _, ok := elfMachines[runtime.GOARCH]; runtime.GOOS != "linux" || !ok {
		t.Skipf("the image is not written for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPlatform(bin, runtime.GOOS, runtime.GOARCH); err != nil {
		t.Errorf("this test's own binary for %s/%s: %v", runtime.GOOS, runtime.GOARCH, err)
	}
}

func TestRunRefusesABinaryOfAnotherPlatform(t *testing.T) {
	dir := t.TempDir()
	ca, out := dir+"/ca.crt", dir+"/image.tar"
	if err := os.WriteFile(ca, []byte("certs"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		binary   []byte
		os, arch string
		want     string
	}{
		{"an amd64 binary as arm64", fakeELF(elf.EM_X86_64), "linux", "arm64", "EM_X86_64"},
		{"an unknown architecture", fakeELF(elf.EM_X86_64), "linux", "mips", `"mips"`},
		{"not Linux", fakeELF(elf.EM_X86_64), "darwin", "amd64", `"darwin"`},
		{"not an executable", []byte("binary"), "linux", "amd64", "not a Linux executable"},
	} {
		bin := dir + "/tk"
		if err := os.WriteFile(bin, c.binary, 0o755); err != nil {
			t.Fatal(err)
		}
		err := run(bin, ca, Spec{Version: "v9", OS: c.os, Architecture: c.arch}, out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}
