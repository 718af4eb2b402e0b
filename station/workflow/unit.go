package workflow

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/store"
)

// Codes recorded on step attempts that did not end by themselves.
const (
	codeInterrupted = "INTERRUPTED"
	codeAnswerLost  = "ANSWER_LOST"
)

// unit is one Run: the verified facts gathered so far for one serial. Only Run's goroutine
// touches it.
type unit struct {
	r      *Runner
	agent  Agent
	serial string
	log    *slog.Logger
	step   string

	state   store.UnitState
	results map[string]json.RawMessage // last successful result per step
	intents map[string]store.StepRecord
	pending *pendingEnd // a step result to write with the next intent

	evidence  json.RawMessage // what the agent reported in identify, checked in verify_ek
	profile   *Profile
	workOrder string
	info      *agentv1.InfoResult
	ekAlg     agentv1.KeyAlgorithm
	ek        *attest.Key
	ekCert    *ekcert.EKCertInfo
	ekFP      string
	keys      map[string]*devKey // by role: roleIDevID, roleLDevID
}

// devKey is what the workflow learned about one DevID key.
type devKey struct {
	role    store.Role
	profile KeyProfile
	key     *attest.Key
	csr     []byte
	cert    *x509.Certificate
	chain   []*x509.Certificate
}

func (u *unit) run(ctx context.Context) error {
	if err := u.load(ctx); err != nil {
		return err
	}
	if err := u.open(ctx); err != nil {
		if errors.Is(err, errAlreadyDone) {
			return nil
		}
		return u.finishFailed(ctx, err)
	}
	for _, step := range Steps {
		if err := u.runStep(ctx, step); err != nil {
			return u.finishFailed(ctx, err)
		}
	}
	return u.flush(ctx)
}

// errAlreadyDone ends a session of a unit that was provisioned earlier and still has its TPM.
var errAlreadyDone = errors.New("already provisioned")

// open marks the unit running (creating its record). A done unit without rework is only
// re-identified, without journaling: the same TPM gets the passed verdict again, anything else
// fails. A unit on hold or scrapped is refused. A done, aborted or held unit with a rework
// authorization is reopened and reworked (reworkCleanup).
func (u *unit) open(ctx context.Context) error {
	closed := u.state.Status == store.StatusDone || u.state.Status == store.StatusAborted || u.state.Status == store.StatusHold
	if u.state.Status == store.StatusScrapped {
		return fail(CodeScrapped, nil, "unit was scrapped")
	}
	if closed && u.state.Rework == nil {
		switch u.state.Status {
		case store.StatusAborted:
			return fail(CodeAborted, nil, "unit was aborted; it needs a rework authorization")
		case store.StatusHold:
			return fail(CodeOnHold, nil, "unit is on hold after %s; QA or an admin decides (rework or scrap)", u.state.ErrorCode)
		}
		u.step = StepIdentify
		if _, err := u.identify(ctx); err != nil {
			return err
		}
		if err := u.checkEK(); err != nil {
			return err
		}
		if u.ekFP != u.state.EKFingerprint {
			return fail(CodeEKChanged, nil, "provisioned serial now reports another TPM (EK %s)", short(u.ekFP))
		}
		u.event(ctx, eventAlreadyDone, "unit reconnected after it was provisioned", nil)
		_, _ = u.agent.Do(ctx, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true, Message: "already provisioned"}}})
		return errAlreadyDone
	}
	st, err := u.r.cfg.Journal.UpdateUnit(ctx, u.serial, func(s *store.UnitState) error {
		s.Status, s.ErrorCode, s.ErrorMessage = store.StatusRunning, "", ""
		return nil
	})
	if err != nil {
		return u.journalErr(err, "opening the unit")
	}
	u.state = st
	if closed {
		return u.reworkCleanup(ctx)
	}
	return nil
}

// load reads what the store knows of the unit: its state, each step's last good result and
// the intents that never got a result.
func (u *unit) load(ctx context.Context) error {
	st, err := u.r.cfg.Journal.Unit(ctx, u.serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("loading unit: %w", err)
	}
	u.state = st
	recs, err := u.r.cfg.Journal.StepRecords(ctx, u.serial)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("loading step records: %w", err)
	}
	// Results from before the last rework belong to the unit's previous life, but for those of
	// an IDevID that reworks kept: they belong to the life since the last rework that did not.
	var since, idevidSince time.Time
	if n := len(st.Reworks); n > 0 {
		since = st.Reworks[n-1].UsedAt
	}
	for _, rec := range recs {
		var r reworkResult
		if rec.Step == stepRework && (!rec.Ended || rec.ErrorCode != "" || json.Unmarshal(rec.Result, &r) != nil || r.IDevID != reworkKept) &&
			rec.BeganAt.After(idevidSince) {
			idevidSince = rec.BeganAt
		}
	}
	u.intents = map[string]store.StepRecord{}
	for _, rec := range recs {
		from := since
		if idevidSteps[rec.Step] && idevidSince.Before(since) {
			from = idevidSince
		}
		switch {
		case !rec.Ended:
			u.intents[rec.Step] = rec
		case rec.ErrorCode == "" && !rec.EndedAt.Before(from):
			u.results[rec.Step] = rec.Result
		}
	}
	u.keys = map[string]*devKey{}
	return nil
}

