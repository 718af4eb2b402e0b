package workflow

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/journal"
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
	// answerLost is set when the EST client sent the running enroll step's request again
	// after an attempt whose answer was lost (the issuer's OnRetry may run on its goroutine).
	answerLost atomic.Bool
	// tpmLockout is set when the agent answered a command ERROR_CODE_TPM_LOCKOUT (a signer may
	// run on an HTTP client's goroutine); timedOut consumes it.
	tpmLockout atomic.Bool
	// reenrollCSR is the CSR the field check's re-enrollment sent this session.
	reenrollCSR []byte

	state   store.UnitState
	results map[string]json.RawMessage // last successful result per step
	intents map[string]store.StepRecord
	pending *pendingEnd // a step result to write with the next intent

	id        *journal.Identify // what the agent reported about its TPM: evidence, checked in checkEK
	idSummary journal.IdentifyResult
	profile   *Profile
	workOrder string
	info      *agentv1.InfoResult
	ekAlg     agentv1.KeyAlgorithm
	ek        *attest.Key
	ekCert    *ekcert.EKCertInfo
	ekFP      string
	ekCertSHA string // lowercase hex SHA-256 of the EK certificate's DER
	// proven is set once a credential activation in this session proved the TPM holds the EK.
	proven bool
	keys   map[string]*devKey // by role: roleIDevID, roleLDevID
	// unreached counts, by step, the attempts since the last rework that ended AGENT_ERROR: a
	// proof step's credential activation the agent could not take to its TPM (activate).
	unreached map[string]int
}

// devKey is what the workflow learned about one DevID key.
type devKey struct {
	role    store.Role
	profile KeyProfile
	key     *attest.Key
	csr     []byte
	// activated is set once credential activation proved the key resides beside the EK (this
	// session, or a recorded result for the same Name).
	activated bool
	// subject and exts are what the station dictates for the key's certificate (request).
	subject []byte
	exts    []pkix.Extension
	cert    *x509.Certificate
	chain   []*x509.Certificate
}

// run provisions an admitted unit: its session passed the first checks and holds a slot.
func (u *unit) run(ctx context.Context) error {
	if err := u.open(ctx); err != nil {
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

// readTPM is the first check of a session, within the identify step's timeout: the agent
// reports its TPM and EKs, and the EK certificate chain and public area must verify. It writes
// nothing.
func (u *unit) readTPM(ctx context.Context) error {
	u.step = StepIdentify
	sctx, cancel := context.WithTimeout(ctx, u.r.timeout(StepIdentify))
	defer cancel()
	err := u.identify(sctx)
	if err == nil {
		err = u.checkEK()
	}
	return u.timedOut(ctx, sctx, StepIdentify, err)
}

// admissible makes the checks that need the unit's record, read only: the EK is the unit's
// and no other's, and the serial is authorized. A provisioned unit without a rework
// authorization instead proves it still holds its TPM and IDevID key and gets the passed
// verdict again (errAlreadyDone).
func (u *unit) admissible(ctx context.Context) error {
	if fp := u.state.EKFingerprint; fp != "" && fp != u.ekFP {
		return fail(CodeEKChanged, nil, "serial is bound to another TPM (EK %s), this one has EK %s", short(fp), short(u.ekFP))
	}
	switch bound, err := u.r.cfg.Journal.UnitByEK(ctx, u.ekFP); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fail(CodeInternal, err, "looking up the EK binding")
	case bound != u.serial:
		return fail(CodeEKBound, nil, "EK %s belongs to another serial", short(u.ekFP))
	}
	if u.state.Status == store.StatusScrapped {
		return fail(CodeScrapped, nil, "unit was scrapped")
	}
	if u.state.Rework == nil {
		switch u.state.Status {
		case store.StatusAborted:
			return fail(CodeAborted, nil, "unit was aborted; it needs a rework authorization")
		case store.StatusHold:
			return fail(CodeOnHold, nil, "unit is on hold after %s; QA or an admin decides (rework or scrap)", u.state.ErrorCode)
		case store.StatusDone:
			return u.alreadyDone(ctx)
		}
	}
	return u.checkAuthorized(ctx)
}

// alreadyDone answers a provisioned unit that reconnects: its TPM proves it holds the EK and
// the IDevID key recorded (credential activation), then the unit gets the passed verdict again.
func (u *unit) alreadyDone(ctx context.Context) error {
	u.step = StepIDevIDProof
	k, ok := u.state.Keys[roleIDevID]
	if !ok {
		return fail(CodeAlreadyProvisioned, nil, "provisioned unit has no recorded IDevID key")
	}
	sctx, cancel := context.WithTimeout(ctx, u.r.timeout(StepIDevIDProof))
	defer cancel()
	if err := u.timedOut(ctx, sctx, StepIDevIDProof, u.activate(sctx, roleIDevID, k.Handle, &attest.Key{Name: k.Name})); err != nil {
		return err
	}
	u.event(ctx, eventAlreadyDone, "unit reconnected after it was provisioned", nil)
	u.finish(ctx, &agentv1.FinishRequest{Passed: true, Message: "already provisioned"})
	return errAlreadyDone
}

// timedOut turns the error of step's work, done within sctx (a deadline under ctx), into
// TPM_LOCKOUT when the agent answered a command of that work with a TPM in lockout, whatever
// the work made of that answer (a TLS handshake that failed to sign, a failed proof), else
// into STEP_TIMEOUT when that deadline passed.
func (u *unit) timedOut(ctx, sctx context.Context, step string, err error) error {
	if lockout := u.tpmLockout.Swap(false); err != nil && lockout && CodeOf(err) != CodeTPMLockout {
		return fail(CodeTPMLockout, err, "step %s: the TPM is in dictionary-attack lockout", step)
	}
	if err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
		return fail(CodeStepTimeout, err, "step %s took longer than %s", step, u.r.timeout(step))
	}
	return err
}

