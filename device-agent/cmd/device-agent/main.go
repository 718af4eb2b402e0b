// Command device-agent runs on a unit under test: it dials the DevID station over TLS (station
// CA pinned), introduces the unit and executes the station's TPM and file commands until the
// station sends its verdict.
//
// Exit codes: 0 the unit passed (or SIGTERM/SIGINT stopped the agent: the log says "stopped by
// signal"), 1 the agent could not start, 2 bad flags, 3 the unit failed.
//
// It builds with CGO_ENABLED=0; the in-process TPM simulator (-tpm simulator) is available only
// in builds with cgo.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/devid-station/devid/device-agent/agent"
	"github.com/devid-station/devid/device-agent/tpm"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// exitUsage is the exit code for bad flags (as the flag package's own errors).
const exitUsage = 2

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// run parses args, runs the agent logging to stderr, and returns the exit code.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("device-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		station    = fs.String("station", "", "station address host:port (required)")
		stationCA  = fs.String("station-ca", "", "PEM file with the pinned station CA (required)")
		serverName = fs.String("server-name", "", "name expected in the station certificate (default: host of -station)")
		serial     = fs.String("serial", "", "unit serial (literal)")
		serialFile = fs.String("serial-file", "", "file holding the unit serial, e.g. /sys/class/dmi/id/product_serial")
		slot       = fs.String("slot", "", "fixture slot name")
		tpmSpec    = fs.String("tpm", "device:/dev/tpmrm0", "TPM: device:/dev/tpmrm0, swtpm-unix:/path, swtpm-tcp:host:port, simulator (cgo builds)")
		bootID     = fs.String("boot-id-file", agent.DefaultBootIDFile, "file holding the boot id")
		keyFile    = fs.String("ldevid-key-file", "", "unit path below a -root where the agent keeps the LDevID key it creates as a TSS2 PRIVATE KEY PEM (0600) for tpm2-pkcs11 (usually "+agent.DefaultLDevIDKeyFile+"; empty: none)")
		keepalive  = fs.Duration("keepalive", 0, "ping the station after this much silence (0: off; the station must allow it)")
		logLevel   = fs.String("log-level", "info", "log level: debug, info, warn, error")
		sysroot    = fs.String("sysroot", "", "bench option: an existing folder `DIR` that stands for the unit's file system: every unit path P, -root included, is taken as DIR/P (missing roots are created), nothing outside DIR is touched (symlinks leading off it are refused), and without -root the whole of DIR is writable (root /); the roots announced to the station stay unit paths")
		roots      stringList
	)
	fs.Var(&roots, "root", "unit directory below which files may be written and read (repeatable; announced to the station, which refuses a unit whose roots miss a file its profile writes); with -sysroot it is taken below DIR")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "device-agent: bad -log-level %q\n", *logLevel)
		return exitUsage
	}
	if fs.NArg() > 0 || *station == "" || *stationCA == "" || (*serial == "") == (*serialFile == "") {
		fmt.Fprintln(stderr, "device-agent: need -station, -station-ca and exactly one of -serial, -serial-file")
		fs.Usage()
		return exitUsage
	}
	if *sysroot != "" {
		abs, err := filepath.Abs(*sysroot)
		if err != nil {
			fmt.Fprintf(stderr, "device-agent: bad -sysroot %q: %v\n", *sysroot, err)
			return exitUsage
		}
		*sysroot = abs
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	t, err := tpm.OpenWithOptions(*tpmSpec, tpm.WithLogger(log))
	if err != nil {
		log.Error("opening TPM failed", "err", err)
		return agent.ExitStartup
	}
	defer func() {
		if err := t.Close(); err != nil {
			log.Warn("closing TPM failed", "err", err)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	v, err := agent.Run(ctx, agent.Config{
		StationAddr:       *station,
		StationCAFile:     *stationCA,
		ServerName:        *serverName,
		Serial:            agent.SerialSource{File: *serialFile, Value: *serial},
		FixtureSlot:       *slot,
		BootIDFile:        *bootID,
		FileRoots:         roots,
		Sysroot:           *sysroot,
		LDevIDKeyFile:     *keyFile,
		KeepaliveInterval: *keepalive,
		Logger:            log,
	}, t)
	switch {
	case err != nil && ctx.Err() != nil:
		log.Info("stopped by signal")
		return agent.ExitStopped
	case err != nil:
		log.Error("device agent failed", "err", err)
		return agent.ExitStartup
	}
	log.Info("exiting", "passed", v.Passed, "exit_code", v.ExitCode())
	return v.ExitCode()
}
