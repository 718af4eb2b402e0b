// Command devid-verify checks a DevID Station QA export offline: only the bundle (a folder, or
// the one-file archive stationctl export --out FILE.tar writes), the trusted roots and the station's audit public key, no station and no network. It prints PASS
// or FAIL per unit with the reasons and exits 0 only when everything passed (1: a check
// failed, 2: bad usage or unreadable inputs). See reports/export.
//
//	devid-verify -bundle DIR|FILE.tar -roots ROOTS.pem [-roots MORE.pem] -station-key KEY.pem
package main

import (
	"crypto"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/devid-station/devid/reports/export"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// run verifies the bundle the arguments name and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devid-verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bundle := fs.String("bundle", "", "the export: a folder or a .tar archive")
	key := fs.String("station-key", "", "the station's audit public key (PEM PUBLIC KEY), obtained out of band")
	var roots files
	fs.Var(&roots, "roots", "PEM file of trusted root certificates (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bundle == "" || *key == "" || len(roots) == 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: devid-verify -bundle DIR|FILE.tar -roots ROOTS.pem [-roots ...] -station-key KEY.pem")
		return 2
	}
	pool, pub, err := inputs(roots, *key)
	if err != nil {
		fmt.Fprintln(stderr, "devid-verify:", err)
		return 2
	}
	rep := export.Verify(*bundle, pool, pub)
	fmt.Fprint(stdout, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}

// inputs reads the trusted roots and the station key.
func inputs(roots []string, keyPath string) (*x509.CertPool, crypto.PublicKey, error) {
	pool := x509.NewCertPool()
	for _, r := range roots {
		data, err := os.ReadFile(r)
		if err != nil {
			return nil, nil, err
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, nil, fmt.Errorf("%s: no PEM certificate", r)
		}
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	pub, err := export.ParseKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return pool, pub, nil
}
