// Package workflow provisions one unit under test: DESIGN.md steps 1 to 17 as one durable state
// machine per unit, keyed by serial and bound to the unit's EK. Every step that has an effect
// outside the station writes its intent to the store first and its result after, so a station
// crash, a unit power loss or a CA timeout resumes without losing or silently duplicating
// anything. Everything the agent reports is checked here, where it is consumed.
package workflow

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/devid-station/devid/ca-client/clock"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	stationv1 "github.com/devid-station/devid/proto/station/v1"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

// Step names, in workflow order: the names the journal stores (station/journal). The event
// kinds the workflow writes are the station API's (documented with stationv1.EventKind).
const (
	StepIdentify       = journal.StepIdentify
	StepVerifyEK       = journal.StepVerifyEK
	StepAuthorize      = journal.StepAuthorize
	StepIDevIDKey      = journal.StepIDevIDKey
	StepIDevIDProof    = journal.StepIDevIDProof
	StepIDevIDCSR      = journal.StepIDevIDCSR
	StepIDevIDEnroll   = journal.StepIDevIDEnroll
	StepIDevIDInstall  = journal.StepIDevIDInstall
	StepLDevIDKey      = journal.StepLDevIDKey
	StepLDevIDProof    = journal.StepLDevIDProof
	StepLDevIDCSR      = journal.StepLDevIDCSR
	StepLDevIDEnroll   = journal.StepLDevIDEnroll
	StepLDevIDInstall  = journal.StepLDevIDInstall
	StepOnboarding     = journal.StepOnboarding
	StepVerify         = journal.StepVerify
	StepFieldCheck     = journal.StepFieldCheck
	StepComplete       = journal.StepComplete
	eventUnitDone      = stationv1.KindUnitDone
	eventUnitFailed    = stationv1.KindUnitFailed
	eventUnitWaiting   = stationv1.KindUnitWaiting
	eventAlreadyDone   = stationv1.KindUnitAlreadyProvisioned
	eventLostAnswer    = stationv1.KindEnrollAnswerLost
	eventDuplicateCert = stationv1.KindCertDuplicate
	eventCertRefused   = stationv1.KindCertRefused
	eventAborted       = stationv1.KindUnitAborted
)

// Agent is the workflow's view of an agent session.
type Agent interface {
	// Hello returns the agent's Hello (claims, not facts).
	Hello() *agentv1.Hello
	// Peer returns the agent's network address, for the record of a refused session.
	Peer() string
	// Admit waits, within ctx and the gateway's own deadline, for one of the station's
	// provisioning slots; the session holds it until it ends. Run calls it only once the
	// session has passed its first checks.
	Admit(ctx context.Context) error
	// Do sends a command and waits for its result.
	Do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error)
}

// Journal is the durable store the workflow writes to; *store.Store implements it.
type Journal interface {
	Unit(ctx context.Context, serial string) (store.UnitState, error)
	UpdateUnit(ctx context.Context, serial string, fn func(*store.UnitState) error) (store.UnitState, error)
	BeginStep(ctx context.Context, serial, step string, intent []byte) (store.StepRef, error)
	EndStep(ctx context.Context, ref store.StepRef, result []byte, errCode string) error
	Advance(ctx context.Context, end store.StepRef, result []byte, step string, intent []byte) (store.StepRef, error)
	StepRecords(ctx context.Context, serial string) ([]store.StepRecord, error)
	BindEK(ctx context.Context, fingerprint, serial string) error
	UnitByEK(ctx context.Context, fingerprint string) (string, error)
	RecordRefusal(ctx context.Context, r store.Refusal) error
	Authorize(ctx context.Context, serial, profile string) (store.WorkOrder, error)
	RecordCertificate(ctx context.Context, serial string, role store.Role, der []byte, chain ...[]byte) (store.CertRecord, error)
	CertificateBySHA256(ctx context.Context, sha string) (store.CertRecord, error)
	OpenPossiblyIssued(ctx context.Context, p store.PossiblyIssued) (store.PossiblyIssued, error)
	SetCertificateStatus(ctx context.Context, serial, sha string, status store.CertStatus, reason string) error
	AppendEvent(ctx context.Context, serial, typ, message string, data map[string]string) (store.Event, error)
}

