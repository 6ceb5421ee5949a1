package config

import (
	"fmt"
	"log/slog"
)

// Secret is a credential (a client secret, a token, a key) that redacts itself
// wherever it would otherwise be printed: fmt verbs, slog, and JSON.
// Reveal returns the value for the one place that must send it.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns a placeholder, never the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns a placeholder so %#v does not print the value.
func (s Secret) GoString() string { return s.String() }

// Format prints the placeholder for every verb, including %x and %q.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue makes slog print the placeholder.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps the value out of JSON and other encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
