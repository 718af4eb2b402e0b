//go:build cgo

package tpm

import (
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
)

// openSimulator starts the in-process simulator. It blocks while another simulator in this
// process is open.
func openSimulator() (transport.TPMCloser, error) { return simulator.OpenSimulator() }
