//go:build !cgo

package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator fails: the simulator needs cgo, and the device agent builds without it.
func openSimulator() (transport.TPMCloser, error) {
	return nil, fmt.Errorf("%w: the TPM simulator needs a build with cgo", ErrInvalidArgument)
}