// Clock tells the time.
type Clock = clock.Clock

// Config configures a Runner.
type Config struct {
	// Journal is the store.
	Journal Journal
	// Profiles by name.
	Profiles map[string]*Profile
	// Issuers by CA name.
	Issuers map[string]Issuer
	// EKRoots are the pinned TPM vendor roots; EKIntermediates are offline intermediates
	// (e.g. cross certificates) used beside those the TPM stores.
	EKRoots, EKIntermediates []*x509.Certificate
	// EKAlgorithms lists the EK types to use, in order of preference; the first one whose
	// certificate verifies is used (default ECC P-256, ECC P-384, RSA-2048, RSA-3072).
	EKAlgorithms []agentv1.KeyAlgorithm
	// StepTimeout bounds each step (0 = 2 minutes); StepTimeouts overrides it per step name or,
	// for the steps without an entry of their own, per Wait class ("tpm", "ca", "unit",
	// "station").
	StepTimeout  time.Duration
	StepTimeouts map[string]time.Duration
	// HandoverWait bounds how long a new session of a serial waits for the previous session's
	// run to end (its agent reconnected while the station was still busy with the old
	// session); 0 = 30 s. Past it the new session is refused with SERIAL_IN_PROGRESS.
	HandoverWait time.Duration
	// FinishTimeout bounds the wait for the agent's answer to a verdict (Finish); 0 = 10 s.
	// The verdict is recorded before it is sent: a silent agent must not hold its session.
	FinishTimeout time.Duration
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Runner runs units. It is safe for concurrent use: each Run drives one unit.
type Runner struct {
	cfg Config
	// ekRoots pools cfg.EKRoots; chains verifies the EK and DevID certificate chains.
	ekRoots *x509.CertPool
	chains  chainVerifier
	mu      sync.Mutex
	running map[string]*run // by serial
}

// run is one unit being driven.
type run struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// New validates cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Journal == nil {
		return nil, errors.New("workflow: no journal")
	}
	if len(cfg.EKRoots) == 0 {
		return nil, errors.New("workflow: no TPM vendor roots")
	}
	for _, a := range cfg.EKAlgorithms {
		if _, ok := ekTypes[a]; !ok {
			return nil, fmt.Errorf("workflow: EK algorithm %v is no TCG EK type", a)
		}
	}
	for _, p := range cfg.Profiles {
		if err := p.validate(cfg.Issuers); err != nil {
			return nil, fmt.Errorf("workflow: %w", err)
		}
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 2 * time.Minute
	}
	if cfg.HandoverWait <= 0 {
		cfg.HandoverWait = 30 * time.Second
	}
	if cfg.FinishTimeout <= 0 {
		cfg.FinishTimeout = 10 * time.Second
	}
	if len(cfg.EKAlgorithms) == 0 {
		cfg.EKAlgorithms = []agentv1.KeyAlgorithm{agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P384,
			agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_3072}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ekRoots := x509.NewCertPool()
	for _, c := range cfg.EKRoots {
		ekRoots.AddCert(c)
	}
	return &Runner{cfg: cfg, ekRoots: ekRoots, running: map[string]*run{}}, nil
}

// Outcome is how a Run ended.
type Outcome struct {
	// Serial is the unit's serial as the agent claimed it.
	Serial string
	// Done is true when the unit is provisioned and verified.
	Done bool
	// Interrupted is true when the session ended early; the unit resumes on reconnect.
	Interrupted bool
	// Refused is true when the session ended before it passed its first checks (EK
	// certificate chain, serial authorized, serial not busy): nothing of it was written but a
	// bounded record of the refusal (store.Refusal).
	Refused bool
	// Code and Message describe a failure.
	Code, Message string
}

