package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-station/devid/station/workflow"
)

// TestFieldCheck loads the example with each field check mode and with each mistake.
func TestFieldCheck(t *testing.T) {
	const handshake = `mode = "handshake"` + "\n" + `url = "https://est.customer.example/.well-known/est/cacerts"` + "\n" +
		`trust_anchors = ["dev/tls/station-ca.pem"]`
	for _, tc := range []struct {
		name, to string
		mode     string // the mode loaded, or "" when loading fails
		want     string // in the error
	}{
		{"off", `mode = "off"`, workflow.FieldCheckOff, ""},
		{"omitted", ``, workflow.FieldCheckOff, ""},
		{"reenroll", `mode = "reenroll"`, workflow.FieldCheckReenroll, ""},
		{"handshake", handshake, workflow.FieldCheckHandshake, ""},
		{"unknown mode", `mode = "ping"`, "", `mode "ping"`},
		{"handshake without url", `mode = "handshake"` + "\n" + `trust_anchors = ["dev/tls/station-ca.pem"]`, "", "want an https URL"},
		{"handshake over plain http", strings.Replace(handshake, "https://", "http://", 1), "", "want an https URL"},
		{"handshake without anchors", strings.Split(handshake, "\ntrust_anchors")[0], "", "trust_anchors is required"},
		{"handshake with missing anchors", strings.Replace(handshake, "station-ca.pem", "nope.pem", 1), "", "nope.pem"},
		{"reenroll with a url", `mode = "reenroll"` + "\n" + `url = "https://x.example/"`, "", "for mode \"handshake\" only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir(t)
			path := filepath.Join(dir, "station.toml")
			data, _ := os.ReadFile(path)
			s := string(data)
			if !strings.Contains(s, "[profile.field_check]\nmode = \"off\"") {
				t.Fatal("the example has no [profile.field_check] with mode = \"off\"")
			}
			if tc.name == "omitted" {
				s = strings.Replace(s, "[profile.field_check]\nmode = \"off\"", "", 1)
			} else {
				s = strings.Replace(s, "[profile.field_check]\nmode = \"off\"", "[profile.field_check]\n"+tc.to, 1)
			}
			write(t, path, []byte(s), 0o644)
			rt, err := Load(path)
			if tc.mode == "" {
				if err == nil || !strings.Contains(err.Error(), "field_check") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Load: %v; want a field_check error mentioning %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fc := rt.Profiles["default"].FieldCheck
			if fc.Mode != tc.mode || (tc.mode == workflow.FieldCheckHandshake) != (fc.URL != "" && fc.Roots != nil) {
				t.Errorf("field check %+v; want mode %s", fc, tc.mode)
			}
		})
	}
}
