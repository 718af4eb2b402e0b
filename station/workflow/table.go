package workflow

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Wait is what a step mostly waits on, and its timeout class: [workflow.step_timeouts] takes a
// step name or a Wait ("ca" = "5m" bounds every step that waits on a CA).
type Wait string

// Waits lists the timeout classes.
var Waits = []Wait{WaitStation, WaitTPM, WaitCA, WaitUnit}

// The waits a step can have.
const (
	WaitStation Wait = "station" // the station's own checks and its store
	WaitTPM     Wait = "tpm"     // TPM commands through the agent
	WaitCA      Wait = "ca"      // an EST CA
	WaitUnit    Wait = "unit"    // the unit's file system through the agent
)

// StepDesc is everything about one workflow step, in one place: adding a step is one row of
// Table (plus its function), and docs/workflow.md's step table is checked against Table.
type StepDesc struct {
	// Name is stored in every step record: never rename one.
	Name string
	// Resumable steps are skipped when a good result is recorded: their effect is durable and
	// the steps that always run (identify, verify_ek, authorize, the key steps and verify)
	// re-check the unit against it.
	Resumable bool
	// Role is the DevID key the step works on (roleIDevID, roleLDevID), "" for none.
	Role string
	// Wait is what the step mostly waits on.
	Wait Wait
	// Codes are the step's own error codes; any step can also end with StepCodes.
	Codes []string

	run func(*unit, context.Context) (any, error)
}

// StepCodes can end any step: its timeout, a station fault, an operator's abort, a TPM in
// dictionary-attack lockout.
var StepCodes = []string{CodeStepTimeout, CodeInternal, CodeAborted, CodeTPMLockout}

// FirstCheckCodes are the codes of a session refused by its first checks, before it has a
// slot or writes anything of the unit (they end no step: see Runner.Run).
var FirstCheckCodes = []string{
	CodeAgentError, CodeEKCertMissing, CodeEKUntrusted, CodeEKCertInvalid, CodeEKMismatch,
	CodeEKChanged, CodeEKBound, CodeSerialBusy, CodeScrapped, CodeAborted, CodeOnHold,
	CodeNotAuthorized, CodeActivationFailed, CodeAlreadyProvisioned, CodeTPMLockout,
}

var (
	keyCodes     = []string{CodeKeyAttributes, CodeKeyNameMismatch, CodeKeyChanged, CodeHandleOccupied, CodeAgentError}
	csrCodes     = []string{CodeCSRInvalid, CodeAgentError}
	enrollCodes  = []string{CodeCARejected, CodeCAUnavailable, CodeCertInvalid}
	installCodes = []string{CodeInstallFailed, CodeReadbackMismatch}
)

