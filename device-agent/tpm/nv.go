package tpm

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NVWriteRequest asks NVWrite to define (if needed), write and optionally lock an NV index.
type NVWriteRequest struct {
	// Index is the NV index, 0x01000000-0x01FFFFFF.
	Index uint32
	// Auth is the hierarchy that defines and writes the index: Owner or Platform.
	Auth Hierarchy
	// Attributes are the TPMA_NV bits of the index; 0 selects NVDefaultOwner or
	// NVDefaultPlatform after Auth.
	Attributes uint32
	// Size is the index size; 0 means len(Data).
	Size uint32
	// Data is written from offset 0.
	Data []byte
	// WriteLock locks the index (TPM2_NV_WriteLock) after writing.
	WriteLock bool
}

// NVWriteResult says what NVWrite did.
type NVWriteResult struct {
	// Defined is true when NVWrite defined the index (false when it reused one).
	Defined bool
	// Chunks is the number of TPM2_NV_Write commands sent.
	Chunks int
	// Locked is true when the index was write-locked.
	Locked bool
	// Name is the index's Name after writing.
	Name []byte
}

// NVData is an NV index's contents and public area.
type NVData struct {
	// Data is the whole index, nil if it was never written.
	Data []byte
	// Attributes are the TPMA_NV bits, state bits included.
	Attributes uint32
	// Size is the index size.
	Size uint32
	// Name is the index's Name.
	Name []byte
}

// nvIndex is an NV index's public area.
type nvIndex struct {
	pub   tpm2.TPMSNVPublic
	attrs uint32
	name  []byte
}

func (n *nvIndex) named() tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: tpm2.TPMHandle(n.pub.NVIndex), Name: tpm2.TPM2BName{Buffer: n.name}}
}

func attrsToBits(a tpm2.TPMANV) uint32 { return binary.BigEndian.Uint32(tpm2.Marshal(a)) }

func bitsToAttrs(b uint32) (tpm2.TPMANV, error) {
	a, err := tpm2.Unmarshal[tpm2.TPMANV](binary.BigEndian.AppendUint32(nil, b))
	if err != nil {
		return tpm2.TPMANV{}, err
	}
	return *a, nil
}

// nvReadPublic reads an index's public area; ErrNotFound when it is not defined.
func (t *TPM) nvReadPublic(index uint32) (*nvIndex, error) {
	rsp, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}).Execute(t.tr)
	if err != nil {
		if isRC(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("reading NV index %#x public area: %w: %w", index, ErrNotFound, err)
		}
		return nil, fmt.Errorf("reading NV index %#x public area: %w", index, err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("reading NV index %#x public area: %w", index, err)
	}
	return &nvIndex{pub: *pub, attrs: attrsToBits(pub.Attributes), name: rsp.NVName.Buffer}, nil
}

// nvAuth picks who authorizes a read or write of n: the index itself (empty auth value),
// the owner or the platform, after the index's attributes. prefer is tried first when the
// index allows it.
func nvAuth(n *nvIndex, write bool, prefer Hierarchy) (tpm2.AuthHandle, error) {
	pp, owner, auth := NVPPRead, NVOwnerRead, NVAuthRead
	if write {
		pp, owner, auth = NVPPWrite, NVOwnerWrite, NVAuthWrite
	}
	switch {
	case prefer == Platform && n.attrs&pp != 0:
		return hierarchyAuth(tpm2.TPMRHPlatform), nil
	case prefer == Owner && n.attrs&owner != 0:
		return hierarchyAuth(tpm2.TPMRHOwner), nil
	case n.attrs&auth != 0:
		return tpm2.AuthHandle{Handle: n.pub.NVIndex, Name: tpm2.TPM2BName{Buffer: n.name}, Auth: tpm2.PasswordAuth(nil)}, nil
	case n.attrs&owner != 0:
		return hierarchyAuth(tpm2.TPMRHOwner), nil
	case n.attrs&pp != 0:
		return hierarchyAuth(tpm2.TPMRHPlatform), nil
	}
	return tpm2.AuthHandle{}, fmt.Errorf("%w: NV index %#x allows neither auth value, owner nor platform access", ErrWrongHierarchy, uint32(n.pub.NVIndex))
}