// refuse ends a session that did not pass its first checks. Nothing of the unit's record is
// touched: the store keeps a bounded record of the refusal, and the agent gets its verdict.
func (u *unit) refuse(ctx context.Context, err error) Outcome {
	out := Outcome{Serial: u.serial, Refused: true, Code: CodeOf(err), Message: MessageOf(err)}
	bg := context.WithoutCancel(ctx)
	if errors.Is(err, errInterrupted) || ctx.Err() != nil {
		// The agent went away (or the station is stopping): there is nobody to tell.
		out.Interrupted, out.Code = true, codeInterrupted
		u.log.Info("session ended before its first checks passed", "peer", u.agent.Peer(), "step", u.step, "error", err)
		return out
	}
	u.log.Warn("session refused", "peer", u.agent.Peer(), "step", u.step, "code", out.Code, "error", err)
	var fps []string
	if u.ekFP != "" {
		fps = append(fps, u.ekFP)
	}
	if u.id != nil {
		for _, k := range u.id.EKs {
			if c := k.GetCertificate(); len(c) > 0 {
				fps = append(fps, "cert:"+sha(c))
			}
		}
	}
	rctx, cancel := recording(ctx)
	defer cancel()
	if rerr := u.r.cfg.Journal.RecordRefusal(rctx, store.Refusal{Peer: u.agent.Peer(), Serial: u.serial,
		BootID: u.agent.Hello().GetBootId(), Code: out.Code, Message: out.Message, Fingerprints: fps}); rerr != nil {
		u.log.Error("recording a refused session", "error", rerr)
	}
	u.finish(bg, &agentv1.FinishRequest{Code: out.Code, Message: out.Message})
	return out
}

// finish sends the verdict, waiting FinishTimeout at most for the agent's answer.
func (u *unit) finish(ctx context.Context, f *agentv1.FinishRequest) {
	fctx, cancel := context.WithTimeout(ctx, u.r.cfg.FinishTimeout)
	defer cancel()
	_, _ = u.agent.Do(fctx, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: f}})
}

