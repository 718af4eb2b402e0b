package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/devid-station/devid/station/console"
	"github.com/devid-station/devid/station/workflow"
)

// serveConsole starts the operator console's HTTPS listener when one is configured: the API's
// certificate and client CAs, the API's role table.
func (s *Server) serveConsole() error {
	if s.rt.ConsoleListen == "" {
		return nil
	}
	h, err := console.New(console.Config{
		Line: s.api, Events: s.store, Steps: workflow.Steps, Logger: s.log.With("component", "console"),
		Role:        func(c *x509.Certificate) (string, bool) { r, ok := s.roles.Lookup(c); return string(r), ok },
		WallDisplay: s.rt.ConsoleWallDisplay,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.rt.ConsoleListen)
	if err != nil {
		return fmt.Errorf("console listener: %w", err)
	}
	s.consoleLis = lis
	s.consoleSrv = &http.Server{Handler: h, TLSConfig: s.rt.APITLS.Clone(), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Go(func() {
		if err := s.consoleSrv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("console stopped", "addr", lis.Addr().String(), "error", err)
		}
	})
	return nil
}

// ConsoleURL is the operator console's address after Start; empty when the console is off.
func (s *Server) ConsoleURL() string {
	if s.consoleLis == nil {
		return ""
	}
	return "https://" + s.consoleLis.Addr().String() + "/"
}