// Run drives the unit behind agent as far as it can go in this session.
//
// Nothing is written to the unit's record, and no provisioning slot is taken, until the
// session has passed its first checks: the EK certificate chains to a pinned TPM vendor root
// and matches the EK's public area, no other live session drives the serial, the EK is not
// bound to another serial nor the serial to another EK, and the serial is in an open work
// order. A session refused before that leaves only a bounded store.Refusal. The EK is bound
// to the serial only after the TPM proved it holds the EK (credential activation).
func (r *Runner) Run(ctx context.Context, agent Agent) Outcome {
	u := &unit{r: r, agent: agent, serial: agent.Hello().GetHardwareSerial(), results: map[string]json.RawMessage{}}
	u.log = r.cfg.Logger.With("serial", u.serial)
	out := Outcome{Serial: u.serial}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := u.readTPM(ctx); err != nil {
		return u.refuse(ctx, err)
	}
	if !r.track(ctx, u.serial, cancel) {
		// Another live session drives this serial: two units claim it, or a stale session
		// lingers. Touch nothing of the running unit's record.
		return u.refuse(ctx, fail(CodeSerialBusy, nil, "another session is provisioning this serial"))
	}
	defer r.untrack(u.serial)
	if err := u.load(ctx); err != nil {
		out.Code, out.Message = CodeOf(err), MessageOf(err)
		u.log.Error("loading the unit", "error", err)
		return out
	}
	switch err := u.admissible(ctx); {
	case errors.Is(err, errAlreadyDone):
		out.Done = true
		return out
	case err != nil:
		return u.refuse(ctx, err)
	}
	if err := agent.Admit(ctx); err != nil {
		out.Interrupted, out.Message = true, fmt.Sprintf("waiting for a provisioning slot: %v", err)
		u.log.Info("no provisioning slot; the unit resumes on reconnect", "error", err)
		return out
	}

	err := u.run(ctx)
	switch {
	case err == nil:
		out.Done = true
	case errors.Is(err, errInterrupted):
		out.Interrupted = true
		out.Message = err.Error()
		u.log.Info("unit interrupted; resumes on reconnect", "step", u.step, "error", err)
		u.event(context.WithoutCancel(ctx), eventUnitWaiting, err.Error(), nil)
	default:
		out.Code, out.Message = CodeOf(err), MessageOf(err)
		u.log.Warn("unit failed", "step", u.step, "code", out.Code, "error", out.Message)
	}
	return out
}

// timeout is step's timeout.
func (r *Runner) timeout(step string) time.Duration {
	if t, ok := r.cfg.StepTimeouts[step]; ok {
		return t
	}
	if d := stepByName[step]; d != nil {
		if t, ok := r.cfg.StepTimeouts[string(d.Wait)]; ok {
			return t
		}
	}
	return r.cfg.StepTimeout
}

// track registers the serial's run. A previous run of the same serial is waited for (its
// session ends when its agent goes away) up to HandoverWait; false if it is still running.
func (r *Runner) track(ctx context.Context, serial string, cancel context.CancelCauseFunc) bool {
	timer := time.NewTimer(r.cfg.HandoverWait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		prev := r.running[serial]
		if prev == nil {
			r.running[serial] = &run{cancel: cancel, done: make(chan struct{})}
			r.mu.Unlock()
			return true
		}
		r.mu.Unlock()
		select {
		case <-prev.done:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (r *Runner) untrack(serial string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.running[serial]; e != nil {
		close(e.done)
		delete(r.running, serial)
	}
}

// Running reports the serials being provisioned now.
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.running))
	for s := range r.running {
		out = append(out, s)
	}
	return out
}

// Abort stops the unit's workflow if it runs and marks the unit aborted with reason; by names
// the caller for the audit trail.
func (r *Runner) Abort(ctx context.Context, serial, by, reason string) (store.UnitState, error) {
	r.mu.Lock()
	e := r.running[serial]
	r.mu.Unlock()
	if e != nil {
		e.cancel(errAborted)
	}
	if _, err := r.cfg.Journal.Unit(ctx, serial); err != nil {
		return store.UnitState{}, err
	}
	st, err := r.cfg.Journal.UpdateUnit(ctx, serial, func(s *store.UnitState) error {
		s.Status, s.ErrorCode, s.ErrorMessage = store.StatusAborted, CodeAborted, fmt.Sprintf("aborted by %s: %s", by, reason)
		return nil
	})
	if err != nil {
		return st, err
	}
	if _, err := r.cfg.Journal.AppendEvent(ctx, serial, eventAborted, reason, map[string]string{"by": by, "reason": reason}); err != nil {
		r.cfg.Logger.Error("appending the abort event", "serial", serial, "error", err)
	}
	return st, nil
}