// open marks the unit running (creating its record). A done, aborted or held unit with a
// rework authorization is reopened and reworked (reworkCleanup). A unit that is not reopened
// gets its work order, profile and verified EK certificate in the same write when it can take
// the profile's files: what the authorize step records, which then has nothing left to write.
func (u *unit) open(ctx context.Context) error {
	closed := u.state.Status == store.StatusDone || u.state.Status == store.StatusAborted || u.state.Status == store.StatusHold
	authorized := !closed && checkFileRoots(u.profile, u.agent.Hello().GetFileRoots()) == nil
	st, err := u.r.cfg.Journal.UpdateUnit(ctx, u.serial, func(s *store.UnitState) error {
		s.Status, s.ErrorCode, s.ErrorMessage = store.StatusRunning, "", ""
		if authorized {
			u.recordAuthorization(s)
		}
		return nil
	})
	if err != nil {
		return u.journalErr(err, "opening the unit")
	}
	u.state = st
	if closed {
		rctx, cancel := context.WithTimeout(ctx, u.r.timeout(stepRework))
		defer cancel()
		return u.timedOut(ctx, rctx, stepRework, u.reworkCleanup(rctx))
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
	// Results of a unit whose EK is not bound come from sessions whose TPM never proved it holds
	// the EK: they are not facts about this unit (a forged session's key must not refuse the
	// genuine one).
	var since, idevidSince time.Time
	if n := len(st.Reworks); n > 0 {
		since = st.Reworks[n-1].UsedAt
	}
	for _, rec := range recs {
		var r journal.ReworkResult
		if rec.Step == stepRework && (!rec.Ended || rec.ErrorCode != "" || json.Unmarshal(rec.Result, &r) != nil || r.IDevID != journal.ReworkKept) &&
			rec.BeganAt.After(idevidSince) {
			idevidSince = rec.BeganAt
		}
	}
	proven := st.EKFingerprint != ""
	u.intents = map[string]store.StepRecord{}
	u.unreached = map[string]int{}
	for _, rec := range recs {
		from := since
		if idevidSteps[rec.Step] && idevidSince.Before(since) {
			from = idevidSince
		}
		switch {
		case !rec.Ended:
			u.intents[rec.Step] = rec
		case proven && rec.ErrorCode == "" && !rec.EndedAt.Before(from):
			u.results[rec.Step] = rec.Result
		case rec.ErrorCode == CodeAgentError && !rec.EndedAt.Before(since):
			u.unreached[rec.Step]++
		}
	}
	u.keys = map[string]*devKey{}
	return nil
}

// runStep runs one step with its timeout, journaling intent and result around it.
func (u *unit) runStep(ctx context.Context, step string) error {
	u.step = step
	if prev, ok := u.results[step]; ok && stepByName[step].Resumable {
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
		if u.enrolls(step) {
			code = codeAnswerLost
			u.event(ctx, eventLostAnswer, "the answer to an earlier enrollment was lost; enrolling again", map[string]string{"step": step, "attempt": fmt.Sprint(rec.Attempt)})
			if err := u.possiblyIssued(ctx, rec.StepRef, rec.Intent, rec.BeganAt); err != nil {
				return fail(CodeInternal, err, "step %s", step)
			}
		}
		if err := u.r.cfg.Journal.EndStep(ctx, rec.StepRef, nil, code); err != nil {
			return fmt.Errorf("closing interrupted step %s: %w", step, err)
		}
		delete(u.intents, step)
	}
	if roleFor(step) == roleIAK && u.profile.IAK == nil {
		// A step the profile does not ask for does nothing: it journals nothing either (the
		// previous step's result stays pending for the next intent).
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, u.r.timeout(step))
	defer cancel()

	began := u.r.cfg.Clock.Now()
	ref, err := u.begin(ctx, step)
	if err != nil {
		return u.journalErr(err, "recording the intent of %s", step)
	}
	u.answerLost.Store(false)
	result, err := stepByName[step].run(u, sctx)
	err = u.timedOut(ctx, sctx, step, err)
	c := CodeOf(err)
	if enroll := u.enrolls(step); enroll &&
		(err != nil && (c == CodeCAUnavailable || c == CodeFieldCheckUnavailable || c == CodeStepTimeout) || u.answerLost.Load()) {
		// The request may have reached the CA before it failed, or an attempt before the one
		// answered lost its answer: the CA may hold a certificate the store does not know.
		if perr := u.possiblyIssued(ctx, ref, u.intent(step), began); perr != nil {
			u.log.Error("recording a possibly issued certificate", "step", step, "error", perr)
		}
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

// begin journals the intent of step, with the pending result of the previous step if any. When
// that write fails (the session ended), the result stays pending: finishFailed flushes it.
func (u *unit) begin(ctx context.Context, step string) (store.StepRef, error) {
	if p := u.pending; p != nil {
		ref, err := u.r.cfg.Journal.Advance(ctx, p.ref, p.result, step, u.intent(step))
		if err == nil {
			u.pending = nil
		}
		return ref, err
	}
	return u.r.cfg.Journal.BeginStep(ctx, u.serial, step, u.intent(step))
}

// flush writes the pending result, if any. The step happened: the session's end does not
// cancel the write (recording).
func (u *unit) flush(ctx context.Context) error {
	p := u.pending
	if p == nil {
		return nil
	}
	u.pending = nil
	ctx, cancel := recording(ctx)
	defer cancel()
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
	m := journal.Intent{Step: step}
	switch step {
	case StepVerifyEK:
		// What the traveler shows of the TPM: the verified EK certificate and bounded claims.
		m.Identify = string(u.verifiedReport())
	case StepIDevIDEnroll, StepLDevIDEnroll, StepIAKEnroll:
		k := u.keys[roleFor(step)]
		if k != nil {
			sum := sha256.Sum256(k.csr)
			m.CSRSHA256 = hex.EncodeToString(sum[:])
			m.CA = k.profile.Issuer
			if k.key != nil {
				m.KeyName, m.PublicKeySHA256 = hex.EncodeToString(k.key.Name), PublicKeySHA256(k.key.PublicKey)
			}
		}
	}
	b, err := json.Marshal(m)
	if err != nil { // strings always encode
		panic(fmt.Sprintf("encoding the intent of %s: %v", step, err))
	}
	return b
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
		case agentv1.ErrorCode_ERROR_CODE_TPM_LOCKOUT:
			code = CodeTPMLockout
			u.tpmLockout.Store(true)
		}
		return nil, fail(code, &AgentError{Code: e.GetCode(), TPMRC: e.GetTpmRc()}, "agent: %s", clip(e.GetMessage()))
	}
	// Every step reads the answer of its own kind: any other (or none) would leave it with
	// nothing where it expects the agent's result (found by FuzzAgentResult).
	if got, want := opName(res), opName(cmd); got != want {
		return nil, fail(CodeAgentError, nil, "agent: answered %s with %q", want, got)
	}
	return res, nil
}

// opName names the operation a command or a result carries (its "op" field), "" for none.
func opName(m proto.Message) protoreflect.Name {
	r := m.ProtoReflect()
	if f := r.WhichOneof(r.Descriptor().Oneofs().ByName("op")); f != nil {
		return f.Name()
	}
	return ""
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

// recordTimeout bounds a store write that records what already happened (recording).
const recordTimeout = 10 * time.Second

// recording returns the context of a store write that records what already happened (a step's
// result, a certificate a CA issued, the unit's end, an event): the session ending, as an agent
// that goes away ends it, must not cancel it, but it still has a deadline.
func recording(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
}

// event appends an event to the unit's log; it records what happened (recording).
func (u *unit) event(ctx context.Context, typ, msg string, data map[string]string) {
	ctx, cancel := recording(ctx)
	defer cancel()
	if _, err := u.r.cfg.Journal.AppendEvent(ctx, u.serial, typ, msg, data); err != nil && !errors.Is(err, store.ErrNotFound) {
		u.log.Error("appending event", "type", typ, "error", err)
	}
}

// finishFailed records the failure and tells the agent. Interruptions are not failures.
func (u *unit) finishFailed(ctx context.Context, err error) error {
	// The last completed step's result is a fact, whatever happens next.
	if ferr := u.flush(ctx); ferr != nil {
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
	// A security failure holds the unit only once its session's TPM proved it holds the EK
	// (credential activation): a session with a public EK certificate and another TPM, or
	// none, must not be able to lock a serial out.
	if class == ClassSecurity && u.proven {
		status = store.StatusHold
	}
	if errors.Is(context.Cause(ctx), errAborted) {
		// Abort recorded the unit's status; the agent still gets its verdict.
		code, msg = CodeAborted, "aborted by an operator"
	} else if code != CodeAlreadyProvisioned {
		rctx, cancel := recording(ctx)
		defer cancel()
		if _, jerr := u.r.cfg.Journal.UpdateUnit(rctx, u.serial, func(s *store.UnitState) error {
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
	u.finish(bg, &agentv1.FinishRequest{Passed: false, Code: code, Message: msg})
	return err
}
