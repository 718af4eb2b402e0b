// Command devid-verify checks a DevID Station QA export offline: only the bundle (a folder, or
// the one-file archive stationctl export --out FILE.tar writes), the trusted roots and the station's audit public key, no station and no network. It prints PASS
// or FAIL per unit with the reasons and exits 0 only when everything passed (1: a check
// failed, 2: bad usage or unreadable inputs). See reports/export.
//
//	devid-verify -bundle DIR|FILE.tar -roots ROOTS.pem [-roots MORE.pem] [-ek-roots EK-ROOTS.pem] -station-key KEY.pem
//
// With -ek-roots every unit's EK certificate must be in the bundle and chain to them.
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
	var roots, ekRoots files
	fs.Var(&roots, "roots", "PEM file of trusted root certificates (repeatable)")
	fs.Var(&ekRoots, "ek-roots", "PEM file of the trusted roots of the TPMs' EK certificates and the station's configured EK intermediates (repeatable; optional)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bundle == "" || *key == "" || len(roots) == 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: devid-verify -bundle DIR|FILE.tar -roots ROOTS.pem [-roots ...] [-ek-roots EK-ROOTS.pem ...] -station-key KEY.pem")
		return 2
	}
	pool, pub, err := inputs(roots, *key)
	if err != nil {
		fmt.Fprintln(stderr, "devid-verify:", err)
		return 2
	}
	trust := export.Trust{Roots: pool, StationKey: pub}
	if len(ekRoots) > 0 {
		if trust.EKRoots, err = readPool(ekRoots); err != nil {
			fmt.Fprintln(stderr, "devid-verify:", err)
			return 2
		}
	}
	rep := export.VerifyWith(*bundle, trust)
	fmt.Fprint(stdout, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}

// inputs reads the trusted roots and the station key.
func inputs(roots []string, keyPath string) (*x509.CertPool, crypto.PublicKey, error) {
	pool, err := readPool(roots)
	if err != nil {
		return nil, nil, err
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

// readPool reads PEM certificate files into a pool.
func readPool(paths []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, r := range paths {
		data, err := os.ReadFile(r)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("%s: no PEM certificate", r)
		}
	}
	return pool, nil
}
