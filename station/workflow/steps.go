package workflow

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/devid-station/devid/device-agent/tpm/tcgek"
	"github.com/google/go-tpm/tpm2"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
	"github.com/devid-station/devid/station/ekcert"
	"github.com/devid-station/devid/station/journal"
	"github.com/devid-station/devid/station/store"
)

const (
	roleIDevID = string(store.RoleIDevID)
	roleLDevID = string(store.RoleLDevID)
)

// identify has the agent report its TPM and EKs (evidence, kept in memory: the journal gets
// a bounded summary once the session is admitted).
func (u *unit) identify(ctx context.Context) error {
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}})
	if err != nil {
		return err
	}
	u.info = res.GetInfo()
	id := &journal.Identify{Info: u.info, Hello: u.agent.Hello()}
	// One EK at a time, in order of preference: recreating an EK that is not persisted is a
	// key generation (seconds for RSA on a real TPM), so the next type is read only when the
	// preferred one has no certificate, and only types whose certificate index the TPM lists
	// are read (all of them when it lists none: the read then reports what is missing).
	algs := heldPreferred(u.r.cfg.EKAlgorithms, u.info)
	for _, alg := range algs {
		res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{Algorithms: []agentv1.KeyAlgorithm{alg}}}})
		if err != nil {
			return err
		}
		id.EKs = append(id.EKs, res.GetReadEk().GetKeys()...)
		id.Chain = res.GetReadEk().GetChainCertificates()
		if slices.ContainsFunc(res.GetReadEk().GetKeys(), func(k *agentv1.EndorsementKey) bool { return len(k.GetCertificate()) > 0 }) {
			break
		}
	}
	u.id = id
	sum := journal.IdentifyResult{Manufacturer: clip(u.info.GetManufacturerId()), VendorString: clip(u.info.GetVendorString()),
		FirmwareVersion: u.info.GetFirmwareVersion(), BootID: clip(id.Hello.GetBootId()), FixtureSlot: clip(id.Hello.GetFixtureSlot())}
	for _, k := range id.EKs {
		sum.EKs = append(sum.EKs, journal.EKSummary{Algorithm: k.GetAlgorithm().String(), Certificate: len(k.GetCertificate()) > 0, Persisted: k.GetPersisted()})
	}
	for _, t := range tcgek.Held(u.info.GetPersistentHandles(), u.info.GetNvIndices()) {
		sum.EKsHeld = append(sum.EKsHeld, t.Name)
	}
	if len(sum.EKs) > len(u.r.cfg.EKAlgorithms) {
		sum.EKs = sum.EKs[:len(u.r.cfg.EKAlgorithms)]
	}
	u.idSummary = sum
	return nil
}

// claimMax bounds each string from the agent that the journal keeps (claims, error messages).
const claimMax = 128

// clip cuts an agent's claim to claimMax bytes of valid UTF-8.
func clip(s string) string {
	if len(s) > claimMax {
		s = s[:claimMax]
	}
	return strings.ToValidUTF8(s, "")
}