var stepFuncs = map[string]func(*unit, context.Context) (any, error){
	StepIdentify:      (*unit).identify,
	StepVerifyEK:      (*unit).verifyEK,
	StepAuthorize:     (*unit).authorize,
	StepIDevIDKey:     func(u *unit, ctx context.Context) (any, error) { return u.createKey(ctx, roleIDevID) },
	StepIDevIDProof:   func(u *unit, ctx context.Context) (any, error) { return u.proveResidency(ctx, roleIDevID) },
	StepIDevIDCSR:     func(u *unit, ctx context.Context) (any, error) { return u.buildCSR(ctx, roleIDevID) },
	StepIDevIDEnroll:  func(u *unit, ctx context.Context) (any, error) { return u.enroll(ctx, roleIDevID) },
	StepIDevIDInstall: (*unit).installIDevID,
	StepLDevIDKey:     func(u *unit, ctx context.Context) (any, error) { return u.createKey(ctx, roleLDevID) },
	StepLDevIDProof:   func(u *unit, ctx context.Context) (any, error) { return u.proveResidency(ctx, roleLDevID) },
	StepLDevIDCSR:     func(u *unit, ctx context.Context) (any, error) { return u.buildCSR(ctx, roleLDevID) },
	StepLDevIDEnroll:  func(u *unit, ctx context.Context) (any, error) { return u.enroll(ctx, roleLDevID) },
	StepLDevIDInstall: (*unit).installLDevID,
	StepOnboarding:    (*unit).onboarding,
	StepVerify:        (*unit).verify,
	StepComplete:      (*unit).complete,
}

// resumable steps are skipped when a good result is recorded: their effect is durable and the
// steps that always run (identify, verify_ek, authorize, the key steps and verify) re-check the
// unit against it.
var resumable = map[string]bool{
	StepIDevIDProof: true, StepIDevIDCSR: true, StepIDevIDEnroll: true, StepIDevIDInstall: true,
	StepLDevIDProof: true, StepLDevIDCSR: true, StepLDevIDEnroll: true, StepLDevIDInstall: true,
	StepOnboarding: true,
}

// runStep runs one step with its timeout, journaling intent and result around it.
func (u *unit) runStep(ctx context.Context, step string) error {
	u.step = step
	if prev, ok := u.results[step]; ok && resumable[step] {
		if err := u.restore(step, prev); err != nil {
			return fail(CodeInternal, err, "restoring step %s", step)
		}
		u.log.Debug("step restored from the store", "step", step)
		return nil
	}
	if rec, ok := u.intents[step]; ok {
		// The station stopped, or the session broke, between this step's intent and its
		// result. Close that attempt as such before starting a new one.
		code := codeInterrupted
		if step == StepIDevIDEnroll || step == StepLDevIDEnroll {
			code = codeAnswerLost
			u.event(ctx, eventLostAnswer, "the answer to an earlier enrollment was lost; enrolling the same CSR again", map[string]string{"step": step, "attempt": fmt.Sprint(rec.Attempt)})
		}
		if err := u.r.cfg.Journal.EndStep(ctx, rec.StepRef, nil, code); err != nil {
			return fmt.Errorf("closing interrupted step %s: %w", step, err)
		}
		delete(u.intents, step)
	}
	timeout := u.r.cfg.StepTimeout
	if t, ok := u.r.cfg.StepTimeouts[step]; ok {
		timeout = t
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	ref, err := u.begin(ctx, step)
	if err != nil {
		return u.journalErr(err, "recording the intent of %s", step)
	}
	result, err := stepFuncs[step](u, sctx)
	if err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
		err = fail(CodeStepTimeout, err, "step %s took longer than %s", step, timeout)
	}
	if err != nil {
		// An interrupted step keeps its intent open: the resume decides what it did.
		return u.endFailed(ctx, ref, err)
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return fail(CodeInternal, err, "encoding the result of %s", step)
	}
	// The result is written with the next step's intent (Advance), or by flush.
	u.pending = &pendingEnd{ref: ref, result: raw}
	u.results[step] = raw
	return nil
}

// pendingEnd is a step result not written yet: it goes with the next step's intent, in one
// commit, which keeps "result after the effect, next intent before the next effect".
type pendingEnd struct {
	ref    store.StepRef
	result []byte
}

// begin journals the intent of step, with the pending result of the previous step if any.
func (u *unit) begin(ctx context.Context, step string) (store.StepRef, error) {
	if p := u.pending; p != nil {
		u.pending = nil
		return u.r.cfg.Journal.Advance(ctx, p.ref, p.result, step, u.intent(step))
	}
	return u.r.cfg.Journal.BeginStep(ctx, u.serial, step, u.intent(step))
}

