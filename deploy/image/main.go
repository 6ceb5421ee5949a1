// Command image writes tokenkeeper's container image, without a container
// daemon or a base image: one layer holding the static tokenkeeper binary at
// /tokenkeeper and the CA certificates at /etc/ssl/certs/ca-certificates.crt,
// run as a non-root user, with no shell. The output is a tar archive that is
// both an OCI image layout and a `docker load` archive (manifest.json).
//
//	go run ./deploy/image -binary bin/tokenkeeper-static -version v1 -out tokenkeeper.tar
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// User is the numeric user and group the image runs as: not root, and with
// no entry in /etc/passwd needed.
const User = "65532:65532"

// Spec is what goes into the image.
type Spec struct {
	Binary  []byte // the static tokenkeeper binary
	CACerts []byte // PEM bundle for TLS to Keycloak and the hub
	Version string // the image's tag and org.opencontainers.image.version
	Created time.Time
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
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
	out := flag.String("out", "tokenkeeper.tar", "where to write the image archive")
	flag.Parse()
	if err := run(*binary, *certs, *version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary, certs, version, out string) error {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	ca, err := os.ReadFile(certs)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := Write(f, Spec{Binary: bin, CACerts: ca, Version: version, Created: time.Now().UTC()}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Write writes the image archive for s to w.
func Write(w io.Writer, s Spec) error {
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

// imageConfig is the OCI image configuration: a non-root user, the binary as
// entrypoint, no shell, and the layer's uncompressed digest.
func imageConfig(s Spec, diffID [32]byte) map[string]any {
	return map[string]any{
		"created":      s.Created.Format(time.RFC3339),
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"User":         User,
			"Entrypoint":   []string{"/tokenkeeper"},
			"Env":          []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			"ExposedPorts": map[string]any{"10101/tcp": map[string]any{}},
			"Labels": map[string]string{
				"org.opencontainers.image.title":   "tokenkeeper",
				"org.opencontainers.image.version": s.Version,
			},
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
