package agent

import (
	"bytes"
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/device-agent/tpm/reserved"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/protobuf/proto"
)

// Handle and index ranges accepted in requests (TPM 2.0 Part 2, handle types).
const (
	persistentFirst    uint32 = 0x81000000
	persistentOwnerEnd uint32 = 0x817FFFFF // last handle a DevID key may be created at
	persistentLast     uint32 = 0x81FFFFFF
	nvIndexFirst       uint32 = 0x01000000
	nvIndexLast        uint32 = 0x01FFFFFF
	maxFileMode        uint32 = 0o777
	defaultFileMode    uint32 = 0o600
	groupOtherWrite    uint32 = 0o022
)

// checkNotEndorsement fails with ErrEndorsementReserved when v is a TCG-reserved endorsement
// handle or NV index. The agent calls it before every write, undefine and evict.
func checkNotEndorsement(field string, v uint32) error {
	if reserved.Endorsement(v) {
		return fmt.Errorf("%w: %s %#x is reserved for the endorsement key and its certificates",
			ErrEndorsementReserved, field, v)
	}
	return nil
}

// dispatcher executes one command at a time. It is not safe for concurrent use.
type dispatcher struct {
	tpm      TPM
	files    *fileRoots
	keyFile  string // Config.LDevIDKeyFile
	maxBytes int
	log      *slog.Logger
}

// commandName returns the name of the command's op ("none" when unset), for logs.
func commandName(cmd *agentv1.Command) string {
	m := cmd.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("op")); fd != nil {
		return string(fd.Name())
	}
	return "none"
}

