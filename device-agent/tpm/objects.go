package tpm

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// object is a persistent (or loaded) object's public area as the TPM reports it.
type object struct {
	handle tpm2.TPMHandle
	public tpm2.TPMTPublic
	raw    []byte // marshalled TPMT_PUBLIC
	name   []byte
	qn     []byte
}

// named returns the object's handle with its Name.
func (o *object) named() tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: o.handle, Name: tpm2.TPM2BName{Buffer: o.name}}
}

// readPublic reads the public area at h; ErrNotFound when no object is there.
func (t *TPM) readPublic(h uint32) (*object, error) {
	rsp, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}).Execute(t.tr)
	if err != nil {
		if isRC(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("reading public area of %#x: %w: %w", h, ErrNotFound, err)
		}
		return nil, fmt.Errorf("reading public area of %#x: %w", h, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("reading public area of %#x: %w", h, err)
	}
	return &object{
		handle: tpm2.TPMHandle(h),
		public: *pub,
		raw:    rsp.OutPublic.Bytes(),
		name:   rsp.Name.Buffer,
		qn:     rsp.QualifiedName.Buffer,
	}, nil
}

// isPrimaryOf reports whether o is a primary object of hierarchy h.
func (o *object) isPrimaryOf(h tpm2.TPMHandle) bool {
	qn, err := qualifiedName(hierarchyQN(h), o.name)
	return err == nil && bytes.Equal(qn, o.qn)
}

// isChildOf reports whether o is a child of parent.
func (o *object) isChildOf(parent *object) bool {
	qn, err := qualifiedName(parent.qn, o.name)
	return err == nil && bytes.Equal(qn, o.qn)
}

// createPrimary creates a transient primary object in hierarchy h from tmpl. The caller
// flushes the returned handle.
func (t *TPM) createPrimary(h tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (*object, error) {
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: hierarchyAuth(h),
		InPublic:      tpm2.New2B(tmpl),
	}).Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("creating primary key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(rsp.ObjectHandle)
		return nil, fmt.Errorf("creating primary key: %w", err)
	}
	qn, _ := qualifiedName(hierarchyQN(h), rsp.Name.Buffer)
	return &object{
		handle: rsp.ObjectHandle,
		public: *pub,
		raw:    rsp.OutPublic.Bytes(),
		name:   rsp.Name.Buffer,
		qn:     qn,
	}, nil
}

// persist makes the transient object o persistent at h with owner authorization.
func (t *TPM) persist(o *object, h uint32) error {
	_, err := (tpm2.EvictControl{
		Auth:             hierarchyAuth(tpm2.TPMRHOwner),
		ObjectHandle:     o.named(),
		PersistentHandle: tpm2.TPMHandle(h),
	}).Execute(t.tr)
	if err != nil {
		if isRC(err, tpm2.TPMRCNVDefined) {
			return fmt.Errorf("persisting object at %#x: %w: %w", h, ErrHandleOccupied, err)
		}
		return fmt.Errorf("persisting object at %#x: %w", h, err)
	}
	return nil
}

// validPersistent reports whether h is an owner-range persistent handle.
func validPersistent(h uint32) bool { return h >= persistentFirst && h < persistentPlatFirst }

// Evict removes the persistent object at handle (authorized by Owner, or by Platform for the
// platform range 0x818xxxxx). It returns existed=false and no error when nothing is there.
func (t *TPM) Evict(handle uint32, auth Hierarchy) (existed bool, err error) {
	if handle < persistentFirst || handle > persistentLast {
		return false, fmt.Errorf("evicting %#x: %w: not a persistent handle", handle, ErrInvalidArgument)
	}
	if auth != Owner && auth != Platform {
		return false, fmt.Errorf("evicting %#x: %w: %v authorization", handle, ErrWrongHierarchy, auth)
	}
	if (handle >= persistentPlatFirst) != (auth == Platform) {
		return false, fmt.Errorf("evicting %#x: %w: %v authorization", handle, ErrWrongHierarchy, auth)
	}
	hh, _ := hierarchyHandle(auth)
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.readPublic(handle)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("evicting: %w", err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             hierarchyAuth(hh),
		ObjectHandle:     o.named(),
		PersistentHandle: tpm2.TPMHandle(handle),
	}).Execute(t.tr); err != nil {
		if isRC(err, tpm2.TPMRCHierarchy) || isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth) {
			return true, fmt.Errorf("evicting %#x: %w: %w", handle, ErrWrongHierarchy, err)
		}
		return true, fmt.Errorf("evicting %#x: %w", handle, err)
	}
	t.log.Debug("evicted persistent object", logKeyOp, "evict", logKeyHandle, fmt.Sprintf("%#x", handle))
	return true, nil
}