// verifiedReport is the identify report as the journal keeps it (verify_ek's intent): the
// agent's claims cut to their bounds, and of the EKs only the verified one with its
// certificate and public area; the unverified chain candidates are left out.
func (u *unit) verifiedReport() []byte {
	info := proto.CloneOf(u.id.Info)
	info.ManufacturerId, info.VendorString, info.Family = clip(info.GetManufacturerId()), clip(info.GetVendorString()), clip(info.GetFamily())
	h := u.id.Hello
	out := journal.Identify{Info: info, Hello: &agentv1.Hello{ProtocolVersion: h.GetProtocolVersion(),
		AgentVersion: clip(h.GetAgentVersion()), HardwareSerial: h.GetHardwareSerial(), SerialSource: clip(h.GetSerialSource()),
		FixtureSlot: clip(h.GetFixtureSlot()), BootId: clip(h.GetBootId()), TpmTransport: clip(h.GetTpmTransport()),
		SessionAttempt: h.GetSessionAttempt()}}
	for _, k := range u.id.EKs {
		e := &agentv1.EndorsementKey{Algorithm: k.GetAlgorithm(), Persisted: k.GetPersisted(), Handle: k.GetHandle(), CertificateIndex: k.GetCertificateIndex()}
		if k.GetAlgorithm() == u.ekAlg {
			e.PublicArea, e.Certificate = k.GetPublicArea(), k.GetCertificate()
		}
		if len(out.EKs) < len(u.r.cfg.EKAlgorithms) {
			out.EKs = append(out.EKs, e)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// ekTypes maps the agent contract's EK algorithms to the TCG EK types.
var ekTypes = map[agentv1.KeyAlgorithm]tcgek.Type{
	agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048: tcgek.RSA2048,
	agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256: tcgek.ECCP256,
	agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P384: tcgek.ECCP384,
	agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_3072: tcgek.RSA3072,
}

// heldPreferred returns the preferred EK algorithms whose certificate index the TPM lists,
// in order of preference; all of prefs when it lists none of them.
func heldPreferred(prefs []agentv1.KeyAlgorithm, info *agentv1.InfoResult) []agentv1.KeyAlgorithm {
	var out []agentv1.KeyAlgorithm
	for _, a := range prefs {
		if slices.Contains(info.GetNvIndices(), ekTypes[a].CertIndex) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return prefs
	}
	return out
}

// ekFingerprint identifies a TPM by the SHA-256 of its EK public key (SubjectPublicKeyInfo).
func ekFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// checkEK verifies the reported EK certificate chain and public area; it writes nothing.
func (u *unit) checkEK() error {
	id := u.id
	var intermediates []*x509.Certificate
	intermediates = append(intermediates, u.r.cfg.EKIntermediates...)
	for _, der := range id.Chain {
		if c, err := x509.ParseCertificate(der); err == nil {
			intermediates = append(intermediates, c) // untrusted: only a path candidate
		}
	}
	prefs := u.r.cfg.EKAlgorithms
	var lastErr error
	for _, alg := range prefs {
		i := slices.IndexFunc(id.EKs, func(k *agentv1.EndorsementKey) bool { return k.GetAlgorithm() == alg })
		if i < 0 || len(id.EKs[i].GetCertificate()) == 0 {
			continue
		}
		ek := id.EKs[i]
		info, err := ekcert.VerifyEKCertWith(ek.GetCertificate(), func(c *x509.Certificate) ([]*x509.Certificate, error) {
			return u.r.chains.verify(c, u.r.ekRoots, intermediates, u.r.cfg.Clock.Now())
		})
		if err != nil {
			code := CodeEKCertInvalid
			if errors.Is(err, ekcert.ErrUntrusted) {
				code = CodeEKUntrusted
			}
			lastErr = fail(code, err, "%s EK certificate", alg)
			continue
		}
		key, typ, err := attest.CheckEK(ek.GetPublicArea(), info.Certificate)
		if err != nil {
			return fail(CodeEKMismatch, err, "%s EK public area", alg)
		}
		if typ.Name != ekTypes[alg].Name {
			return fail(CodeEKMismatch, nil, "the EK reported as %s follows the %s template", alg, typ.Name)
		}
		fp, err := ekFingerprint(info.PublicKey)
		if err != nil {
			return fail(CodeInternal, err, "EK fingerprint")
		}
		sum := sha256.Sum256(info.Certificate.Raw)
		u.ekAlg, u.ek, u.ekCert, u.ekFP, u.ekCertSHA = alg, key, info, fp, hex.EncodeToString(sum[:])
		return nil
	}
	if lastErr != nil {
		return lastErr
	}
	return fail(CodeEKCertMissing, nil, "no EK certificate for %v", prefs)
}

// verifyEK journals what checkEK verified before the session was admitted. The EK is bound to
// the serial only once the TPM proved it holds it (proveResidency).
func (u *unit) verifyEK(context.Context) (any, error) {
	return journal.VerifyEKResult{
		Algorithm: u.ekAlg.String(), Fingerprint: u.ekFP, CertSHA256: u.ekCertSHA,
		Issuer: u.ekCert.Certificate.Issuer.String(), Manufacturer: u.ekCert.Manufacturer,
	}, nil
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

// checkAuthorized finds the open work order of a configured profile that holds the serial; it
// writes nothing.
func (u *unit) checkAuthorized(ctx context.Context) error {
	names := make([]string, 0, len(u.r.cfg.Profiles))
	for n := range u.r.cfg.Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		wo, err := u.r.cfg.Journal.Authorize(ctx, u.serial, n)
		if errors.Is(err, store.ErrNotAuthorized) {
			continue
		}
		if err != nil {
			return fail(CodeInternal, err, "authorizing")
		}
		u.profile, u.workOrder = u.r.cfg.Profiles[n], wo.ID
		return nil
	}
	return fail(CodeNotAuthorized, nil, "serial %q is in no open work order of a configured profile", u.serial)
}

// recordAuthorization sets on s what authorize records: the work order and profile, and for
// listings (which then read no verify_ek record) the EK certificate the first checks verified
// and the fixture slot the agent claimed.
func (u *unit) recordAuthorization(s *store.UnitState) {
	s.WorkOrderID, s.Profile = u.workOrder, u.profile.Name
	if u.ekCert != nil {
		s.EKCertSHA256, s.FixtureSlot = u.ekCertSHA, clip(u.id.Hello.GetFixtureSlot())
	}
}

// authorizationRecorded reports whether the unit's state holds what recordAuthorization sets.
func (u *unit) authorizationRecorded() bool {
	var want store.UnitState
	u.recordAuthorization(&want)
	return u.state.WorkOrderID == want.WorkOrderID && u.state.Profile == want.Profile &&
		u.state.EKCertSHA256 == want.EKCertSHA256 && u.state.FixtureSlot == want.FixtureSlot
}

// authorize records the work order checkAuthorized found, once the unit can take the profile's
// files: a unit that cannot never gets a key.
func (u *unit) authorize(ctx context.Context) (any, error) {
	if err := checkFileRoots(u.profile, u.agent.Hello().GetFileRoots()); err != nil {
		return nil, err
	}
	// open recorded them already unless the unit was reopened.
	if !u.authorizationRecorded() {
		st, err := u.r.cfg.Journal.UpdateUnit(ctx, u.serial, func(s *store.UnitState) error {
			u.recordAuthorization(s)
			return nil
		})
		if err != nil {
			return nil, fail(CodeInternal, err, "recording the work order")
		}
		u.state = st
	}
	// Before the first key: a unit that cannot take its IDevID NV index never gets one.
	if err := u.checkPlatform(); err != nil {
		return nil, err
	}
	return journal.AuthorizeResult{WorkOrder: u.workOrder, Profile: u.profile.Name}, nil
}

// TPM_PT_STARTUP_CLEAR bits (TPMA_STARTUP_CLEAR).
const (
	phEnable   = 1 << 0
	phEnableNV = 1 << 3
)

// checkPlatform fails at once, before any key or certificate, when the profile defines the
// IDevID NV index with platform authorization and the TPM reports the platform hierarchy or its
// NV use disabled. An agent that does not report TPM_PT_STARTUP_CLEAR is not stopped here: the
// NV write would fail later.
func (u *unit) checkPlatform() error {
	if u.profile.IDevIDNV.Auth != agentv1.Hierarchy_HIERARCHY_PLATFORM || u.info == nil || u.info.StartupClear == nil {
		return nil
	}
	if sc := u.info.GetStartupClear(); sc&phEnable == 0 || sc&phEnableNV == 0 {
		return fail(CodePlatformDisabled, nil, "profile %s defines the IDevID NV index %#x with platform authorization, but the TPM's platform hierarchy is disabled (TPM_PT_STARTUP_CLEAR %#x); use idevid_nv.auth \"owner\" for units whose firmware disables it",
			u.profile.Name, u.profile.IDevIDNV.Index, sc)
	}
	return nil
}

func (u *unit) keyProfile(role string) KeyProfile {
	switch role {
	case roleIDevID:
		return u.profile.IDevID
	case roleIAK:
		return *u.profile.IAK
	}
	return u.profile.LDevID
}

func (u *unit) createKey(ctx context.Context, role string) (any, error) {
	kp := u.keyProfile(role)
	req := &agentv1.CreateKeyRequest{Algorithm: kp.Algorithm, Handle: kp.Handle}
	step := StepIDevIDKey
	if role == roleIDevID {
		req.Role = agentv1.KeyRole_KEY_ROLE_IDEVID
	} else {
		req.Role, req.SrkHandle, step = agentv1.KeyRole_KEY_ROLE_LDEVID, u.profile.SRKHandle, StepLDevIDKey
	}
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_CreateKey{CreateKey: req}})
	if err != nil {
		return nil, err
	}
	ck := res.GetCreateKey()
	key, err := attest.CheckDevID(ck.GetPublicArea())
	if err != nil {
		return nil, fail(CodeKeyAttributes, err, "%s key", role)
	}
	return u.recordKey(ctx, role, step, kp, key, ck)
}

// recordKey checks a key the agent reported (checked by attest already) against the profile
// and what was recorded, and records it for the unit: the profile's algorithm, the reported
// Name equal to its public area's, the Name recorded by an earlier run of step.
func (u *unit) recordKey(ctx context.Context, role, step string, kp KeyProfile, key *attest.Key, ck *agentv1.CreateKeyResult) (any, error) {
	if want := kp.Algorithm; algorithmOf(key) != want {
		return nil, fail(CodeKeyAttributes, nil, "%s key is %s, profile wants %s", role, algorithmOf(key), want)
	}
	if !bytes.Equal(key.Name, ck.GetName()) {
		return nil, fail(CodeKeyNameMismatch, nil, "%s key: the Name the agent reported is not the Name of its public area", role)
	}
	if prev, ok := u.results[step]; ok {
		var p journal.KeyResult
		if err := json.Unmarshal(prev, &p); err == nil && !bytes.Equal(p.Name, key.Name) {
			return nil, fail(CodeKeyChanged, nil, "%s key at %#x is not the key recorded earlier", role, kp.Handle)
		}
	}
	u.keys[role] = &devKey{role: store.Role(role), profile: kp, key: key}
	if _, err := u.r.cfg.Journal.UpdateUnit(ctx, u.serial, func(s *store.UnitState) error {
		if s.Keys == nil {
			s.Keys = map[string]store.KeyRef{}
		}
		s.Keys[role] = store.KeyRef{Handle: kp.Handle, Name: key.Name}
		return nil
	}); err != nil {
		return nil, fail(CodeInternal, err, "recording the %s key", role)
	}
	return journal.KeyResult{Handle: kp.Handle, Public: key.Raw, Name: key.Name, Existed: ck.GetExisted()}, nil
}

func algorithmOf(k *attest.Key) agentv1.KeyAlgorithm {
	if k.Public.Type == tpm2.TPMAlgRSA {
		return agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048
	}
	return agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256
}

// proveResidency has the TPM prove that the role's key sits beside the EK (credential
// activation). The IDevID proof is also the TPM's proof that it holds the EK: only then is the
// EK bound to the serial.
func (u *unit) proveResidency(ctx context.Context, role string) (any, error) {
	k := u.keys[role]
	if err := u.activate(ctx, role, k.profile.Handle, k.key); err != nil {
		return nil, err
	}
	k.activated = true
	if role == roleIDevID {
		if err := u.r.cfg.Journal.BindEK(ctx, u.ekFP, u.serial); err != nil {
			switch {
			case errors.Is(err, store.ErrEKBoundElsewhere):
				return nil, fail(CodeEKBound, err, "EK %s belongs to another serial", short(u.ekFP))
			case errors.Is(err, store.ErrEKMismatch):
				return nil, fail(CodeEKChanged, err, "serial is bound to another TPM")
			}
			return nil, fail(CodeInternal, err, "binding EK")
		}
	}
	return journal.ProofResult{Name: k.key.Name, EKAlg: u.ekAlg.String()}, nil
}

// activate proves, by credential activation, that the TPM holds the EK and the object with
// key's Name at handle.
func (u *unit) activate(ctx context.Context, role string, handle uint32, key *attest.Key) error {
	ch, err := attest.NewChallenge(nil, u.ek, key)
	if err != nil {
		return fail(CodeInternal, err, "making a credential")
	}
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{
		KeyHandle: handle, EkAlgorithm: u.ekAlg, CredentialBlob: ch.CredentialBlob, EncryptedSecret: ch.EncryptedSecret,
	}}})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code == CodeAgentError && !u.tpmUnreached(err) {
			e.Code = CodeActivationFailed
		}
		return err
	}
	if err := ch.Verify(res.GetActivateCredential().GetSecret()); err != nil {
		return fail(CodeActivationFailed, err, "%s key is not proven to reside beside the EK", role)
	}
	u.proven = true
	return nil
}

