package agent

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b, err := Backoff{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if b != (Backoff{Initial: 250 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: 1}) {
		t.Fatalf("defaults = %+v", b)
	}
	top := func() float64 { return 0 }      // no reduction: the bound itself
	bottom := func() float64 { return 0.5 } // half of the bound with full jitter
	tests := []struct {
		name string
		b    Backoff
		n    int
		rnd  func() float64
		want time.Duration
	}{
		{"first", b, 0, top, 250 * time.Millisecond},
		{"third", b, 2, top, time.Second},
		{"capped", b, 10, top, 30 * time.Second},
		{"far beyond the cap", b, 10000, top, 30 * time.Second},
		{"full jitter halves", b, 2, bottom, 500 * time.Millisecond},
		{"partial jitter", Backoff{Initial: time.Second, Max: time.Second, Multiplier: 2, Jitter: 0.2}, 3, bottom, 900 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.delay(tc.n, tc.rnd); got != tc.want {
				t.Errorf("delay(%d) = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
	for _, bad := range []Backoff{
		{Initial: time.Minute, Max: time.Second},
		{Multiplier: 0.5},
		{Jitter: 1.5},
		{Jitter: -0.1},
		{Initial: -time.Second},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{StationAddr: "s:1", StationCA: pool, FileRoots: []string{"/etc/devid/"}}, ""},
		{"no address", Config{StationCA: pool}, "station address"},
		{"no CA", Config{StationAddr: "s:1"}, "station CA missing"},
		{"CA file missing", Config{StationAddr: "s:1", StationCAFile: filepath.Join(dir, "nope")}, "reading station CA"},
		{"CA file without PEM", Config{StationAddr: "s:1", StationCAFile: caFile}, "no PEM certificate"},
		{"relative root", Config{StationAddr: "s:1", StationCA: pool, FileRoots: []string{"etc"}}, "not absolute"},
		{"relative key file", Config{StationAddr: "s:1", StationCA: pool, LDevIDKeyFile: "etc/devid/ldevid.tss2.pem"}, "LDevID key file"},
		{"unclean key file", Config{StationAddr: "s:1", StationCA: pool, LDevIDKeyFile: "/etc/devid/../ldevid.tss2.pem"}, "LDevID key file"},
		{"tiny message bound", Config{StationAddr: "s:1", StationCA: pool, MaxMessageBytes: 100}, "max message bytes"},
		{"negative keepalive", Config{StationAddr: "s:1", StationCA: pool, KeepaliveInterval: -time.Second}, "keepalive"},
		{"bad backoff", Config{StationAddr: "s:1", StationCA: pool, Backoff: Backoff{Multiplier: 0.1}}, "multiplier"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.cfg.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("validate() error = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.maxBytes != DefaultMaxMessageBytes || s.cfg.BootIDFile != DefaultBootIDFile || s.pool != pool ||
				len(s.roots) != 1 || s.roots[0] != "/etc/devid" {
				t.Errorf("settings = %+v", s)
			}
		})
	}
}

func TestSerialSource(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "serial")
	blank := filepath.Join(dir, "blank")
	if err := os.WriteFile(good, []byte(" PF3X9K2\x00\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blank, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		src        SerialSource
		wantSerial string
		wantSource string
		wantErr    bool
	}{
		{"file trimmed", SerialSource{File: good}, "PF3X9K2", "file:" + good, false},
		{"file wins over value", SerialSource{File: good, Value: "X"}, "PF3X9K2", "file:" + good, false},
		{"flag", SerialSource{Value: "SN-1"}, "SN-1", "flag", false},
		{"missing file", SerialSource{File: filepath.Join(dir, "nope")}, "", "", true},
		{"blank file", SerialSource{File: blank}, "", "", true},
		{"nothing", SerialSource{}, "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			serial, source, err := tc.src.Read()
			if (err != nil) != tc.wantErr || serial != tc.wantSerial || source != tc.wantSource {
				t.Fatalf("Read() = %q, %q, %v; want %q, %q, error %v", serial, source, err, tc.wantSerial, tc.wantSource, tc.wantErr)
			}
		})
	}
}

func TestRunStartupErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"invalid config", Config{}, "station address"},
		{"unreadable serial", Config{StationAddr: "127.0.0.1:1", StationCA: x509.NewCertPool(),
			Serial: SerialSource{File: filepath.Join(t.TempDir(), "none")}}, "reading serial"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTPM{}
			_, err := Run(t.Context(), tc.cfg, f)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run error = %v, want one mentioning %q", err, tc.wantErr)
			}
			if len(f.calls) != 0 {
				t.Errorf("TPM used before start-up succeeded: %q", f.calls)
			}
		})
	}
}
