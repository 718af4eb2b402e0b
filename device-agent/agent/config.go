package agent

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults applied by Run to zero Config fields.
const (
	// DefaultLDevIDKeyFile is the usual LDevIDKeyFile: where deploy/firstboot's
	// devid-pkcs11-link looks for the key.
	DefaultLDevIDKeyFile = "/etc/devid/ldevid.tss2.pem"
	// DefaultBootIDFile is where Linux publishes the boot id.
	DefaultBootIDFile = "/proc/sys/kernel/random/boot_id"
	// DefaultMaxMessageBytes bounds every message in both directions (the contract's 1 MiB).
	DefaultMaxMessageBytes = 1 << 20
	// DefaultBackoffInitial is the first reconnect delay bound.
	DefaultBackoffInitial = 250 * time.Millisecond
	// DefaultBackoffMax caps the reconnect delay.
	DefaultBackoffMax = 30 * time.Second
	// DefaultBackoffMultiplier grows the delay bound after each failed attempt.
	DefaultBackoffMultiplier = 2.0
	// DefaultBackoffJitter randomizes the whole delay ("full jitter").
	DefaultBackoffJitter = 1.0

	// minMessageBytes is the smallest accepted MaxMessageBytes: below it even a Hello with long
	// strings or an Info result could not be sent.
	minMessageBytes = 4 << 10
)

// Process exit codes of the device agent. A main exits with Verdict.ExitCode after Run returns
// a verdict, with ExitStopped when Run returned because its context was cancelled by a signal,
// and with ExitStartup when Run (or what precedes it) failed.
const (
	// ExitPassed: the station's verdict was "passed".
	ExitPassed = 0
	// ExitStartup: the agent could not start (bad flags, TPM or station CA unreadable, bad
	// configuration).
	ExitStartup = 1
	// ExitFailed: the station's verdict was "failed".
	ExitFailed = 3
	// ExitStopped: SIGTERM or SIGINT stopped the agent before a verdict. It is 0 so that a
	// service manager treats an ordinary stop as clean; the log line "stopped by signal" tells
	// it apart from a pass.
	ExitStopped = 0
)

// Config configures Run. The zero value is not usable: StationAddr and a station CA are
// required. Run does not modify it.
type Config struct {
	// StationAddr is the station's host:port.
	StationAddr string
	// StationCAFile is a PEM file with the station CA certificate(s) to pin; used when StationCA
	// is nil.
	StationCAFile string
	// StationCA is the pinned pool the station's certificate must chain to. System roots are
	// never used.
	StationCA *x509.CertPool
	// ServerName is the name expected in the station's certificate; empty means the host part
	// of StationAddr.
	ServerName string
	// Serial says where the unit's hardware serial comes from.
	Serial SerialSource
	// FixtureSlot names the fixture position, reported in Hello.
	FixtureSlot string
	// BootIDFile holds the boot id; empty means DefaultBootIDFile. An unreadable file yields an
	// empty boot id and a warning.
	BootIDFile string
	// FileRoots are the absolute directories WriteFile and ReadFile may touch (and below),
	// as unit paths: the station's names, before any Sysroot mapping. Hello announces them,
	// cleaned. Without roots (and without Sysroot) every file command fails with
	// PATH_NOT_ALLOWED, and the station refuses the unit up front.
	FileRoots []string
	// Sysroot, when set, is an existing absolute directory every unit path maps into, for
	// running an agent on a bench machine: a root R and a path P of a file command stand for
	// Sysroot/R and Sysroot/P, and the roots are checked after that mapping. Without
	// FileRoots the root is "/", that is the whole of Sysroot. Run creates missing roots
	// below Sysroot. Nothing outside Sysroot is written or read: a symlink below it that
	// leads outside it is refused. Empty means the real root.
	Sysroot string
	// LDevIDKeyFile, when set, is a unit path below FileRoots where the agent keeps the
	// LDevID key it creates as a TSS2 PRIVATE KEY PEM (mode 0600): the key's public area and
	// its private area wrapped by the SRK, which only this TPM can load. The key stays
	// persistent at its handle too; the file lets software that loads keys from files reach
	// it, such as tpm2_ptool link for a tpm2-pkcs11 token (deploy/firstboot). For an LDevID
	// key that already existed, the file must hold that key (the private area exists only
	// when the key is created); otherwise CreateKey fails and the unit needs a rework.
	LDevIDKeyFile string
	// Backoff paces reconnects.
	Backoff Backoff
	// MaxMessageBytes bounds every message sent or received; 0 means DefaultMaxMessageBytes.
	MaxMessageBytes int
	// KeepaliveInterval, when positive, makes the agent ping the station after that much
	// silence and drop the session when no answer comes within the same interval, so a dead
	// network is detected. The station must permit pings this frequent
	// (keepalive.EnforcementPolicy.MinTime); 0 disables pings.
	KeepaliveInterval time.Duration
	// Logger receives the agent's logs; nil means no logging.
	Logger *slog.Logger
}