// flush writes the pending result, if any.
func (u *unit) flush(ctx context.Context) error {
	p := u.pending
	if p == nil {
		return nil
	}
	u.pending = nil
	if err := u.r.cfg.Journal.EndStep(ctx, p.ref, p.result, ""); err != nil {
		return u.journalErr(err, "recording the result of %s", p.ref.Step)
	}
	return nil
}

// journalErr turns a store error into a unit error: a refused transition is the unit's fault
// (e.g. a done unit without rework), anything else is the station's.
func (u *unit) journalErr(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrUnitClosed) || errors.Is(err, store.ErrNotAuthorized) {
		return fail(CodeAlreadyProvisioned, err, format, args...)
	}
	return fail(CodeInternal, err, format, args...)
}

// intent is what a step is about to do, journaled before it does it.
func (u *unit) intent(step string) []byte {
	m := map[string]string{"step": step}
	switch step {
	case StepVerifyEK:
		m["identify"] = string(u.evidence)
	case StepIDevIDEnroll, StepLDevIDEnroll:
		k := u.keys[roleFor(step)]
		if k != nil {
			sum := sha256.Sum256(k.csr)
			m["csr_sha256"] = hex.EncodeToString(sum[:])
			m["ca"] = k.profile.Issuer
		}
	}
	b, _ := json.Marshal(m)
	return b
}

func roleFor(step string) string {
	switch step {
	case StepIDevIDKey, StepIDevIDProof, StepIDevIDCSR, StepIDevIDEnroll, StepIDevIDInstall:
		return roleIDevID
	}
	return roleLDevID
}

// do sends one command; transport failures interrupt the unit, agent errors fail it.
func (u *unit) do(ctx context.Context, cmd *agentv1.Command) (*agentv1.Result, error) {
	res, err := u.agent.Do(ctx, cmd)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errInterrupted, err)
	}
	if e := res.GetError(); e != nil {
		code := CodeAgentError
		switch e.GetCode() {
		case agentv1.ErrorCode_ERROR_CODE_HANDLE_OCCUPIED:
			code = CodeHandleOccupied
		case agentv1.ErrorCode_ERROR_CODE_ACTIVATION_FAILED:
			code = CodeActivationFailed
		}
		return nil, fail(code, &AgentError{Code: e.GetCode(), TPMRC: e.GetTpmRc()}, "agent: %s", e.GetMessage())
	}
	return res, nil
}

// AgentError is a structured error an agent answered a command with.
type AgentError struct {
	// Code is the agent's stable error code.
	Code agentv1.ErrorCode
	// TPMRC is the TPM response code, if any.
	TPMRC uint32
}

func (e *AgentError) Error() string {
	if e.TPMRC != 0 {
		return fmt.Sprintf("%s (tpm rc %#x)", e.Code, e.TPMRC)
	}
	return e.Code.String()
}

func (u *unit) event(ctx context.Context, typ, msg string, data map[string]string) {
	if _, err := u.r.cfg.Journal.AppendEvent(ctx, u.serial, typ, msg, data); err != nil && !errors.Is(err, store.ErrNotFound) {
		u.log.Error("appending event", "type", typ, "error", err)
	}
}

// finishFailed records the failure and tells the agent. Interruptions are not failures.
func (u *unit) finishFailed(ctx context.Context, err error) error {
	// The last completed step's result is a fact, whatever happens next.
	if ferr := u.flush(context.WithoutCancel(ctx)); ferr != nil {
		u.log.Error("recording a step result", "error", ferr)
	}
	if errors.Is(context.Cause(ctx), errAborted) {
		err = fail(CodeAborted, err, "aborted by an operator")
	} else if errors.Is(err, errInterrupted) || ctx.Err() != nil {
		return fmt.Errorf("%w: %v", errInterrupted, err)
	}
	code, msg := CodeOf(err), MessageOf(err)
	class := Class(code)
	bg := context.WithoutCancel(ctx)
	status := store.StatusFailed
	// A security failure holds the unit only once its session passed the EK checks and
	// authorization: an unauthenticated session must not be able to lock a serial out.
	if class == ClassSecurity && u.workOrder != "" {
		status = store.StatusHold
	}
	if errors.Is(context.Cause(ctx), errAborted) {
		// Abort recorded the unit's status; the agent still gets its verdict.
		code, msg = CodeAborted, "aborted by an operator"
	} else if code != CodeAlreadyProvisioned && code != CodeOnHold && code != CodeScrapped {
		if _, jerr := u.r.cfg.Journal.UpdateUnit(bg, u.serial, func(s *store.UnitState) error {
			s.Status, s.ErrorCode, s.ErrorMessage = status, code, msg
			s.CurrentStep = u.step
			return nil
		}); jerr != nil && !errors.Is(jerr, store.ErrNotFound) {
			u.log.Error("recording unit failure", "error", jerr)
		}
	}
	u.event(bg, eventUnitFailed, msg, map[string]string{"code": code, "step": u.step, "class": class})
	if status == store.StatusHold {
		msg = "on hold for QA: " + msg
	}
	fctx, cancel := context.WithTimeout(bg, u.r.cfg.StepTimeout)
	defer cancel()
	_, _ = u.agent.Do(fctx, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: false, Code: code, Message: msg}}})
	return err
}
