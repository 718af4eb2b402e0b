package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devid-station/devid/station/store"
	"github.com/devid-station/devid/station/workflow"
)

// Sentinel errors of this package; makeErr maps them to gRPC codes.
var (
	// ErrInvalidRequest reports a request field that is missing or malformed.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUnitNotEnded reports a rework of a unit that has not ended (done, failed or aborted).
	ErrUnitNotEnded = errors.New("unit has not ended")
	// ErrUnitInSession reports a change refused while a session drives the unit.
	ErrUnitInSession = errors.New("unit is in a session")
	// ErrShuttingDown ends following event streams when the server shuts down.
	ErrShuttingDown = errors.New("station API shutting down")
	// ErrUnavailable reports a method whose backing component was not configured (e.g.
	// AbortUnit without a workflow runner).
	ErrUnavailable = errors.New("not available at this station")
	// ErrNoReport reports a report file the station has not written (yet).
	ErrNoReport = errors.New("report not written")
)

// codeTable maps sentinel errors to gRPC codes, first match wins.
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidRequest, codes.InvalidArgument},
	{store.ErrInvalidArgument, codes.InvalidArgument},
	{store.ErrNotFound, codes.NotFound},
	{ErrNoReport, codes.NotFound},
	{store.ErrWorkOrderExists, codes.AlreadyExists},
	{ErrUnitNotEnded, codes.FailedPrecondition},
	{ErrUnitInSession, codes.FailedPrecondition},
	{store.ErrNotAuthorized, codes.FailedPrecondition},
	{store.ErrUnitClosed, codes.FailedPrecondition},
	{store.ErrNotOnHold, codes.FailedPrecondition},
	{store.ErrIntentOpen, codes.FailedPrecondition},
	{store.ErrStepEnded, codes.FailedPrecondition},
	{store.ErrEKBoundElsewhere, codes.FailedPrecondition},
	{store.ErrEKMismatch, codes.FailedPrecondition},
	{store.ErrCertBoundElsewhere, codes.FailedPrecondition},
	{store.ErrCertSerialReused, codes.FailedPrecondition},
	{store.ErrChainBroken, codes.DataLoss},
	{store.ErrCorrupt, codes.DataLoss},
	{ErrUnavailable, codes.Unimplemented},
	{ErrShuttingDown, codes.Unavailable},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// makeErr is the one place where errors become gRPC statuses: known errors keep their
// message under the code they map to; a workflow error keeps its stable code in the message;
// anything else is logged and returned as Internal without details.
func makeErr(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range codeTable {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	var we *workflow.Error
	if errors.As(err, &we) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	log.Error("api call failed", "method", method, "error", err)
	return status.Error(codes.Internal, method+": internal error (see the station log)")
}