// Table is the workflow, in order.
var Table = []StepDesc{
	{Name: StepIdentify, Wait: WaitTPM,
		run: func(u *unit, _ context.Context) (any, error) { return u.idSummary, nil }},
	{Name: StepVerifyEK, Wait: WaitStation, run: (*unit).verifyEK},
	{Name: StepAuthorize, Wait: WaitStation, Codes: []string{CodeFileRootsUnsuitable, CodePlatformDisabled},
		run: (*unit).authorize},
	{Name: StepIDevIDKey, Role: roleIDevID, Wait: WaitTPM, Codes: keyCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.createKey(ctx, roleIDevID) }},
	{Name: StepIDevIDProof, Resumable: true, Role: roleIDevID, Wait: WaitTPM,
		Codes: []string{CodeActivationFailed, CodeAgentError, CodeEKBound, CodeEKChanged},
		run:   func(u *unit, ctx context.Context) (any, error) { return u.proveResidency(ctx, roleIDevID) }},
	{Name: StepIAKKey, Role: roleIAK, Wait: WaitTPM, Codes: keyCodes, run: (*unit).createIAK},
	{Name: StepIAKProof, Resumable: true, Role: roleIAK, Wait: WaitTPM, Codes: []string{CodeActivationFailed, CodeAgentError},
		run: func(u *unit, ctx context.Context) (any, error) { return u.proveResidency(ctx, roleIAK) }},
	{Name: StepIAKCertify, Resumable: true, Role: roleIAK, Wait: WaitTPM,
		Codes: []string{CodeIAKNotActivated, CodeCertifyInvalid, CodeCertifySignature, CodeCertifyNameMismatch, CodeCertifyNonce, CodeKeyAttributes, CodeAgentError},
		run:   (*unit).certifyIDevID},
	{Name: StepIAKCSR, Resumable: true, Role: roleIAK, Wait: WaitTPM, Codes: csrCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.buildCSR(ctx, roleIAK) }},
	{Name: StepIAKEnroll, Resumable: true, Role: roleIAK, Wait: WaitCA, Codes: enrollCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.enroll(ctx, roleIAK) }},
	{Name: StepIDevIDCSR, Resumable: true, Role: roleIDevID, Wait: WaitTPM, Codes: csrCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.buildCSR(ctx, roleIDevID) }},
	{Name: StepIDevIDEnroll, Resumable: true, Role: roleIDevID, Wait: WaitCA, Codes: enrollCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.enroll(ctx, roleIDevID) }},
	{Name: StepIDevIDInstall, Resumable: true, Role: roleIDevID, Wait: WaitTPM, Codes: installCodes,
		run: (*unit).installIDevID},
	{Name: StepLDevIDKey, Role: roleLDevID, Wait: WaitTPM, Codes: keyCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.createKey(ctx, roleLDevID) }},
	{Name: StepLDevIDProof, Resumable: true, Role: roleLDevID, Wait: WaitTPM, Codes: []string{CodeActivationFailed, CodeAgentError},
		run: func(u *unit, ctx context.Context) (any, error) { return u.proveResidency(ctx, roleLDevID) }},
	{Name: StepLDevIDCSR, Resumable: true, Role: roleLDevID, Wait: WaitTPM, Codes: csrCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.buildCSR(ctx, roleLDevID) }},
	{Name: StepLDevIDEnroll, Resumable: true, Role: roleLDevID, Wait: WaitCA, Codes: enrollCodes,
		run: func(u *unit, ctx context.Context) (any, error) { return u.enroll(ctx, roleLDevID) }},
	{Name: StepLDevIDInstall, Resumable: true, Role: roleLDevID, Wait: WaitUnit, Codes: installCodes,
		run: (*unit).installLDevID},
	{Name: StepOnboarding, Resumable: true, Wait: WaitUnit, Codes: installCodes, run: (*unit).onboarding},
	{Name: StepVerify, Wait: WaitTPM, Codes: []string{CodeReadbackMismatch, CodeProofFailed}, run: (*unit).verify},
	{Name: StepFieldCheck, Resumable: true, Role: roleLDevID, Wait: WaitCA,
		Codes: []string{CodeFieldCheckRejected, CodeFieldCheckUnavailable, CodeFieldCheckNoClientAuth, CodeCertInvalid, CodeCSRInvalid, CodeAgentError},
		run:   (*unit).fieldCheck},
	{Name: StepComplete, Wait: WaitStation, run: (*unit).complete},
}

// Steps lists the workflow steps' names in order.
var Steps = func() []string {
	names := make([]string, len(Table))
	for i, d := range Table {
		names[i] = d.Name
	}
	return names
}()

// stepByName indexes Table.
var stepByName = func() map[string]*StepDesc {
	m := make(map[string]*StepDesc, len(Table))
	for i := range Table {
		m[Table[i].Name] = &Table[i]
	}
	return m
}()

// roleFor is the DevID key step works on.
func roleFor(step string) string { return stepByName[step].Role }

// StepTableMarkdown renders Table as the Markdown table docs/workflow.md carries (a test keeps
// the two equal).
func StepTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| # | step | resumable | key | waits on | its own codes |\n|---|---|---|---|---|---|\n")
	for i, d := range Table {
		resumable, key := "", d.Role
		if d.Resumable {
			resumable = "yes"
		}
		if key == "" {
			key = "-"
		}
		codes := "-"
		if len(d.Codes) > 0 {
			codes = "`" + strings.Join(d.Codes, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| %d | `%s` | %s | %s | %s | %s |\n", i+1, d.Name, resumable, key, d.Wait, codes)
	}
	fmt.Fprintf(&b, "\nEvery step can also end with `%s`. A session refused by its first checks, before it has a slot, ends with one of `%s`.\n",
		strings.Join(StepCodes, "`, `"), strings.Join(slices.Sorted(slices.Values(FirstCheckCodes)), "`, `"))
	return b.String()
}