// maxUnreached bounds the credential activations of a proof step that a unit's agent may report
// as not taken to its TPM (see tpmUnreached) before the next one counts as failed.
const maxUnreached = 3

// tpmUnreached reports whether err, an agent's error answering a credential activation, says
// the agent could not reach its TPM (ERROR_CODE_TPM without a TPM response code: a TPM reset or
// a power loss mid-command), and the step has had fewer than maxUnreached such answers since
// the last rework. Such an answer is no verdict on the credential: the unit fails AGENT_ERROR
// (class other) and proves itself again at its next connection, with a new credential, instead
// of going on hold. It is the agent's word, so it is believed a bounded number of times: a TPM
// that cannot prove it holds the EK gains nothing from it, and an agent that keeps saying it
// gets ACTIVATION_FAILED.
func (u *unit) tpmUnreached(err error) bool {
	var ae *AgentError
	return errors.As(err, &ae) && ae.Code == agentv1.ErrorCode_ERROR_CODE_TPM && ae.TPMRC == 0 &&
		u.unreached[u.step] < maxUnreached
}

// request returns the subject and extensions the station dictates for role. They follow from
// the profile, the serial and the verified EK certificate alone, so a unit builds them once per
// key (the CSR step asks for them, the enroll step checks the certificate against them).
func (u *unit) request(role string) ([]byte, []pkix.Extension, error) {
	k := u.keys[role]
	if k != nil && k.subject != nil {
		return k.subject, k.exts, nil
	}
	subject, exts, err := u.buildRequest(role)
	if err == nil && k != nil {
		k.subject, k.exts = subject, exts
	}
	return subject, exts, err
}