// Backoff is a capped exponential backoff with jitter: before reconnect attempt n (counting
// from 0 after the last session that received a command) the agent waits
// d = min(Max, Initial*Multiplier^n), of which the fraction Jitter is random: the wait is
// uniform in [d*(1-Jitter), d]. Zero fields take the defaults (250 ms, 30 s, 2, 1 = full
// jitter). Jitter cannot be disabled: it keeps a line of units from reconnecting in lockstep
// after a station restart.
type Backoff struct {
	// Initial is the first delay bound.
	Initial time.Duration
	// Max caps the delay bound.
	Max time.Duration
	// Multiplier grows the bound after each failed attempt; at least 1.
	Multiplier float64
	// Jitter is the random fraction of each delay, in (0, 1].
	Jitter float64
}

// SerialSource says where the unit's hardware serial comes from: the trimmed contents of File
// (e.g. /sys/class/dmi/id/product_serial) when File is set, otherwise Value (a flag).
type SerialSource struct {
	// File is read at start; surrounding white space and NULs are trimmed.
	File string
	// Value is a literal serial, used when File is empty.
	Value string
}

// Read returns the serial and its source description for Hello ("file:<path>" or "flag").
// An empty serial is an error.
func (s SerialSource) Read() (serial, source string, err error) {
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", "", fmt.Errorf("reading serial: %w", err)
		}
		serial = strings.Trim(string(b), " \t\r\n\x00")
		source = "file:" + s.File
	} else {
		serial, source = strings.TrimSpace(s.Value), "flag"
	}
	if serial == "" {
		return "", "", fmt.Errorf("reading serial: empty serial from %s", source)
	}
	return serial, source, nil
}

// withDefaults returns b with zero fields replaced by defaults, or an error for invalid values.
func (b Backoff) withDefaults() (Backoff, error) {
	if b.Initial == 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max == 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Multiplier == 0 {
		b.Multiplier = DefaultBackoffMultiplier
	}
	if b.Jitter == 0 {
		b.Jitter = DefaultBackoffJitter
	}
	switch {
	case b.Initial < 0 || b.Max < b.Initial:
		return b, fmt.Errorf("backoff: need 0 < initial (%v) <= max (%v)", b.Initial, b.Max)
	case b.Multiplier < 1:
		return b, fmt.Errorf("backoff: multiplier %v below 1", b.Multiplier)
	case b.Jitter < 0 || b.Jitter > 1:
		return b, fmt.Errorf("backoff: jitter %v outside (0, 1]", b.Jitter)
	}
	return b, nil
}

// delay returns the wait before attempt n; rnd returns a uniform number in [0, 1).
func (b Backoff) delay(n int, rnd func() float64) time.Duration {
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	d = min(d, float64(b.Max))
	return time.Duration(d * (1 - b.Jitter*rnd()))
}

// settings is a validated Config.
type settings struct {
	cfg      Config
	pool     *x509.CertPool
	backoff  Backoff
	maxBytes int
	log      *slog.Logger
	roots    []string // FileRoots as directories of this machine (below sysroot)
	unit     []string // FileRoots as unit paths, cleaned, valid UTF-8: what Hello announces
	sysroot  string
}

// validate checks cfg and fills in defaults.
func (cfg Config) validate() (*settings, error) {
	s := &settings{cfg: cfg, log: cfg.Logger, maxBytes: cfg.MaxMessageBytes}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.StationAddr == "" {
		return nil, fmt.Errorf("config: station address missing")
	}
	s.pool = cfg.StationCA
	if s.pool == nil {
		if cfg.StationCAFile == "" {
			return nil, fmt.Errorf("config: station CA missing")
		}
		pem, err := os.ReadFile(cfg.StationCAFile)
		if err != nil {
			return nil, fmt.Errorf("config: reading station CA: %w", err)
		}
		s.pool = x509.NewCertPool()
		if !s.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: no PEM certificate in station CA file %s", cfg.StationCAFile)
		}
	}
	if s.cfg.BootIDFile == "" {
		s.cfg.BootIDFile = DefaultBootIDFile
	}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxMessageBytes
	}
	if s.maxBytes < minMessageBytes {
		return nil, fmt.Errorf("config: max message bytes %d below %d", s.maxBytes, minMessageBytes)
	}
	if cfg.KeepaliveInterval < 0 {
		return nil, fmt.Errorf("config: negative keepalive interval")
	}
	var err error
	if s.backoff, err = cfg.Backoff.withDefaults(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	unitRoots := cfg.FileRoots
	if cfg.Sysroot != "" {
		if !filepath.IsAbs(cfg.Sysroot) {
			return nil, fmt.Errorf("config: sysroot %q is not absolute", cfg.Sysroot)
		}
		fi, err := os.Stat(cfg.Sysroot)
		if err != nil {
			return nil, fmt.Errorf("config: sysroot: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("config: sysroot %q is not a directory", cfg.Sysroot)
		}
		s.sysroot = filepath.Clean(cfg.Sysroot)
		if len(unitRoots) == 0 {
			unitRoots = []string{"/"}
		}
	}
	if f := cfg.LDevIDKeyFile; f != "" && (!filepath.IsAbs(f) || filepath.Clean(f) != f) {
		return nil, fmt.Errorf("config: LDevID key file %q is not a clean absolute unit path", f)
	}
	for _, r := range unitRoots {
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("config: file root %q is not absolute", r)
		}
		r = filepath.Clean(r)
		s.unit = append(s.unit, validUTF8(r))
		s.roots = append(s.roots, filepath.Join(s.sysroot, r))
	}
	return s, nil
}
