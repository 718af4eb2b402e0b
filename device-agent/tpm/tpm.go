package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Log field keys used by this package.
const (
	logKeyOp     = "op"
	logKeyHandle = "handle"
	logKeyIndex  = "index"
	logKeyTPM    = "tpm"
)

// TPM is an open TPM 2.0. It is safe for concurrent use: every operation holds a mutex for
// its whole command sequence, so objects loaded by one operation are never seen by another.
type TPM struct {
	mu   sync.Mutex
	tr   transport.TPMCloser
	desc string
	log  *slog.Logger

	nvBufferMax uint32 // TPM_PT_NV_BUFFER_MAX, read once; guarded by mu
}

// Option configures a TPM built by New or Open.
type Option func(*TPM)

// WithLogger makes the TPM log each operation at debug level (and failures to flush at warn
// level) to l. Without it the TPM logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(t *TPM) {
		if l != nil {
			t.log = l
		}
	}
}

// New wraps an open transport; desc names the TPM in logs and in the agent's Hello.
func New(t transport.TPMCloser, desc string, opts ...Option) *TPM {
	tp := &TPM{tr: t, desc: desc, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(tp)
	}
	tp.log = tp.log.With(logKeyTPM, desc)
	return tp
}

// Open opens a TPM by spec:
//
//   - "simulator": the in-process go-tpm simulator (only in builds with cgo; one per process);
//   - "device:/dev/tpmrm0" or a plain path starting with "/dev/": a kernel TPM device;
//   - "swtpm-unix:/path/to/socket": swtpm's data channel on a unix socket;
//   - "swtpm-tcp:127.0.0.1:2321": swtpm's data channel on TCP.
//
// swtpm must run with --flags not-need-init,startup-clear: Open never powers it on.
func Open(spec string) (*TPM, error) { return OpenWithOptions(spec) }

// OpenWithOptions is Open with options (e.g. WithLogger).
func OpenWithOptions(spec string, opts ...Option) (*TPM, error) {
	tr, err := OpenTransport(spec)
	if err != nil {
		return nil, err
	}
	return New(tr, spec, opts...), nil
}

// OpenTransport opens the raw transport of a spec (see Open), for callers that wrap it (a
// latency model, a recorder) before handing it to New.
func OpenTransport(spec string) (transport.TPMCloser, error) {
	var (
		tr  transport.TPMCloser
		err error
	)
	switch {
	case spec == "simulator":
		tr, err = openSimulator()
	case strings.HasPrefix(spec, "device:"):
		tr, err = linuxtpm.Open(strings.TrimPrefix(spec, "device:"))
	case strings.HasPrefix(spec, "/dev/"):
		tr, err = linuxtpm.Open(spec)
	case strings.HasPrefix(spec, "swtpm-unix:"):
		tr, err = dialStream(context.Background(), "unix", strings.TrimPrefix(spec, "swtpm-unix:"))
	case strings.HasPrefix(spec, "swtpm-tcp:"):
		tr, err = dialStream(context.Background(), "tcp", strings.TrimPrefix(spec, "swtpm-tcp:"))
	default:
		return nil, fmt.Errorf("opening TPM %q: %w: unknown spec", spec, ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("opening TPM %q: %w", spec, err)
	}
	return tr, nil
}

// Close closes the transport. The TPM must not be used afterwards.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tr.Close()
}

// Description returns the description given to New (the spec for Open).
func (t *TPM) Description() string { return t.desc }

// ResponseCode extracts the TPM response code from err (0 if err carries none).
func ResponseCode(err error) uint32 {
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return uint32(rc)
	}
	return 0
}

// Lockout reports whether err carries TPM_RC_LOCKOUT: the TPM is in dictionary-attack lockout
// and refuses DA-protected authorizations until it recovers.
func Lockout(err error) bool { return isRC(err, tpm2.TPMRCLockout) }

// isRC reports whether err carries the TPM response code rc (format-1 codes compare without
// their handle, parameter or session number).
func isRC(err error, rc tpm2.TPMRC) bool { return errors.Is(err, rc) }

// flush flushes a transient object or session; failures are only logged, since the caller
// already has its result or a better error.
func (t *TPM) flush(h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tr); err != nil {
		t.log.Warn("flushing TPM context failed", logKeyHandle, fmt.Sprintf("%#x", uint32(h)), "err", err)
	}
}

// hierarchyHandle maps a Hierarchy to its permanent handle.
func hierarchyHandle(h Hierarchy) (tpm2.TPMHandle, error) {
	switch h {
	case Owner:
		return tpm2.TPMRHOwner, nil
	case Platform:
		return tpm2.TPMRHPlatform, nil
	case Endorsement:
		return tpm2.TPMRHEndorsement, nil
	}
	return 0, fmt.Errorf("%w: hierarchy %d", ErrInvalidArgument, int(h))
}

// hierarchyAuth returns an empty-password authorization for a hierarchy.
func hierarchyAuth(h tpm2.TPMHandle) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: h, Auth: tpm2.PasswordAuth(nil)}
}

// isNotFound reports whether err wraps ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