// buildRequest is request without the memo.
func (u *unit) buildRequest(role string) ([]byte, []pkix.Extension, error) {
	kp := u.keyProfile(role)
	subject, err := kp.Subject.subjectDER(u.serial)
	if err != nil {
		return nil, nil, err
	}
	var hwType asn1.ObjectIdentifier
	var hwSerial []byte
	switch kp.HardwareModuleName {
	case HWModuleTPM:
		if u.ekCert == nil {
			return nil, nil, errors.New("no verified EK certificate to name the TPM by")
		}
		hwType, hwSerial = OIDTPM20, u.ekCert.Certificate.SerialNumber.Bytes()
	case HWModuleSerial:
		hwType, hwSerial = kp.HardwareModuleType, []byte(u.serial)
	case HWModuleNone:
	default:
		return nil, nil, fmt.Errorf("hardware module name %q", kp.HardwareModuleName)
	}
	san, ok, err := sanExtension(hwType, hwSerial)
	if err != nil {
		return nil, nil, err
	}
	var exts []pkix.Extension
	if ok {
		exts = append(exts, san)
	}
	if kp.CertificatePolicies {
		policies := devIDPolicies
		if role == roleIAK {
			policies = iakPolicies
		}
		pol, err := policiesExtension(policies)
		if err != nil {
			return nil, nil, err
		}
		exts = append(exts, pol)
	}
	return subject, exts, nil
}