// execute runs cmd and returns its Result, never nil and never larger than the message bound.
// A panic in a handler becomes an ERROR_CODE_INTERNAL result.
func (d *dispatcher) execute(cmd *agentv1.Command) (res *agentv1.Result) {
	name := commandName(cmd)
	defer func() {
		if p := recover(); p != nil {
			d.log.Error("command handler panicked", logKeyCommand, name, logKeyID, cmd.GetId(),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = errorResult(cmd.GetId(), agentv1.ErrorCode_ERROR_CODE_INTERNAL,
				fmt.Sprintf("internal error in %s: %v", name, p), 0)
		}
	}()
	res, err := d.handle(cmd)
	if err == nil {
		res.Id = cmd.GetId()
		if n := messageSize(res); n > d.maxBytes {
			err = fmt.Errorf("%w: %s result of %d bytes exceeds the %d-byte bound", ErrMessageTooLarge,
				name, n, d.maxBytes)
		}
	}
	if err != nil {
		code, rc := errorCode(err)
		d.log.Warn("command failed", logKeyCommand, name, logKeyID, cmd.GetId(),
			logKeyCode, code.String(), logKeyErr, err)
		return errorResult(cmd.GetId(), code, err.Error(), rc)
	}
	d.log.Debug("command done", logKeyCommand, name, logKeyID, cmd.GetId())
	return res
}

// messageSize returns the encoded size of res as sent, wrapped in an AgentMessage.
func messageSize(res *agentv1.Result) int {
	return proto.Size(&agentv1.AgentMessage{Body: &agentv1.AgentMessage_Result{Result: res}})
}

// validUTF8 replaces invalid UTF-8 (e.g. odd bytes in TPM vendor strings), which a proto
// string field cannot carry.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// maxErrorMessage bounds Error.message, which may echo station input (a path, an OID).
const maxErrorMessage = 1024

// errorResult builds a failed Result. The message is made valid UTF-8 (as proto strings must
// be) and cut to maxErrorMessage bytes so that an error answer always fits the message bound.
func errorResult(id uint64, code agentv1.ErrorCode, msg string, rc uint32) *agentv1.Result {
	msg = validUTF8(msg)
	if len(msg) > maxErrorMessage {
		cut := maxErrorMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &agentv1.Result{Id: id, Error: &agentv1.Error{Code: code, Message: msg, TpmRc: rc}}
}

// errorCode maps an error from a handler to its stable code and TPM response code.
func errorCode(err error) (agentv1.ErrorCode, uint32) {
	var fe *fileError
	switch {
	case errors.Is(err, ErrUnknownCommand):
		return agentv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, 0
	case errors.Is(err, ErrInvalidArgument):
		return agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, 0
	case errors.Is(err, ErrEndorsementReserved):
		return agentv1.ErrorCode_ERROR_CODE_ENDORSEMENT_RESERVED, 0
	case errors.Is(err, ErrPathNotAllowed):
		return agentv1.ErrorCode_ERROR_CODE_PATH_NOT_ALLOWED, 0
	case errors.Is(err, ErrMessageTooLarge):
		return agentv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, 0
	case errors.As(err, &fe):
		if fe.notFound() {
			return agentv1.ErrorCode_ERROR_CODE_NOT_FOUND, 0
		}
		return agentv1.ErrorCode_ERROR_CODE_IO, 0
	}
	// Everything else comes from the TPM layer.
	rc := tpm.ResponseCode(err)
	if tpm.Lockout(err) {
		// Whatever the operation (a signature, an activation): the TPM refuses DA-protected
		// authorizations until it recovers.
		return agentv1.ErrorCode_ERROR_CODE_TPM_LOCKOUT, rc
	}
	for _, m := range []struct {
		err  error
		code agentv1.ErrorCode
	}{
		{tpm.ErrHandleOccupied, agentv1.ErrorCode_ERROR_CODE_HANDLE_OCCUPIED},
		{tpm.ErrNotFound, agentv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{tpm.ErrNVTooLarge, agentv1.ErrorCode_ERROR_CODE_NV_TOO_LARGE},
		{tpm.ErrWrongHierarchy, agentv1.ErrorCode_ERROR_CODE_WRONG_HIERARCHY},
		{tpm.ErrActivationFailed, agentv1.ErrorCode_ERROR_CODE_ACTIVATION_FAILED},
		{tpm.ErrNVLocked, agentv1.ErrorCode_ERROR_CODE_NV_LOCKED},
		{tpm.ErrInvalidArgument, agentv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
	} {
		if errors.Is(err, m.err) {
			return m.code, rc
		}
	}
	// A TPM response code, or a failure to reach the TPM at all (rc 0).
	return agentv1.ErrorCode_ERROR_CODE_TPM, rc
}

// handle runs one command; the returned Result has no id yet.
func (d *dispatcher) handle(cmd *agentv1.Command) (*agentv1.Result, error) {
	switch op := cmd.GetOp().(type) {
	case *agentv1.Command_Info:
		r, err := d.info()
		return &agentv1.Result{Op: &agentv1.Result_Info{Info: r}}, err
	case *agentv1.Command_ReadEk:
		r, err := d.readEK(op.ReadEk)
		return &agentv1.Result{Op: &agentv1.Result_ReadEk{ReadEk: r}}, err
	case *agentv1.Command_CreateKey:
		r, err := d.createKey(op.CreateKey)
		return &agentv1.Result{Op: &agentv1.Result_CreateKey{CreateKey: r}}, err
	case *agentv1.Command_ActivateCredential:
		r, err := d.activateCredential(op.ActivateCredential)
		return &agentv1.Result{Op: &agentv1.Result_ActivateCredential{ActivateCredential: r}}, err
	case *agentv1.Command_BuildCsr:
		r, err := d.buildCSR(op.BuildCsr)
		return &agentv1.Result{Op: &agentv1.Result_BuildCsr{BuildCsr: r}}, err
	case *agentv1.Command_Sign:
		r, err := d.sign(op.Sign)
		return &agentv1.Result{Op: &agentv1.Result_Sign{Sign: r}}, err
	case *agentv1.Command_NvWrite:
		r, err := d.nvWrite(op.NvWrite)
		return &agentv1.Result{Op: &agentv1.Result_NvWrite{NvWrite: r}}, err
	case *agentv1.Command_NvRead:
		r, err := d.nvRead(op.NvRead)
		return &agentv1.Result{Op: &agentv1.Result_NvRead{NvRead: r}}, err
	case *agentv1.Command_WriteFile:
		r, err := d.files.writeFile(op.WriteFile)
		return &agentv1.Result{Op: &agentv1.Result_WriteFile{WriteFile: r}}, err
	case *agentv1.Command_ReadFile:
		r, err := d.files.readFile(op.ReadFile, d.maxBytes)
		return &agentv1.Result{Op: &agentv1.Result_ReadFile{ReadFile: r}}, err
	case *agentv1.Command_RemoveFile:
		r, err := d.files.removeFile(op.RemoveFile)
		return &agentv1.Result{Op: &agentv1.Result_RemoveFile{RemoveFile: r}}, err
	case *agentv1.Command_Evict:
		r, err := d.evict(op.Evict)
		return &agentv1.Result{Op: &agentv1.Result_Evict{Evict: r}}, err
	case *agentv1.Command_NvUndefine:
		r, err := d.nvUndefine(op.NvUndefine)
		return &agentv1.Result{Op: &agentv1.Result_NvUndefine{NvUndefine: r}}, err
	case *agentv1.Command_Certify:
		r, err := d.certify(op.Certify)
		return &agentv1.Result{Op: &agentv1.Result_Certify{Certify: r}}, err
	case *agentv1.Command_Finish:
		v := verdictOf(op.Finish)
		return &agentv1.Result{Op: &agentv1.Result_Finish{
			Finish: &agentv1.FinishResult{ExitCode: int32(v.ExitCode())}}}, nil
	default:
		return nil, fmt.Errorf("%w: command %d carries no known op", ErrUnknownCommand, cmd.GetId())
	}
}

// verdictOf converts a FinishRequest.
func verdictOf(f *agentv1.FinishRequest) Verdict {
	return Verdict{Passed: f.GetPassed(), Code: f.GetCode(), Message: f.GetMessage()}
}

func (d *dispatcher) info() (*agentv1.InfoResult, error) {
	i, err := d.tpm.Info()
	if err != nil {
		return nil, fmt.Errorf("reading TPM info: %w", err)
	}
	return &agentv1.InfoResult{
		Manufacturer:      i.Manufacturer,
		ManufacturerId:    validUTF8(i.ManufacturerID),
		VendorString:      validUTF8(i.VendorString),
		FirmwareVersion:   i.FirmwareVersion,
		Family:            validUTF8(i.Family),
		SpecLevel:         i.SpecLevel,
		SpecRevision:      i.SpecRevision,
		SpecYear:          i.SpecYear,
		SpecDayOfYear:     i.SpecDayOfYear,
		NvBufferMax:       i.NVBufferMax,
		PersistentHandles: i.PersistentHandles,
		NvIndices:         i.NVIndices,
		VendorTpmType:     i.VendorTPMType,
		StartupClear:      proto.Uint32(i.StartupClear),
	}, nil
}

func (d *dispatcher) readEK(req *agentv1.ReadEKRequest) (*agentv1.ReadEKResult, error) {
	algs := req.GetAlgorithms()
	if len(algs) == 0 {
		algs = []agentv1.KeyAlgorithm{agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256}
	}
	tpmAlgs := make([]tpm.Algorithm, len(algs))
	for i, a := range algs {
		var err error
		if tpmAlgs[i], err = algorithm(a); err != nil {
			return nil, fmt.Errorf("algorithms[%d]: %w", i, err)
		}
	}
	res := &agentv1.ReadEKResult{}
	for i, alg := range tpmAlgs {
		ek, err := d.tpm.ReadEK(alg)
		if err != nil {
			return nil, fmt.Errorf("reading %v EK: %w", alg, err)
		}
		res.Keys = append(res.Keys, &agentv1.EndorsementKey{
			Algorithm:          algs[i],
			PublicArea:         ek.Public,
			Persisted:          ek.Persisted,
			Handle:             ek.Handle,
			Certificate:        ek.Certificate,
			CertificateIndex:   ek.CertificateIndex,
			CertificateRawSize: ek.CertificateRawSize,
		})
	}
	chain, err := d.tpm.ReadEKChain()
	if err != nil {
		return nil, fmt.Errorf("reading EK chain: %w", err)
	}
	res.ChainCertificates = chain
	return res, nil
}

func (d *dispatcher) createKey(req *agentv1.CreateKeyRequest) (*agentv1.CreateKeyResult, error) {
	role, err := keyRole(req.GetRole())
	if err != nil {
		return nil, err
	}
	var alg tpm.Algorithm
	if req.GetAlgorithm() != agentv1.KeyAlgorithm_KEY_ALGORITHM_UNSPECIFIED || len(req.GetTemplate()) == 0 {
		if alg, err = algorithm(req.GetAlgorithm()); err != nil {
			return nil, err
		}
	}
	if err := checkRange("handle", req.GetHandle(), persistentFirst, persistentOwnerEnd); err != nil {
		return nil, err
	}
	if err := checkNotEndorsement("handle", req.GetHandle()); err != nil {
		return nil, err
	}
	if h := req.GetSrkHandle(); h != 0 {
		if err := checkRange("srk_handle", h, persistentFirst, persistentOwnerEnd); err != nil {
			return nil, err
		}
		if err := checkNotEndorsement("srk_handle", h); err != nil {
			return nil, err
		}
	}
	k, err := d.tpm.CreateKey(tpm.KeyRequest{
		Role:      role,
		Algorithm: alg,
		Handle:    req.GetHandle(),
		SRKHandle: req.GetSrkHandle(),
		Template:  req.GetTemplate(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating key at %#x: %w", req.GetHandle(), err)
	}
	if role == tpm.LDevID && d.keyFile != "" {
		if err := d.keepKeyFile(k); err != nil {
			return nil, fmt.Errorf("LDevID key file %s: %w", d.keyFile, err)
		}
	}
	return &agentv1.CreateKeyResult{
		PublicArea: k.Public,
		Name:       k.Name,
		Existed:    k.Existed,
		SrkCreated: k.SRKCreated,
		Handle:     k.Handle,
	}, nil
}

// keepKeyFile writes a created LDevID key as a TSS2 PRIVATE KEY PEM to the key file, or, for a
// key that existed, checks that the file holds that key.
func (d *dispatcher) keepKeyFile(k *tpm.Key) error {
	if !k.Existed {
		data, err := tpm.TSS2PrivateKeyPEM(k.Parent, k.Public, k.Private)
		if err != nil {
			return err
		}
		_, err = d.files.writeFile(&agentv1.WriteFileRequest{Path: d.keyFile, Content: data, Mode: 0o600})
		return err
	}
	r, err := d.files.readFile(&agentv1.ReadFileRequest{Path: d.keyFile}, d.maxBytes)
	if err != nil {
		return fmt.Errorf("the key existed, so its private area is only in this file: %w", err)
	}
	_, pub, err := tpm.ParseTSS2PrivateKeyPEM(r.GetContent())
	if err != nil {
		return err
	}
	if !bytes.Equal(pub, k.Public) {
		return fmt.Errorf("%w: the file holds another key than the one at the handle", ErrInvalidArgument)
	}
	return nil
}

func (d *dispatcher) activateCredential(req *agentv1.ActivateCredentialRequest) (*agentv1.ActivateCredentialResult, error) {
	if err := checkRange("key_handle", req.GetKeyHandle(), persistentFirst, persistentLast); err != nil {
		return nil, err
	}
	alg, err := algorithm(req.GetEkAlgorithm())
	if err != nil {
		return nil, fmt.Errorf("ek_algorithm: %w", err)
	}
	if len(req.GetCredentialBlob()) == 0 || len(req.GetEncryptedSecret()) == 0 {
		return nil, fmt.Errorf("%w: credential_blob and encrypted_secret are required", ErrInvalidArgument)
	}
	secret, err := d.tpm.ActivateCredential(req.GetKeyHandle(), alg, req.GetCredentialBlob(), req.GetEncryptedSecret())
	if err != nil {
		return nil, fmt.Errorf("activating credential for %#x: %w", req.GetKeyHandle(), err)
	}
	return &agentv1.ActivateCredentialResult{Secret: secret}, nil
}

func (d *dispatcher) buildCSR(req *agentv1.BuildCSRRequest) (*agentv1.BuildCSRResult, error) {
	if err := checkRange("key_handle", req.GetKeyHandle(), persistentFirst, persistentLast); err != nil {
		return nil, err
	}
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(req.GetSubject(), &rdn); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: subject is not one DER X.501 Name", ErrInvalidArgument)
	}
	scheme, err := signatureScheme(req.GetScheme())
	if err != nil {
		return nil, err
	}
	exts := make([]pkix.Extension, 0, len(req.GetExtensions()))
	seen := map[string]bool{}
	for i, e := range req.GetExtensions() {
		oid, err := parseOID(e.GetOid())
		if err != nil {
			return nil, fmt.Errorf("extensions[%d]: %w", i, err)
		}
		if seen[oid.String()] {
			return nil, fmt.Errorf("%w: extensions[%d]: duplicate extension %s", ErrInvalidArgument, i, oid)
		}
		seen[oid.String()] = true
		var v asn1.RawValue
		if rest, err := asn1.Unmarshal(e.GetValue(), &v); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("%w: extensions[%d] (%s): value is not one DER element", ErrInvalidArgument, i, oid)
		}
		exts = append(exts, pkix.Extension{Id: oid, Critical: e.GetCritical(), Value: e.GetValue()})
	}
	csr, err := d.tpm.BuildCSR(req.GetKeyHandle(), req.GetSubject(), exts, scheme)
	if err != nil {
		return nil, fmt.Errorf("building CSR with %#x: %w", req.GetKeyHandle(), err)
	}
	return &agentv1.BuildCSRResult{Csr: csr}, nil
}

func (d *dispatcher) sign(req *agentv1.SignRequest) (*agentv1.SignResult, error) {
	if err := checkRange("key_handle", req.GetKeyHandle(), persistentFirst, persistentLast); err != nil {
		return nil, err
	}
	var h crypto.Hash
	switch req.GetHash() {
	case agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256:
		h = crypto.SHA256
	case agentv1.HashAlgorithm_HASH_ALGORITHM_SHA384:
		h = crypto.SHA384
	default:
		return nil, fmt.Errorf("%w: hash %v", ErrInvalidArgument, req.GetHash())
	}
	if len(req.GetDigest()) != h.Size() {
		return nil, fmt.Errorf("%w: digest of %d bytes for %v (want %d)", ErrInvalidArgument, len(req.GetDigest()), h, h.Size())
	}
	scheme, err := signatureScheme(req.GetScheme())
	if err != nil {
		return nil, err
	}
	sig, err := d.tpm.Sign(req.GetKeyHandle(), req.GetDigest(), h, scheme)
	if err != nil {
		return nil, fmt.Errorf("signing with %#x: %w", req.GetKeyHandle(), err)
	}
	return &agentv1.SignResult{Signature: sig}, nil
}

// Certifier is a TPM that runs TPM2_Certify (tpm.TPM); a TPM without it answers certify with
// ERROR_CODE_UNKNOWN_COMMAND.
type Certifier interface {
	Certify(objectHandle, signHandle uint32, qualifyingData []byte) (*tpm.Certification, error)
}

func (d *dispatcher) certify(req *agentv1.CertifyRequest) (*agentv1.CertifyResult, error) {
	for _, h := range []struct {
		field string
		v     uint32
	}{{"object_handle", req.GetObjectHandle()}, {"sign_handle", req.GetSignHandle()}} {
		if err := checkRange(h.field, h.v, persistentFirst, persistentLast); err != nil {
			return nil, err
		}
	}
	if n := len(req.GetQualifyingData()); n > 64 {
		return nil, fmt.Errorf("%w: qualifying_data of %d bytes (at most 64)", ErrInvalidArgument, n)
	}
	c, ok := d.tpm.(Certifier)
	if !ok {
		return nil, fmt.Errorf("%w: this TPM cannot certify", ErrUnknownCommand)
	}
	r, err := c.Certify(req.GetObjectHandle(), req.GetSignHandle(), req.GetQualifyingData())
	if err != nil {
		return nil, fmt.Errorf("certifying %#x with %#x: %w", req.GetObjectHandle(), req.GetSignHandle(), err)
	}
	return &agentv1.CertifyResult{Attest: r.Attest, Signature: r.Signature}, nil
}

func (d *dispatcher) nvWrite(req *agentv1.NVWriteRequest) (*agentv1.NVWriteResult, error) {
	if err := checkRange("index", req.GetIndex(), nvIndexFirst, nvIndexLast); err != nil {
		return nil, err
	}
	if err := checkNotEndorsement("index", req.GetIndex()); err != nil {
		return nil, err
	}
	auth, err := hierarchy(req.GetAuth())
	if err != nil {
		return nil, err
	}
	if len(req.GetData()) == 0 && req.GetSize() == 0 {
		return nil, fmt.Errorf("%w: neither data nor size given", ErrInvalidArgument)
	}
	r, err := d.tpm.NVWrite(tpm.NVWriteRequest{
		Index:      req.GetIndex(),
		Auth:       auth,
		Attributes: req.GetAttributes(),
		Size:       req.GetSize(),
		Data:       req.GetData(),
		WriteLock:  req.GetWriteLock(),
	})
	if err != nil {
		return nil, fmt.Errorf("writing NV index %#x: %w", req.GetIndex(), err)
	}
	return &agentv1.NVWriteResult{Defined: r.Defined, Chunks: uint32(r.Chunks), Locked: r.Locked, Name: r.Name}, nil
}

func (d *dispatcher) nvRead(req *agentv1.NVReadRequest) (*agentv1.NVReadResult, error) {
	if err := checkRange("index", req.GetIndex(), nvIndexFirst, nvIndexLast); err != nil {
		return nil, err
	}
	r, err := d.tpm.NVRead(req.GetIndex())
	if err != nil {
		return nil, fmt.Errorf("reading NV index %#x: %w", req.GetIndex(), err)
	}
	return &agentv1.NVReadResult{Data: r.Data, Attributes: r.Attributes, Size: r.Size, Name: r.Name}, nil
}

func (d *dispatcher) evict(req *agentv1.EvictRequest) (*agentv1.EvictResult, error) {
	if err := checkRange("handle", req.GetHandle(), persistentFirst, persistentLast); err != nil {
		return nil, err
	}
	if err := checkNotEndorsement("handle", req.GetHandle()); err != nil {
		return nil, err
	}
	auth := tpm.Owner // unspecified means owner for Evict
	if req.GetAuth() != agentv1.Hierarchy_HIERARCHY_UNSPECIFIED {
		var err error
		if auth, err = hierarchy(req.GetAuth()); err != nil {
			return nil, err
		}
	}
	existed, err := d.tpm.Evict(req.GetHandle(), auth)
	if err != nil {
		return nil, fmt.Errorf("evicting %#x: %w", req.GetHandle(), err)
	}
	return &agentv1.EvictResult{Existed: existed}, nil
}

func (d *dispatcher) nvUndefine(req *agentv1.NVUndefineRequest) (*agentv1.NVUndefineResult, error) {
	if err := checkRange("index", req.GetIndex(), nvIndexFirst, nvIndexLast); err != nil {
		return nil, err
	}
	if err := checkNotEndorsement("index", req.GetIndex()); err != nil {
		return nil, err
	}
	auth, err := hierarchy(req.GetAuth())
	if err != nil {
		return nil, err
	}
	existed, err := d.tpm.NVUndefine(req.GetIndex(), auth)
	if err != nil {
		return nil, fmt.Errorf("undefining NV index %#x: %w", req.GetIndex(), err)
	}
	return &agentv1.NVUndefineResult{Existed: existed}, nil
}

// checkRange fails unless first <= v <= last.
func checkRange(field string, v, first, last uint32) error {
	if v < first || v > last {
		return fmt.Errorf("%w: %s %#x outside %#x-%#x", ErrInvalidArgument, field, v, first, last)
	}
	return nil
}

func algorithm(a agentv1.KeyAlgorithm) (tpm.Algorithm, error) {
	switch a {
	case agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048:
		return tpm.RSA2048, nil
	case agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256:
		return tpm.ECCP256, nil
	case agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P384:
		return tpm.ECCP384, nil
	case agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_3072:
		return tpm.RSA3072, nil
	}
	return tpm.AlgUnspecified, fmt.Errorf("%w: key algorithm %v", ErrInvalidArgument, a)
}

func keyRole(r agentv1.KeyRole) (tpm.Role, error) {
	switch r {
	case agentv1.KeyRole_KEY_ROLE_IDEVID:
		return tpm.IDevID, nil
	case agentv1.KeyRole_KEY_ROLE_LDEVID:
		return tpm.LDevID, nil
	case agentv1.KeyRole_KEY_ROLE_IAK:
		return tpm.IAK, nil
	}
	return tpm.RoleUnspecified, fmt.Errorf("%w: key role %v", ErrInvalidArgument, r)
}

// hierarchy converts a specified hierarchy; whether it suits the operation is the TPM layer's
// call (ERROR_CODE_WRONG_HIERARCHY).
func hierarchy(h agentv1.Hierarchy) (tpm.Hierarchy, error) {
	switch h {
	case agentv1.Hierarchy_HIERARCHY_OWNER:
		return tpm.Owner, nil
	case agentv1.Hierarchy_HIERARCHY_PLATFORM:
		return tpm.Platform, nil
	case agentv1.Hierarchy_HIERARCHY_ENDORSEMENT:
		return tpm.Endorsement, nil
	}
	return tpm.HierarchyUnspecified, fmt.Errorf("%w: hierarchy %v", ErrInvalidArgument, h)
}

func signatureScheme(s agentv1.SignatureScheme) (tpm.Scheme, error) {
	switch s {
	case agentv1.SignatureScheme_SIGNATURE_SCHEME_UNSPECIFIED:
		return tpm.SchemeDefault, nil
	case agentv1.SignatureScheme_SIGNATURE_SCHEME_ECDSA:
		return tpm.ECDSA, nil
	case agentv1.SignatureScheme_SIGNATURE_SCHEME_RSASSA_PKCS1V15:
		return tpm.RSASSA, nil
	case agentv1.SignatureScheme_SIGNATURE_SCHEME_RSAPSS:
		return tpm.RSAPSS, nil
	}
	return tpm.SchemeDefault, fmt.Errorf("%w: signature scheme %v", ErrInvalidArgument, s)
}

// parseOID parses a dotted OID strictly: at least two arcs, decimal without sign or leading
// zeros, first arc 0-2, second arc below 40 under arcs 0 and 1.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%w: OID %q", ErrInvalidArgument, s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 31)
		if err != nil || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("%w: OID %q", ErrInvalidArgument, s)
		}
		oid[i] = int(n)
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, fmt.Errorf("%w: OID %q", ErrInvalidArgument, s)
	}
	return oid, nil
}
