package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// KeyRequest asks CreateKey for a DevID key.
type KeyRequest struct {
	// Role is IDevID (primary key in the endorsement hierarchy), IAK (restricted signing
	// primary key in the endorsement hierarchy) or LDevID (child of the SRK).
	Role Role
	// Algorithm is the key type; with Template set it may be AlgUnspecified, else it must
	// match the template.
	Algorithm Algorithm
	// Handle is the persistent handle, in the owner range 0x81000000-0x817FFFFF.
	Handle uint32
	// SRKHandle is the SRK's persistent handle for an LDevID; 0 means the registry's SRK
	// handle for the key's algorithm (SRKHandleRSA or SRKHandleECC).
	SRKHandle uint32
	// Template is an optional TPM-marshalled TPMT_PUBLIC used instead of DevIDTemplate; it
	// must be an unrestricted signing key without decrypt. An IAK takes none: it is always
	// made from IAKTemplate.
	Template []byte
}

// Key is a persisted DevID key.
type Key struct {
	// Public is the TPM-marshalled TPMT_PUBLIC.
	Public []byte
	// Name is the key's TPM Name.
	Name []byte
	// Existed is true when the key was already at the handle.
	Existed bool
	// SRKCreated is true when CreateKey created and persisted the SRK for an LDevID.
	SRKCreated bool
	// Handle is the persistent handle.
	Handle uint32
	// Parent and Private are set for an LDevID key CreateKey created (not for one that
	// existed): the SRK's handle and the key's TPM2B_PRIVATE as TPM2_Create returned it
	// (wrapped by the SRK, usable only in this TPM), so that the key can also be loaded from
	// a file (TSS2PrivateKeyPEM) by software that cannot use a persistent handle.
	Parent  uint32
	Private []byte
}

// keyTemplate validates req and returns the template to create from.
func keyTemplate(req KeyRequest) (tpm2.TPMTPublic, Algorithm, error) {
	if req.Role == IAK {
		if req.Template != nil || (req.Algorithm != RSA2048 && req.Algorithm != ECCP256) {
			return tpm2.TPMTPublic{}, 0, fmt.Errorf("%w: an IAK takes no template and RSA-2048 or ECC P-256", ErrInvalidArgument)
		}
		return IAKTemplate(req.Algorithm), req.Algorithm, nil
	}
	if req.Template == nil {
		if req.Algorithm != RSA2048 && req.Algorithm != ECCP256 {
			return tpm2.TPMTPublic{}, 0, fmt.Errorf("%w: algorithm %v", ErrInvalidArgument, req.Algorithm)
		}
		return DevIDTemplate(req.Algorithm), req.Algorithm, nil
	}
	p, err := parsePublic(req.Template)
	if err != nil {
		return tpm2.TPMTPublic{}, 0, fmt.Errorf("template: %w", err)
	}
	a := p.ObjectAttributes
	if !a.SignEncrypt || a.Decrypt || a.Restricted {
		return tpm2.TPMTPublic{}, 0, fmt.Errorf("%w: template must be an unrestricted signing key without decrypt", ErrInvalidArgument)
	}
	alg := algorithmOf(p)
	if alg != RSA2048 && alg != ECCP256 {
		return tpm2.TPMTPublic{}, 0, fmt.Errorf("%w: template is neither RSA-2048 nor ECC P-256", ErrInvalidArgument)
	}
	if req.Algorithm != AlgUnspecified && req.Algorithm != alg {
		return tpm2.TPMTPublic{}, 0, fmt.Errorf("%w: template is %v, request says %v", ErrInvalidArgument, alg, req.Algorithm)
	}
	return *p, alg, nil
}

// DefaultSRKHandle is the TCG handle registry's SRK handle for an algorithm: 0x81000001 for
// RSA, 0x81000002 for ECC.
func DefaultSRKHandle(alg Algorithm) uint32 {
	if alg == RSA2048 {
		return SRKHandleRSA
	}
	return SRKHandleECC
}