func (u *unit) buildCSR(ctx context.Context, role string) (any, error) {
	csr, err := u.newCSR(ctx, role)
	if err != nil {
		return nil, err
	}
	u.keys[role].csr = csr
	return journal.CSRResult{CSR: csr}, nil
}

// newCSR has the TPM sign a CSR for role's key with the subject and extensions the station
// dictates (BuildCsr), and checks it.
func (u *unit) newCSR(ctx context.Context, role string) ([]byte, error) {
	k := u.keys[role]
	subject, exts, err := u.request(role)
	if err != nil {
		return nil, fail(CodeInternal, err, "building the %s request", role)
	}
	req := &agentv1.BuildCSRRequest{KeyHandle: k.profile.Handle, Subject: subject}
	for _, e := range exts {
		req.Extensions = append(req.Extensions, &agentv1.Extension{Oid: e.Id.String(), Critical: e.Critical, Value: e.Value})
	}
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_BuildCsr{BuildCsr: req}})
	if err != nil {
		return nil, err
	}
	csr := res.GetBuildCsr().GetCsr()
	if _, err := attest.CheckCSR(csr, k.key, subject, exts); err != nil {
		return nil, fail(CodeCSRInvalid, err, "%s CSR", role)
	}
	return csr, nil
}

func (u *unit) enroll(ctx context.Context, role string) (any, error) {
	k := u.keys[role]
	if issued, ok, err := u.recorded(ctx, role); err != nil || ok {
		if err != nil {
			return nil, err
		}
		u.log.Info("using the certificate recorded before the station stopped; no new request", "step", u.step, "sha256", sha(issued.Leaf.Raw))
		k.cert, k.chain = issued.Leaf, issued.Chain
		return journal.EnrollResult{Cert: issued.Leaf.Raw, Chain: chainDER(issued.Chain)}, nil
	}
	issuer := u.r.cfg.Issuers[k.profile.Issuer]
	req := EnrollRequest{Serial: u.serial, CSR: k.csr, OnRetry: func() { u.answerLost.Store(true) }}
	if role == roleLDevID && u.profile.LDevIDAuth == AuthIDevIDMTLS {
		id := u.keys[roleIDevID]
		req.ClientCert = &ClientCert{
			Chain: append([]*x509.Certificate{id.cert}, id.chain...),
			Key:   &agentSigner{ctx: ctx, u: u, handle: id.profile.Handle, pub: id.cert.PublicKey},
		}
	}
	requested := u.r.cfg.Clock.Now()
	issued, err := issuer.Enroll(ctx, req)
	if err != nil {
		if ua, ok := errors.AsType[UnusableAnswer](err); ok {
			for _, c := range ua.IssuedCertificates() {
				if c.IsCA {
					continue // a CA's own certificate in the answer, not an issuance
				}
				if _, rerr := u.recordCertificate(ctx, k.role, c.Raw); rerr != nil {
					u.log.Error("recording a refused certificate", "step", u.step, "error", rerr)
				} else {
					u.refuseCert(ctx, c.Raw, ua.Error())
				}
				u.event(ctx, eventCertRefused, "the CA answered with a certificate the station refused", map[string]string{"sha256": sha(c.Raw), "role": role})
			}
		}
		if _, ok := errors.AsType[*Error](err); ok {
			return nil, err
		}
		return nil, fail(CodeCAUnavailable, err, "enrolling the %s certificate at %s", role, k.profile.Issuer)
	}
	// Record first: the store must know every certificate a CA issued, valid or not.
	rec, err := u.recordCertificate(ctx, k.role, issued.Leaf.Raw, chainDER(issued.Chain)...)
	if err != nil {
		return nil, fail(CodeInternal, err, "recording the %s certificate", role)
	}
	if rec.Duplicate {
		u.event(ctx, eventDuplicateCert, "a second "+role+" certificate was issued for this unit", map[string]string{"sha256": rec.SHA256})
	}
	if err := u.checkIssued(role, issued, requested); err != nil {
		u.refuseCert(ctx, issued.Leaf.Raw, err.Error())
		return nil, err
	}
	k.cert, k.chain = issued.Leaf, issued.Chain
	out := journal.EnrollResult{Cert: issued.Leaf.Raw, Duplicate: rec.Duplicate}
	for _, c := range issued.Chain {
		out.Chain = append(out.Chain, c.Raw)
	}
	return out, nil
}

