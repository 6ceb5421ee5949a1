package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// configurationDoc is the reference of every setting.
const configurationDoc = "../docs/configuration.md"

// readmeMaxLines bounds README.md: it is the admin's page, and reference
// material belongs in docs/.
const readmeMaxLines = 450

// documented is a setting as docs/configuration.md must show it: its JSON
// key and its variable, where it has them, and its default.
type documented struct {
	key, env string
	def      reflect.Value // the default; invalid for settings without a JSON field
}

// settingsToDocument lists every setting: the entries of settings (the
// table --help prints) and every JSON key of Config, so that a field added
// to Config without a settings entry is still caught.
func settingsToDocument() []documented {
	d := Default()
	fields := jsonFields(&d)
	var out []documented
	seen := map[string]bool{}
	for _, s := range settings {
		doc := documented{key: s.key, env: s.env}
		if p, ok := fields[s.key]; ok {
			doc.def = reflect.ValueOf(p).Elem()
		}
		out = append(out, doc)
		seen[s.key] = true
	}
	for key, p := range fields {
		if !seen[key] {
			out = append(out, documented{key: key, def: reflect.ValueOf(p).Elem()})
		}
	}
	return out
}

// settingRow returns the cells of the table row of docs/configuration.md
// that names s's key and variable (each in backquotes), or nil.
func settingRow(doc string, s documented) []string {
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 7 {
			continue
		}
		key, env := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])
		if s.key != "" && key != "`"+s.key+"`" {
			continue
		}
		if s.env != "" && env != "`"+s.env+"`" {
			continue
		}
		if s.key == "" && s.env == "" {
			continue
		}
		return cells
	}
	return nil
}

// TestConfigurationDocNamesEverySetting keeps docs/configuration.md
// complete: every setting has a row naming its JSON key and its variable,
// with the default the code has.
func TestConfigurationDocNamesEverySetting(t *testing.T) {
	b, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, s := range settingsToDocument() {
		cells := settingRow(doc, s)
		if cells == nil {
			t.Errorf("%s has no row for setting %q with variable %q", configurationDoc, s.key, s.env)
			continue
		}
		if !s.def.IsValid() {
			continue
		}
		want := describeDefault(s.def)
		if want == "" {
			continue // no default: the doc says (none), (off) or (required)
		}
		got := strings.Trim(strings.TrimSpace(cells[4]), "`")
		if s.def.Type() == reflect.TypeFor[Duration]() {
			d, err := time.ParseDuration(got)
			if err != nil || Duration(d) != s.def.Interface().(Duration) {
				t.Errorf("%s: default of %s is %q, want %s", configurationDoc, s.key, got, want)
			}
			continue
		}
		if got != want {
			t.Errorf("%s: default of %s is %q, want %q", configurationDoc, s.key, got, want)
		}
	}
}

// TestSettingsToDocumentCoversConfig checks that the list the doc test
// walks holds every JSON key of Config and every variable --help shows.
func TestSettingsToDocumentCoversConfig(t *testing.T) {
	listed := map[string]bool{}
	for _, s := range settingsToDocument() {
		listed[s.key], listed[s.env] = true, true
	}
	var c Config
	for key := range jsonFields(&c) {
		if !listed[key] {
			t.Errorf("JSON key %q is not checked against %s", key, configurationDoc)
		}
	}
	for _, s := range settings {
		if s.env != "" && !listed[s.env] {
			t.Errorf("variable %s is not checked against %s", s.env, configurationDoc)
		}
	}
}

// TestREADMEIsShort keeps README.md the admin's page.
func TestREADMEIsShort(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(string(b), "\n")
	if len(b) > 0 && b[len(b)-1] != '\n' {
		lines++
	}
	if lines > readmeMaxLines {
		t.Errorf("README.md has %d lines, want at most %d: move reference material to docs/", lines, readmeMaxLines)
	}
}