// CreateKey creates a DevID key and persists it at req.Handle.
//
// IDevID and IAK: CreatePrimary in the endorsement hierarchy, EvictControl to Handle. LDevID: the SRK
// (TCG SRK template of the same algorithm) is created and persisted at SRKHandle when absent;
// then Create + Load under it, EvictControl, flush.
//
// Idempotent: a key at Handle with the same template (unique field ignored) in the right place
// (a primary of the endorsement hierarchy for an IDevID, a child of that SRK for an LDevID,
// checked by Qualified Name) is returned with Existed=true; any other object there gives
// ErrHandleOccupied. A bad handle, algorithm or template gives ErrInvalidArgument.
func (t *TPM) CreateKey(req KeyRequest) (*Key, error) {
	if req.Role != IDevID && req.Role != LDevID && req.Role != IAK {
		return nil, fmt.Errorf("creating key: %w: role %d", ErrInvalidArgument, int(req.Role))
	}
	if !validPersistent(req.Handle) {
		return nil, fmt.Errorf("creating key: %w: handle %#x is not an owner persistent handle", ErrInvalidArgument, req.Handle)
	}
	tmpl, alg, err := keyTemplate(req)
	if err != nil {
		return nil, fmt.Errorf("creating key: %w", err)
	}
	srkHandle := req.SRKHandle
	if srkHandle == 0 {
		srkHandle = DefaultSRKHandle(alg)
	}
	if req.Role == LDevID && (!validPersistent(srkHandle) || srkHandle == req.Handle) {
		return nil, fmt.Errorf("creating key: %w: SRK handle %#x", ErrInvalidArgument, srkHandle)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	var k *Key
	if req.Role != LDevID {
		k, err = t.createIDevID(tmpl, req.Handle)
	} else {
		k, err = t.createLDevID(tmpl, alg, req.Handle, srkHandle)
	}
	if err != nil {
		return nil, fmt.Errorf("creating %v key at %#x: %w", req.Role.String(), req.Handle, err)
	}
	t.log.Debug("created key", logKeyOp, "create_key", "role", req.Role.String(), "alg", alg.String(),
		logKeyHandle, fmt.Sprintf("%#x", req.Handle), "existed", k.Existed, "srk_created", k.SRKCreated)
	return k, nil
}

// existing checks the object at h: (nil, nil) when absent, the key when it matches, else
// ErrHandleOccupied.
func (t *TPM) existing(h uint32, tmpl tpm2.TPMTPublic, inPlace func(*object) bool) (*Key, error) {
	o, err := t.readPublic(h)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !sameKeyTemplate(o.public, tmpl) {
		return nil, fmt.Errorf("%w: an object of another template is there", ErrHandleOccupied)
	}
	if !inPlace(o) {
		return nil, fmt.Errorf("%w: a key of that template but another hierarchy or parent is there", ErrHandleOccupied)
	}
	return &Key{Public: o.raw, Name: o.name, Existed: true, Handle: h}, nil
}

// createIDevID creates (or finds) a primary key of the endorsement hierarchy at h: the IDevID or
// the IAK.
func (t *TPM) createIDevID(tmpl tpm2.TPMTPublic, h uint32) (*Key, error) {
	k, err := t.existing(h, tmpl, func(o *object) bool { return o.isPrimaryOf(tpm2.TPMRHEndorsement) })
	if k != nil || err != nil {
		return k, err
	}
	o, err := t.createPrimary(tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, err
	}
	defer t.flush(o.handle)
	if err := t.persist(o, h); err != nil {
		return nil, err
	}
	return &Key{Public: o.raw, Name: o.name, Handle: h}, nil
}

// srk returns the SRK at h, creating and persisting it when absent.
func (t *TPM) srk(alg Algorithm, h uint32) (srk *object, created bool, err error) {
	tmpl := SRKTemplate(alg)
	srk, err = t.readPublic(h)
	switch {
	case err == nil:
		if !sameTemplate(srk.public, tmpl) || !srk.isPrimaryOf(tpm2.TPMRHOwner) {
			return nil, false, fmt.Errorf("SRK handle %#x: %w: not a %v SRK", h, ErrHandleOccupied, alg)
		}
		return srk, false, nil
	case !isNotFound(err):
		return nil, false, fmt.Errorf("reading SRK: %w", err)
	}
	o, err := t.createPrimary(tpm2.TPMRHOwner, tmpl)
	if err != nil {
		return nil, false, fmt.Errorf("creating SRK: %w", err)
	}
	defer t.flush(o.handle)
	if err := t.persist(o, h); err != nil {
		return nil, false, fmt.Errorf("persisting SRK: %w", err)
	}
	o.handle = tpm2.TPMHandle(h)
	return o, true, nil
}

func (t *TPM) createLDevID(tmpl tpm2.TPMTPublic, alg Algorithm, h, srkHandle uint32) (*Key, error) {
	srk, err := t.readPublic(srkHandle)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	k, err := t.existing(h, tmpl, func(o *object) bool { return srk != nil && o.isChildOf(srk) })
	if k != nil || err != nil {
		return k, err
	}
	srk, created, err := t.srk(alg, srkHandle)
	if err != nil {
		return nil, err
	}
	parent := tpm2.AuthHandle{Handle: srk.handle, Name: tpm2.TPM2BName{Buffer: srk.name}, Auth: tpm2.PasswordAuth(nil)}
	cr, err := (tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("creating key under the SRK: %w", err)
	}
	lr, err := (tpm2.Load{ParentHandle: parent, InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("loading key: %w", err)
	}
	defer t.flush(lr.ObjectHandle)
	o := &object{handle: lr.ObjectHandle, raw: cr.OutPublic.Bytes(), name: lr.Name.Buffer}
	if err := t.persist(o, h); err != nil {
		return nil, err
	}
	return &Key{Public: o.raw, Name: o.name, SRKCreated: created, Handle: h,
		Parent: srkHandle, Private: tpm2.Marshal(cr.OutPrivate)}, nil
}