// NVWrite defines the index if absent (NV_DefineSpace with req.Auth), reuses an existing index
// whose size and attributes match (state bits ignored), writes req.Data in chunks of
// TPM_PT_NV_BUFFER_MAX and locks the index if asked.
//
// Errors: ErrInvalidArgument (index outside 0x01000000-0x01FFFFFF, bad size), ErrWrongHierarchy
// (Auth not Owner or Platform, or the index refuses that authorization), ErrHandleOccupied (an
// index with other size or attributes exists), ErrNVTooLarge (len(Data) > size), ErrNVLocked.
func (t *TPM) NVWrite(req NVWriteRequest) (*NVWriteResult, error) {
	if req.Index < nvIndexFirst || req.Index > nvIndexLast {
		return nil, fmt.Errorf("writing NV index %#x: %w: not an NV index", req.Index, ErrInvalidArgument)
	}
	attrs := req.Attributes
	switch req.Auth {
	case Owner:
		if attrs == 0 {
			attrs = NVDefaultOwner
		}
	case Platform:
		if attrs == 0 {
			attrs = NVDefaultPlatform
		}
	case HierarchyUnspecified:
		return nil, fmt.Errorf("writing NV index %#x: %w: no authorization hierarchy", req.Index, ErrInvalidArgument)
	default:
		return nil, fmt.Errorf("writing NV index %#x: %w: %v cannot define NV indices", req.Index, ErrWrongHierarchy, req.Auth)
	}
	attrs &^= NVStateBits
	size := req.Size
	if size == 0 {
		size = uint32(len(req.Data))
	}
	if size == 0 || size > 0xFFFF {
		return nil, fmt.Errorf("writing NV index %#x: %w: size %d", req.Index, ErrInvalidArgument, size)
	}
	if uint32(len(req.Data)) > size {
		return nil, fmt.Errorf("writing NV index %#x: %w: %d bytes into %d", req.Index, ErrNVTooLarge, len(req.Data), size)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	res := &NVWriteResult{}
	n, err := t.nvReadPublic(req.Index)
	switch {
	case err == nil:
		if uint32(n.pub.DataSize) != size || n.attrs&^NVStateBits != attrs {
			return nil, fmt.Errorf("writing NV index %#x: %w: defined with size %d attributes %#x, want size %d attributes %#x",
				req.Index, ErrHandleOccupied, n.pub.DataSize, n.attrs&^NVStateBits, size, attrs)
		}
		if uint32(len(req.Data)) > uint32(n.pub.DataSize) {
			return nil, fmt.Errorf("writing NV index %#x: %w", req.Index, ErrNVTooLarge)
		}
		if n.attrs&NVWriteLocked != 0 {
			return nil, fmt.Errorf("writing NV index %#x: %w", req.Index, ErrNVLocked)
		}
	case isNotFound(err):
		if n, err = t.nvDefine(req.Index, req.Auth, attrs, size); err != nil {
			return nil, err
		}
		res.Defined = true
	default:
		return nil, fmt.Errorf("writing NV index: %w", err)
	}

	max, err := t.bufferMax()
	if err != nil {
		return nil, fmt.Errorf("writing NV index %#x: %w", req.Index, err)
	}
	auth, err := nvAuth(n, true, req.Auth)
	if err != nil {
		return nil, fmt.Errorf("writing NV index %#x: %w", req.Index, err)
	}
	for off := 0; off < len(req.Data); off += int(max) {
		end := min(off+int(max), len(req.Data))
		if _, err := (tpm2.NVWrite{
			AuthHandle: auth,
			NVIndex:    n.named(),
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: req.Data[off:end]},
			Offset:     uint16(off),
		}).Execute(t.tr); err != nil {
			return res, nvError(fmt.Sprintf("writing NV index %#x at offset %d", req.Index, off), err)
		}
		res.Chunks++
		if n.attrs&NVWritten == 0 {
			if n, err = t.nvReadPublic(req.Index); err != nil { // the Name changes with TPMA_NV_WRITTEN
				return res, fmt.Errorf("writing NV index: %w", err)
			}
			if auth.Handle == n.pub.NVIndex {
				auth.Name = tpm2.TPM2BName{Buffer: n.name}
			}
		}
	}
	if req.WriteLock {
		if _, err := (tpm2.NVWriteLock{AuthHandle: auth, NVIndex: n.named()}).Execute(t.tr); err != nil {
			return res, nvError(fmt.Sprintf("write-locking NV index %#x", req.Index), err)
		}
		res.Locked = true
		if n, err = t.nvReadPublic(req.Index); err != nil {
			return res, fmt.Errorf("write-locking NV index: %w", err)
		}
	}
	res.Name = n.name
	t.log.Debug("wrote NV index", logKeyOp, "nv_write", logKeyIndex, fmt.Sprintf("%#x", req.Index),
		"bytes", len(req.Data), "chunks", res.Chunks, "defined", res.Defined, "locked", res.Locked)
	return res, nil
}

// nvDefine defines an ordinary index with an empty auth value and nameAlg SHA-256.
func (t *TPM) nvDefine(index uint32, auth Hierarchy, attrs, size uint32) (*nvIndex, error) {
	a, err := bitsToAttrs(attrs)
	if err != nil {
		return nil, fmt.Errorf("defining NV index %#x: %w: attributes %#x", index, ErrInvalidArgument, attrs)
	}
	hh, err := hierarchyHandle(auth)
	if err != nil {
		return nil, fmt.Errorf("defining NV index %#x: %w", index, err)
	}
	pub := tpm2.TPMSNVPublic{
		NVIndex:    tpm2.TPMHandle(index),
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: a,
		DataSize:   uint16(size),
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: hierarchyAuth(hh),
		PublicInfo: tpm2.New2B(pub),
	}).Execute(t.tr); err != nil {
		switch {
		case isRC(err, tpm2.TPMRCNVDefined):
			return nil, fmt.Errorf("defining NV index %#x: %w: %w", index, ErrHandleOccupied, err)
		case isRC(err, tpm2.TPMRCAttributes) || isRC(err, tpm2.TPMRCValue) || isRC(err, tpm2.TPMRCSize):
			return nil, fmt.Errorf("defining NV index %#x: %w: %w", index, ErrInvalidArgument, err)
		case isRC(err, tpm2.TPMRCHierarchy) || isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth):
			return nil, fmt.Errorf("defining NV index %#x: %w: %w", index, ErrWrongHierarchy, err)
		}
		return nil, fmt.Errorf("defining NV index %#x: %w", index, err)
	}
	return t.nvReadPublic(index)
}