// recordCertificate records a certificate a CA issued for the unit: a fact, whatever became of
// the session (recording).
func (u *unit) recordCertificate(ctx context.Context, role store.Role, der []byte, chain ...[]byte) (store.CertRecord, error) {
	ctx, cancel := recording(ctx)
	defer cancel()
	return u.r.cfg.Journal.RecordCertificate(ctx, u.serial, role, der, chain...)
}

// refuseCert marks a recorded certificate refused: issued, never installed, a revocation
// candidate.
func (u *unit) refuseCert(ctx context.Context, der []byte, reason string) {
	ctx, cancel := recording(ctx)
	defer cancel()
	if err := u.r.cfg.Journal.SetCertificateStatus(ctx, u.serial, sha(der), store.CertRefused, reason); err != nil {
		u.log.Error("marking a certificate refused", "step", u.step, "error", err)
	}
}

// NotBeforeSkew is how far a DevID certificate's NotBefore may lie from the time the station
// asked for it: IEEE 802.1AR wants the creation time, give or take a small clock skew.
const NotBeforeSkew = 5 * time.Minute

// checkIssued verifies a CA's answer: the attested key, the subject and SAN requested, not a
// CA, NotBefore at the issuance (between requested minus NotBeforeSkew and now plus
// NotBeforeSkew), and a chain to the CA's roots.
func (u *unit) checkIssued(role string, issued *Issued, requested time.Time) error {
	k := u.keys[role]
	leaf := issued.Leaf
	subject, exts, err := u.request(role)
	if err != nil {
		return fail(CodeInternal, err, "rebuilding the %s request", role)
	}
	if !publicKeyEqual(leaf.PublicKey, k.key.PublicKey) {
		return fail(CodeCertInvalid, nil, "%s certificate is for another key", role)
	}
	if !bytes.Equal(leaf.RawSubject, subject) {
		return fail(CodeCertInvalid, nil, "%s certificate subject %q is not the one requested", role, leaf.Subject)
	}
	if leaf.IsCA {
		return fail(CodeCertInvalid, nil, "%s certificate is a CA certificate", role)
	}
	for _, want := range exts {
		if want.Id.Equal(oidCertificatePolicies) {
			if !hasPolicies(leaf.PolicyIdentifiers, want.Value) {
				return fail(CodeCertInvalid, nil, "%s certificate lacks the requested certificate policies (has %v)", role, leaf.PolicyIdentifiers)
			}
			continue
		}
		i := slices.IndexFunc(leaf.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(want.Id) })
		if i < 0 || !sameHardwareModuleName(leaf.Extensions[i].Value, want.Value) {
			return fail(CodeCertInvalid, nil, "%s certificate lacks the requested hardwareModuleName", role)
		}
	}
	if role == roleIAK {
		if err := checkIAKCert(leaf); err != nil {
			return err
		}
	}
	now := u.r.cfg.Clock.Now()
	if nb := leaf.NotBefore; nb.Before(requested.Add(-NotBeforeSkew)) || nb.After(now.Add(NotBeforeSkew)) {
		return fail(CodeCertInvalid, nil, "%s certificate NotBefore %s is not its issuance time (requested %s, %v skew allowed)",
			role, nb.UTC().Format(time.RFC3339), requested.UTC().Format(time.RFC3339), NotBeforeSkew)
	}
	issuer := u.r.cfg.Issuers[k.profile.Issuer]
	if _, err := u.r.chains.verify(leaf, issuer.Roots(), issued.Chain, now); err != nil {
		return fail(CodeCertInvalid, err, "%s certificate does not chain to %s", role, k.profile.Issuer)
	}
	return nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

func (u *unit) installIDevID(ctx context.Context) (any, error) {
	k, nv := u.keys[roleIDevID], u.profile.IDevIDNV
	data := k.cert.Raw
	_, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{
		Index: nv.Index, Auth: nv.Auth, Data: data, WriteLock: nv.Lock,
	}}})
	if err != nil && !isAgentCode(err, agentv1.ErrorCode_ERROR_CODE_NV_LOCKED) {
		return nil, fail(CodeInstallFailed, err, "writing the IDevID certificate to NV %#x", nv.Index)
	}
	// A locked index is fine only if it already holds exactly this certificate (a resumed
	// install); the read-back decides.
	if err := u.readBackNV(ctx, nv, data); err != nil {
		return nil, err
	}
	return journal.InstallResult{Where: fmt.Sprintf("nv:%#x", nv.Index), SHA256: sha(data), Locked: nv.Lock}, nil
}

func (u *unit) readBackNV(ctx context.Context, nv NVProfile, want []byte) error {
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: nv.Index}}})
	if err != nil {
		return fail(CodeReadbackMismatch, err, "reading back NV %#x", nv.Index)
	}
	r := res.GetNvRead()
	if !bytes.Equal(r.GetData(), want) {
		return fail(CodeReadbackMismatch, nil, "NV %#x holds %d bytes that are not the IDevID certificate", nv.Index, len(r.GetData()))
	}
	if nv.Lock && !nvWriteLocked(r.GetAttributes()) {
		return fail(CodeReadbackMismatch, nil, "NV %#x is not write-locked", nv.Index)
	}
	return nil
}

