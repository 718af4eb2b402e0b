// Package secret keeps credentials (CA passwords, header secrets) out of every print path and
// checks that the files holding secrets and private keys are private to their owner. A Secret
// prints as [redacted] with every fmt verb, in JSON, in slog records and as a field of any
// struct printed with %v, %+v or %#v; Reveal is the one way to read it.
package secret

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// Redacted is what a Secret prints as.
const Redacted = "[redacted]"

// Secret is a credential. The zero value is the empty secret. The value sits behind a pointer
// so that even reflection-based printing of a struct holding a Secret in an unexported field
// shows an address, never the value.
type Secret struct{ v *string }

// New wraps s.
func New(s string) Secret { return Secret{v: &s} }

// Reveal returns the value, for the one place that must send it.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// String implements fmt.Stringer.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return "secret.Secret(" + Redacted + ")" }

// Format implements fmt.Formatter: every verb prints Redacted.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, Redacted)
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }

// MarshalText implements encoding.TextMarshaler (TOML, YAML, map keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// CheckFile fails unless path is a regular file that neither group nor others may read,
// write or execute (mode 0600 or 0400): the rule for every secret and private key file.
func CheckFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s is open to group or others (mode %v): chmod 600", path, fs.FileMode(perm))
	}
	return nil
}

// ReadFile reads a secret from a file that passes CheckFile, without its trailing line break.
// An empty secret is an error; the content never appears in an error.
func ReadFile(path string) (Secret, error) {
	if err := CheckFile(path); err != nil {
		return Secret{}, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Secret{}, err
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return Secret{}, fmt.Errorf("%s is empty", path)
	}
	return New(s), nil
}
