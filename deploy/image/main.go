// Command image writes tokenkeeper's container image, without a container
// daemon or a base image: one layer holding the static tokenkeeper binary at
// /tokenkeeper and the CA certificates at /etc/ssl/certs/ca-certificates.crt,
// run as a non-root user, with no shell. The output is a tar archive that is
// both an OCI image layout and a `docker load` archive (manifest.json).
//
// The image's platform is the binary's: -os and -arch (by default the
// platform the command runs on; `make image` passes `go env GOOS` and
// `go env GOARCH`, those the binary was built for), and a binary whose ELF
// machine is not -arch's is refused. The image's OCI labels name the
// version, the git commit (-revision), the source repository and the
// license.
//
//	go run ./deploy/image -binary bin/tokenkeeper-static -version v1 -revision "$(git rev-parse HEAD)" -out tokenkeeper.tar
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// User is the numeric user and group the image runs as: not root, and with
// no entry in /etc/passwd needed.
const User = "65532:65532"

// The image's fixed OCI labels: where its source is, under which license,
// and what it is.
const (
	Source      = "https://github.com/tokenkeeper/tokenkeeper"
	License     = "BSD-3-Clause"
	Title       = "tokenkeeper"
	Description = "Fresh Keycloak tokens for JupyterHub users, without the user doing anything"
)

// elfMachines are the ELF machine types of the architectures (GOARCH names)
// the image may be written for.
var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"386":     elf.EM_386,
	"riscv64": elf.EM_RISCV,
	"s390x":   elf.EM_S390,
}

// Spec is what goes into the image.
type Spec struct {
	Binary       []byte // the static tokenkeeper binary
	CACerts      []byte // PEM bundle for TLS to Keycloak and the hub
	Version      string // the image's tag and org.opencontainers.image.version
	Revision     string // the git commit built, org.opencontainers.image.revision; none when empty
	OS           string // the platform Binary was built for (GOOS), "linux"
	Architecture string // the architecture Binary was built for (GOARCH)
	Created      time.Time
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"` // in index.json, the image's platform
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	data []byte
	desc descriptor
}

func newBlob(mediaType string, data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{data, descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}}
}

func (b blob) path() string { return "blobs/sha256/" + b.desc.Digest[len("sha256:"):] }

func main() {
	binary := flag.String("binary", "", "the static tokenkeeper binary")
	certs := flag.String("ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA certificates")
	version := flag.String("version", "dev", "the image's version and tag")
	revision := flag.String("revision", "", "the git commit the binary was built from")
	goos := flag.String("os", runtime.GOOS, "the operating system the binary was built for (GOOS)")
	arch := flag.String("arch", runtime.GOARCH, "the architecture the binary was built for (GOARCH)")
	out := flag.String("out", "tokenkeeper.tar", "where to write the image archive")
	flag.Parse()
	spec := Spec{Version: *version, Revision: *revision, OS: *goos, Architecture: *arch}
	if err := run(*binary, *certs, spec, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// run writes the image of spec's version, revision and platform to out,
// with the binary and CA certificates read from their files.
func run(binary, certs string, spec Spec, out string) error {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	if err := checkPlatform(bin, spec.OS, spec.Architecture); err != nil {
		return fmt.Errorf("binary %s: %w", binary, err)
	}
	ca, err := os.ReadFile(certs)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	spec.Binary, spec.CACerts, spec.Created = bin, ca, time.Now().UTC()
	if err := Write(f, spec); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkPlatform refuses a binary that was not built for goos and arch: the
// image is a Linux one, and its configuration must name the architecture
// the binary runs on.
func checkPlatform(bin []byte, goos, arch string) error {
	if goos != "linux" {
		return fmt.Errorf("built for %q: the image is a Linux image", goos)
	}
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("architecture %q is not one of %s", arch, strings.Join(slices.Sorted(maps.Keys(elfMachines)), ", "))
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not a Linux executable: %w", err)
	}
	if f.Machine != want {
		return fmt.Errorf("built for ELF machine %v, not for %s (%v)", f.Machine, arch, want)
	}
	return nil
}

// Write writes the image archive for s to w. Its configuration names
// s.OS and s.Architecture, which Write takes as given.
func Write(w io.Writer, s Spec) error {
	if s.OS == "" || s.Architecture == "" {
		return fmt.Errorf("the image's platform is not set (os %q, architecture %q)", s.OS, s.Architecture)
	}
	layerTar, err := layer(s)
	if err != nil {
		return err
	}
	diffID := sha256.Sum256(layerTar)
	gz, err := gzipped(layerTar)
	if err != nil {
		return err
	}
	layerBlob := newBlob("application/vnd.oci.image.layer.v1.tar+gzip", gz)
	configBlob := newBlob("application/vnd.oci.image.config.v1+json", mustJSON(imageConfig(s, diffID)))
	manifestBlob := newBlob("application/vnd.oci.image.manifest.v1+json", mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configBlob.desc,
		"layers":        []descriptor{layerBlob.desc},
	}))
	ref := manifestBlob.desc
	ref.Annotations = map[string]string{"org.opencontainers.image.ref.name": s.Version}
	ref.Platform = &platform{Architecture: s.Architecture, OS: s.OS}
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", mustJSON(map[string]string{"imageLayoutVersion": "1.0.0"})},
		{"index.json", mustJSON(map[string]any{
			"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []descriptor{ref},
		})},
		{"manifest.json", mustJSON([]map[string]any{{
			"Config": configBlob.path(), "RepoTags": []string{"tokenkeeper:" + s.Version}, "Layers": []string{layerBlob.path()},
		}})},
	}
	for _, b := range []blob{layerBlob, configBlob, manifestBlob} {
		files = append(files, struct {
			name string
			data []byte
		}{b.path(), b.data})
	}
	tw := tar.NewWriter(w)
	for _, f := range files {
		if err := writeFile(tw, f.name, f.data, 0o644, s.Created); err != nil {
			return err
		}
	}
	return tw.Close()
}

// imageConfig is the OCI image configuration: the binary's platform, a
// non-root user, the binary as entrypoint, no shell, the OCI labels, and the
// layer's uncompressed digest.
func imageConfig(s Spec, diffID [32]byte) map[string]any {
	labels := map[string]string{
		"org.opencontainers.image.title":       Title,
		"org.opencontainers.image.description": Description,
		"org.opencontainers.image.version":     s.Version,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.licenses":    License,
	}
	if s.Revision != "" {
		labels["org.opencontainers.image.revision"] = s.Revision
	}
	return map[string]any{
		"created":      s.Created.Format(time.RFC3339),
		"architecture": s.Architecture,
		"os":           s.OS,
		"config": map[string]any{
			"User":         User,
			"Entrypoint":   []string{"/tokenkeeper"},
			"Env":          []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			"ExposedPorts": map[string]any{"10101/tcp": map[string]any{}},
			"Labels":       labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
		"history": []map[string]string{{"created": s.Created.Format(time.RFC3339), "created_by": "deploy/image"}},
	}
}

// layer is the image's only layer, uncompressed.
func layer(s Spec) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: s.Created}); err != nil {
			return nil, err
		}
	}
	if err := writeFile(tw, "etc/ssl/certs/ca-certificates.crt", s.CACerts, 0o644, s.Created); err != nil {
		return nil, err
	}
	if err := writeFile(tw, "tokenkeeper", s.Binary, 0o755, s.Created); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64, mtime time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func gzipped(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps and slices of plain values are marshalled
	}
	return b
}