// lastNVAttributes remembers the last TPMA_NV decoded: every unit of a line reports the same
// attributes, and go-tpm decodes them by reflection.
var lastNVAttributes atomic.Pointer[nvAttrMemo]

type nvAttrMemo struct {
	bits  uint32
	attrs tpm2.TPMANV
}

// nvWriteLocked reports whether the TPMA_NV the agent reports has TPMA_NV_WRITELOCKED.
func nvWriteLocked(a uint32) bool {
	if m := lastNVAttributes.Load(); m != nil && m.bits == a {
		return m.attrs.WriteLocked
	}
	m := &nvAttrMemo{bits: a, attrs: nvAttributes(a)}
	lastNVAttributes.Store(m)
	return m.attrs.WriteLocked
}

// nvAttributes decodes TPMA_NV as the agent reports it.
func nvAttributes(a uint32) tpm2.TPMANV {
	attrs, err := tpm2.Unmarshal[tpm2.TPMANV](binary.BigEndian.AppendUint32(nil, a))
	if err != nil { // four bytes always decode
		panic(err)
	}
	return *attrs
}

func isAgentCode(err error, code agentv1.ErrorCode) bool {
	e, ok := errors.AsType[*AgentError](err)
	return ok && e.Code == code
}

// ldevidPEM is the LDevID file: the certificate, then its chain.
func (u *unit) ldevidPEM() []byte {
	k := u.keys[roleLDevID]
	var b bytes.Buffer
	for _, c := range append([]*x509.Certificate{k.cert}, k.chain...) {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func (u *unit) installLDevID(ctx context.Context) (any, error) {
	data := u.ldevidPEM()
	if err := u.writeFile(ctx, u.profile.LDevIDCertPath, data, 0o644); err != nil {
		return nil, err
	}
	return journal.InstallResult{Where: u.profile.LDevIDCertPath, SHA256: sha(data)}, nil
}

// writeFile writes a file on the unit and reads it back.
func (u *unit) writeFile(ctx context.Context, path string, data []byte, mode uint32) error {
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: path, Content: data, Mode: mode}}})
	if err != nil {
		return fail(CodeInstallFailed, err, "writing %s", path)
	}
	sum := sha256.Sum256(data)
	if !bytes.Equal(res.GetWriteFile().GetSha256(), sum[:]) {
		return fail(CodeReadbackMismatch, nil, "%s: the agent reports another digest", path)
	}
	return u.readBackFile(ctx, path, data)
}

func (u *unit) readBackFile(ctx context.Context, path string, want []byte) error {
	res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: path}}})
	if err != nil {
		return fail(CodeReadbackMismatch, err, "reading back %s", path)
	}
	if !bytes.Equal(res.GetReadFile().GetContent(), want) {
		return fail(CodeReadbackMismatch, nil, "%s does not hold what was written", path)
	}
	return nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (u *unit) onboardingContent(pin string) ([]byte, error) {
	o := u.profile.Onboarding
	k := u.keys[roleLDevID]
	return o.Render(OnboardingInput{Serial: u.serial, LDevIDCertPath: u.profile.LDevIDCertPath, LDevIDHandle: k.profile.Handle, LDevIDCert: k.cert, PIN: pin})
}

// pinFile is the content of the unit's PIN file.
func pinFile(pin string) []byte { return []byte(pin + "\n") }

func (u *unit) onboarding(ctx context.Context) (any, error) {
	o := u.profile.Onboarding
	if o == nil {
		return journal.InstallResult{Where: "none"}, nil
	}
	res := journal.OnboardingResult{Files: map[string]string{}}
	if o.TrustBundlePath != "" {
		if err := u.writeFile(ctx, o.TrustBundlePath, o.TrustBundle, 0o644); err != nil {
			return nil, err
		}
		res.Files[o.TrustBundlePath] = sha(o.TrustBundle)
	}
	var pin string
	if o.PINPath != "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, fail(CodeInternal, err, "drawing a PIN")
		}
		pin = hex.EncodeToString(b)
		if err := u.writeFile(ctx, o.PINPath, pinFile(pin), 0o600); err != nil {
			return nil, err
		}
		res.Files[o.PINPath] = sha(pinFile(pin))
	}
	data, err := u.onboardingContent(pin)
	if err != nil {
		return nil, fail(CodeInternal, err, "rendering the onboarding configuration")
	}
	if err := u.writeFile(ctx, o.Path, data, o.Mode); err != nil {
		return nil, err
	}
	res.InstallResult = journal.InstallResult{Where: o.Path, SHA256: sha(data)}
	return res, nil
}

