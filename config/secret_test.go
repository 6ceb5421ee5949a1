package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secretValue = "s3cr3t-value-0123456789abcdef"

// leaks reports whether out shows the secret in any common encoding.
func leaks(out string) bool {
	for _, enc := range []string{
		secretValue,
		fmt.Sprintf("%x", secretValue),
		fmt.Sprintf("%X", secretValue),
		"s3cr3t",
	} {
		if strings.Contains(out, enc) {
			return true
		}
	}
	return false
}

func TestSecretReveal(t *testing.T) {
	s := Secret(secretValue)
	if got := s.Reveal(); got != secretValue {
		t.Errorf("Reveal() = %q, want %q", got, secretValue)
	}
}

func TestSecretFmt(t *testing.T) {
	s := Secret(secretValue)
	type holder struct {
		Name  string
		Token Secret
	}
	tests := []struct {
		name   string
		format string
		arg    any
	}{
		{name: "v", format: "%v", arg: s},
		{name: "+v", format: "%+v", arg: s},
		{name: "s", format: "%s", arg: s},
		{name: "q", format: "%q", arg: s},
		{name: "x", format: "%x", arg: s},
		{name: "X", format: "%X", arg: s},
		{name: "#v", format: "%#v", arg: s},
		{name: "d", format: "%d", arg: s},
		{name: "width", format: "%40s", arg: s},
		{name: "pointer v", format: "%v", arg: &s},
		{name: "struct v", format: "%v", arg: holder{"alice", s}},
		{name: "struct +v", format: "%+v", arg: holder{"alice", s}},
		{name: "struct #v", format: "%#v", arg: holder{"alice", s}},
		{name: "pointer to struct +v", format: "%+v", arg: &holder{"alice", s}},
		{name: "slice", format: "%v", arg: []Secret{s, s}},
		{name: "slice x", format: "%x", arg: []Secret{s}},
		{name: "map", format: "%v", arg: map[string]Secret{"k": s}},
		{name: "config", format: "%+v", arg: Config{ClientSecret: s, Hub: Hub{APIToken: s}}},
		{name: "config #v", format: "%#v", arg: Config{ClientSecret: s, Hub: Hub{APIToken: s}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fmt.Sprintf(tt.format, tt.arg)
			if leaks(got) {
				t.Errorf("Sprintf(%q, secret) = %q, leaks the value", tt.format, got)
			}
			if !strings.Contains(got, "[redacted]") {
				t.Errorf("Sprintf(%q, secret) = %q, want it to contain [redacted]", tt.format, got)
			}
		})
	}
}

func TestSecretPrintFunctions(t *testing.T) {
	s := Secret(secretValue)
	for name, got := range map[string]string{
		"Sprint":     fmt.Sprint(s),
		"Sprintln":   fmt.Sprintln("token", s),
		"String":     s.String(),
		"GoString":   s.GoString(),
		"Errorf":     fmt.Errorf("bad token %v: %w", s, errors.New("x")).Error(),
		"Sprint ptr": fmt.Sprint(&s),
	} {
		if leaks(got) || !strings.Contains(got, "[redacted]") {
			t.Errorf("%s(secret) = %q, want [redacted] and no value", name, got)
		}
	}
}

func TestSecretEmptyPrintsNothing(t *testing.T) {
	var s Secret
	for _, format := range []string{"%v", "%s", "%q", "%#v"} {
		if got := fmt.Sprintf(format, s); got != "" {
			t.Errorf("Sprintf(%q, Secret(\"\")) = %q, want \"\"", format, got)
		}
	}
}

func TestSecretSlog(t *testing.T) {
	s := Secret(secretValue)
	type holder struct {
		Token Secret `json:"token"`
	}
	tests := []struct {
		name string
		log  func(*slog.Logger)
	}{
		{name: "attribute", log: func(l *slog.Logger) { l.Info("refreshed", "secret", s) }},
		{name: "slog.Any", log: func(l *slog.Logger) { l.Info("refreshed", slog.Any("secret", s)) }},
		{name: "group", log: func(l *slog.Logger) { l.Info("refreshed", slog.Group("g", "secret", s)) }},
		{name: "With", log: func(l *slog.Logger) { l.With("secret", s).Info("refreshed") }},
		{name: "struct", log: func(l *slog.Logger) { l.Info("refreshed", "holder", holder{s}) }},
		{name: "config", log: func(l *slog.Logger) {
			l.Info("loaded", "config", Config{ClientSecret: s, Hub: Hub{APIToken: s}})
		}},
		{name: "message", log: func(l *slog.Logger) { l.Info(fmt.Sprint("token ", s)) }},
	}
	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	}
	for _, tt := range tests {
		for hname, newHandler := range handlers {
			t.Run(tt.name+"/"+hname, func(t *testing.T) {
				var buf bytes.Buffer
				tt.log(slog.New(newHandler(&buf)))
				if leaks(buf.String()) {
					t.Errorf("slog %s output %q leaks the secret", hname, buf.String())
				}
				if tt.name != "config" && !strings.Contains(buf.String(), "[redacted]") {
					t.Errorf("slog %s output %q, want [redacted]", hname, buf.String())
				}
			})
		}
	}
}

func TestSecretSlogJSONValue(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", Secret(secretValue))
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("slog JSON output %q: %v", buf.String(), err)
	}
	if got := rec["secret"]; got != "[redacted]" {
		t.Errorf("slog JSON secret attribute = %v, want %q", got, "[redacted]")
	}
}

func TestSecretJSON(t *testing.T) {
	s := Secret(secretValue)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{name: "bare", v: s, want: `"[redacted]"`},
		{name: "pointer", v: &s, want: `"[redacted]"`},
		{name: "field", v: struct {
			T Secret `json:"t"`
		}{s}, want: `{"t":"[redacted]"}`},
		{name: "map value", v: map[string]Secret{"k": s}, want: `{"k":"[redacted]"}`},
		{name: "slice", v: []Secret{s}, want: `["[redacted]"]`},
		{name: "empty", v: Secret(""), want: `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatalf("json.Marshal(%s) error: %v", tt.name, err)
			}
			if string(b) != tt.want {
				t.Errorf("json.Marshal(%s) = %s, want %s", tt.name, b, tt.want)
			}
		})
	}
}

func TestSecretJSONOfConfig(t *testing.T) {
	c := Default()
	c.ClientSecret = Secret(secretValue)
	c.Hub.APIToken = Secret(secretValue)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json.Marshal(Config) error: %v", err)
	}
	if leaks(string(b)) {
		t.Errorf("json.Marshal(Config) = %s, leaks the secret", b)
	}
}