// nvError wraps a TPM NV error with the matching sentinel.
func nvError(what string, err error) error {
	switch {
	case isRC(err, tpm2.TPMRCNVLocked):
		return fmt.Errorf("%s: %w: %w", what, ErrNVLocked, err)
	case isRC(err, tpm2.TPMRCNVRange):
		return fmt.Errorf("%s: %w: %w", what, ErrNVTooLarge, err)
	case isRC(err, tpm2.TPMRCNVAuthorization) || isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth) || isRC(err, tpm2.TPMRCHierarchy):
		return fmt.Errorf("%s: %w: %w", what, ErrWrongHierarchy, err)
	case isRC(err, tpm2.TPMRCHandle):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case isRC(err, tpm2.TPMRCAttributes):
		return fmt.Errorf("%s: %w: %w", what, ErrInvalidArgument, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// NVRead reads a whole index in chunks of TPM_PT_NV_BUFFER_MAX, authorized by the index's
// auth value, the owner or the platform, as its attributes allow. An index that was never
// written gives nil Data. ErrNotFound when the index is not defined.
func (t *TPM) NVRead(index uint32) (*NVData, error) {
	if index < nvIndexFirst || index > nvIndexLast {
		return nil, fmt.Errorf("reading NV index %#x: %w: not an NV index", index, ErrInvalidArgument)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nvRead(index)
}

// nvRead implements NVRead; the caller holds t.mu.
func (t *TPM) nvRead(index uint32) (*NVData, error) {
	n, err := t.nvReadPublic(index)
	if err != nil {
		return nil, fmt.Errorf("reading NV index: %w", err)
	}
	out := &NVData{Attributes: n.attrs, Size: uint32(n.pub.DataSize), Name: n.name}
	if n.attrs&NVWritten == 0 {
		return out, nil
	}
	auth, err := nvAuth(n, false, HierarchyUnspecified)
	if err != nil {
		return nil, fmt.Errorf("reading NV index %#x: %w", index, err)
	}
	max, err := t.bufferMax()
	if err != nil {
		return nil, fmt.Errorf("reading NV index %#x: %w", index, err)
	}
	data := make([]byte, 0, n.pub.DataSize)
	for off := 0; off < int(n.pub.DataSize); off += int(max) {
		sz := min(int(max), int(n.pub.DataSize)-off)
		rsp, err := (tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    n.named(),
			Size:       uint16(sz),
			Offset:     uint16(off),
		}).Execute(t.tr)
		if err != nil {
			return nil, nvError(fmt.Sprintf("reading NV index %#x at offset %d", index, off), err)
		}
		data = append(data, rsp.Data.Buffer...)
	}
	out.Data = data
	return out, nil
}

// NVUndefine removes an index with owner or platform authorization; an index created with
// platform authorization (TPMA_NV_PLATFORMCREATE) needs Platform, else ErrWrongHierarchy
// (Platform may also remove owner indices).
// It returns existed=false and no error when the index is not defined.
func (t *TPM) NVUndefine(index uint32, auth Hierarchy) (existed bool, err error) {
	if index < nvIndexFirst || index > nvIndexLast {
		return false, fmt.Errorf("undefining NV index %#x: %w: not an NV index", index, ErrInvalidArgument)
	}
	if auth != Owner && auth != Platform {
		return false, fmt.Errorf("undefining NV index %#x: %w: %v authorization", index, ErrWrongHierarchy, auth)
	}
	hh, _ := hierarchyHandle(auth)
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.nvReadPublic(index)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("undefining NV index: %w", err)
	}
	if n.attrs&NVPlatformCreate != 0 && auth != Platform {
		return true, fmt.Errorf("undefining NV index %#x (attributes %#x): %w: %v authorization", index, n.attrs, ErrWrongHierarchy, auth)
	}
	if n.attrs&NVPolicyDelete != 0 {
		return true, fmt.Errorf("undefining NV index %#x: %w: index needs TPM2_NV_UndefineSpaceSpecial", index, ErrInvalidArgument)
	}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: hierarchyAuth(hh), NVIndex: n.named()}).Execute(t.tr); err != nil {
		return true, nvError(fmt.Sprintf("undefining NV index %#x", index), err)
	}
	t.log.Debug("undefined NV index", logKeyOp, "nv_undefine", logKeyIndex, fmt.Sprintf("%#x", index))
	return true, nil
}