// verifyOnboarding reads back the onboarding files: the trust bundle, and the configuration
// rendered again with the PIN the unit's PIN file holds.
func (u *unit) verifyOnboarding(ctx context.Context, o *Onboarding) error {
	if o.TrustBundlePath != "" {
		if err := u.readBackFile(ctx, o.TrustBundlePath, o.TrustBundle); err != nil {
			return err
		}
	}
	var pin string
	if o.PINPath != "" {
		res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: o.PINPath}}})
		if err != nil {
			return fail(CodeReadbackMismatch, err, "reading back %s", o.PINPath)
		}
		content := res.GetReadFile().GetContent()
		pin = strings.TrimSuffix(string(content), "\n")
		if len(pin) != 32 || !bytes.Equal(content, pinFile(pin)) {
			return fail(CodeReadbackMismatch, nil, "%s does not hold a PIN the station wrote", o.PINPath)
		}
	}
	data, err := u.onboardingContent(pin)
	if err != nil {
		return fail(CodeInternal, err, "rendering the onboarding configuration")
	}
	return u.readBackFile(ctx, o.Path, data)
}

// verify reads back every installed object and has each key sign a fresh nonce.
func (u *unit) verify(ctx context.Context) (any, error) {
	checks := map[string]string{}
	if err := u.readBackNV(ctx, u.profile.IDevIDNV, u.keys[roleIDevID].cert.Raw); err != nil {
		return nil, err
	}
	checks["idevid_nv"] = "ok"
	if err := u.readBackFile(ctx, u.profile.LDevIDCertPath, u.ldevidPEM()); err != nil {
		return nil, err
	}
	checks["ldevid_file"] = "ok"
	if o := u.profile.Onboarding; o != nil {
		if err := u.verifyOnboarding(ctx, o); err != nil {
			return nil, err
		}
		checks["onboarding_file"] = "ok"
	}
	for _, role := range []string{roleIDevID, roleLDevID} {
		k := u.keys[role]
		nonce, err := attest.NewNonce()
		if err != nil {
			return nil, fail(CodeInternal, err, "drawing a nonce")
		}
		digest := sha256.Sum256(nonce)
		res, err := u.do(ctx, &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
			KeyHandle: k.profile.Handle, Digest: digest[:], Hash: agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256,
		}}})
		if err != nil {
			return nil, fail(CodeProofFailed, err, "%s key signing a nonce", role)
		}
		if err := attest.VerifySignature(k.cert.PublicKey, crypto.SHA256, digest[:], res.GetSign().GetSignature(), false); err != nil {
			return nil, fail(CodeProofFailed, err, "%s nonce signature does not verify with its certificate", role)
		}
		checks[role+"_signature"] = "ok"
	}
	return journal.VerifyResult{Checks: checks}, nil
}

func (u *unit) complete(ctx context.Context) (any, error) {
	// Every check passed: the unit is done, whatever becomes of its session from here.
	rctx, cancel := recording(ctx)
	defer cancel()
	if _, err := u.r.cfg.Journal.UpdateUnit(rctx, u.serial, func(s *store.UnitState) error {
		s.Status, s.CurrentStep, s.ErrorCode, s.ErrorMessage = store.StatusDone, StepComplete, "", ""
		return nil
	}); err != nil {
		return nil, fail(CodeInternal, err, "marking the unit done")
	}
	u.event(ctx, eventUnitDone, "provisioned and verified", map[string]string{"work_order": u.workOrder})
	// The unit is done whatever happens to the verdict message.
	_, _ = u.agent.Do(ctx, &agentv1.Command{Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{Passed: true, Message: "provisioned and verified"}}})
	return journal.CompleteResult{WorkOrder: u.workOrder}, nil
}

// restore rebuilds the facts a skipped step produced.
func (u *unit) restore(step string, raw json.RawMessage) error {
	role := roleFor(step)
	switch step {
	case StepIAKProof:
		var r journal.ProofResult
		if k := u.keys[role]; k != nil && json.Unmarshal(raw, &r) == nil {
			k.activated = bytes.Equal(r.Name, k.key.Name)
		}
	case StepIDevIDCSR, StepLDevIDCSR, StepIAKCSR:
		if u.keys[role] == nil {
			return nil // a skipped IAK step
		}
		var r journal.CSRResult
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		u.keys[role].csr = r.CSR
	case StepIDevIDEnroll, StepLDevIDEnroll, StepIAKEnroll:
		k := u.keys[role]
		if k == nil {
			return nil // a skipped IAK step
		}
		var r journal.EnrollResult
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		cert, err := x509.ParseCertificate(r.Cert)
		if err != nil {
			return err
		}
		if !publicKeyEqual(cert.PublicKey, k.key.PublicKey) {
			return fmt.Errorf("recorded %s certificate is for another key", role)
		}
		k.cert, k.chain = cert, nil
		for _, der := range r.Chain {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			k.chain = append(k.chain, c)
		}
	}
	return nil
}
