// Command stationd is the DevID Station server: it provisions units that dial in with the
// device agent and serves the MES/operator API. See deploy/station.example.toml.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/devid-station/devid/station/config"
	"github.com/devid-station/devid/station/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	configPath := flag.String("config", "/etc/devid/station.toml", "station configuration file")
	check := flag.Bool("check", false, "validate the configuration and exit")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	override := flag.String("audit-override", "", "start although the audit chain does not verify; the `reason` is recorded in the chain")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "stationd: -log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	rt, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stationd:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Printf("%s: configuration valid (%d profiles, %d CAs)\n", *configPath, len(rt.Profiles), len(rt.CAs))
		return
	}
	srv, err := server.New(rt, server.Options{Version: version, Logger: log, AuditOverride: *override})
	if err != nil {
		fmt.Fprintln(os.Stderr, "stationd:", err)
		os.Exit(1)
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "stationd:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-srv.Fatal():
		fmt.Fprintln(os.Stderr, "stationd:", err)
		code = 1
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Close(closeCtx); err != nil {
		log.Error("closing", "error", err)
		code = 1
	}
	os.Exit(code)
}
