package tpm

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Info holds the TPM's fixed properties and the handles in use.
type Info struct {
	// Manufacturer is TPM_PT_MANUFACTURER (e.g. 0x49424D00 for "IBM").
	Manufacturer uint32
	// ManufacturerID is Manufacturer as its ASCII vendor ID, trailing NULs and spaces removed.
	ManufacturerID string
	// VendorString is TPM_PT_VENDOR_STRING_1..4 concatenated, trailing NULs and spaces removed.
	VendorString string
	// FirmwareVersion is TPM_PT_FIRMWARE_VERSION_1 << 32 | TPM_PT_FIRMWARE_VERSION_2.
	FirmwareVersion uint64
	// Family is TPM_PT_FAMILY_INDICATOR as text ("2.0").
	Family string
	// SpecLevel, SpecRevision, SpecYear and SpecDayOfYear identify the specification version.
	SpecLevel, SpecRevision, SpecYear, SpecDayOfYear uint32
	// NVBufferMax is TPM_PT_NV_BUFFER_MAX, the largest NV read or write in one command.
	NVBufferMax uint32
	// NVIndexMax is TPM_PT_NV_INDEX_MAX, the largest NV index the TPM can define.
	NVIndexMax uint32
	// VendorTPMType is TPM_PT_VENDOR_TPM_TYPE.
	VendorTPMType uint32
	// PersistentHandles lists the persistent objects, ascending.
	PersistentHandles []uint32
	// NVIndices lists the defined NV indices, ascending.
	NVIndices []uint32
	// StartupClear is TPM_PT_STARTUP_CLEAR (see the StartupClear bits): which hierarchies are
	// enabled now.
	StartupClear uint32
}

// TPM_PT_STARTUP_CLEAR bits (TPM 2.0 Part 2, TPMA_STARTUP_CLEAR).
const (
	StartupClearPHEnable   uint32 = 1 << 0
	StartupClearSHEnable   uint32 = 1 << 1
	StartupClearEHEnable   uint32 = 1 << 2
	StartupClearPHEnableNV uint32 = 1 << 3
)

// Info reads the TPM's fixed properties, persistent handles and NV indices.
func (t *TPM) Info() (*Info, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	props, err := t.fixedProperties()
	if err != nil {
		return nil, fmt.Errorf("reading TPM properties: %w", err)
	}
	text := func(pts ...tpm2.TPMPT) string {
		var b []byte
		for _, pt := range pts {
			b = binary.BigEndian.AppendUint32(b, props[pt])
		}
		return strings.TrimRight(string(b), "\x00 ")
	}
	info := &Info{
		Manufacturer:    props[tpm2.TPMPTManufacturer],
		ManufacturerID:  text(tpm2.TPMPTManufacturer),
		VendorString:    text(tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString1+1, tpm2.TPMPTVendorString1+2, tpm2.TPMPTVendorString1+3),
		FirmwareVersion: uint64(props[tpm2.TPMPTFirmwareVersion1])<<32 | uint64(props[tpm2.TPMPTFirmwareVersion1+1]),
		Family:          text(tpm2.TPMPTFamilyIndicator),
		SpecLevel:       props[tpm2.TPMPTLevel],
		SpecRevision:    props[tpm2.TPMPTRevision],
		SpecYear:        props[tpm2.TPMPTYear],
		SpecDayOfYear:   props[tpm2.TPMPTDayofYear],
		NVBufferMax:     props[tpm2.TPMPTNVBufferMax],
		NVIndexMax:      props[tpm2.TPMPTNVIndexMax],
		VendorTPMType:   props[tpm2.TPMPTVendorTPMType],
	}
	if t.nvBufferMax == 0 {
		t.nvBufferMax = info.NVBufferMax
	}
	if info.StartupClear, err = t.property(tpm2.TPMPTStartupClear); err != nil {
		return nil, fmt.Errorf("reading TPM_PT_STARTUP_CLEAR: %w", err)
	}
	if info.PersistentHandles, err = t.handles(persistentFirst, persistentLast); err != nil {
		return nil, fmt.Errorf("listing persistent handles: %w", err)
	}
	if info.NVIndices, err = t.handles(nvIndexFirst, nvIndexLast); err != nil {
		return nil, fmt.Errorf("listing NV indices: %w", err)
	}
	return info, nil
}

// fixedProperties reads the TPM_PT_FIXED group (0x100-0x1FF).
func (t *TPM) fixedProperties() (map[tpm2.TPMPT]uint32, error) {
	props := make(map[tpm2.TPMPT]uint32)
	next := uint32(tpm2.TPMPTFamilyIndicator)
	for {
		rsp, err := (tpm2.GetCapability{
			Capability:    tpm2.TPMCapTPMProperties,
			Property:      next,
			PropertyCount: 0x100,
		}).Execute(t.tr)
		if err != nil {
			return nil, err
		}
		list, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil {
			return nil, err
		}
		for _, p := range list.TPMProperty {
			if p.Property > 0x1FF {
				return props, nil
			}
			props[p.Property] = p.Value
			next = uint32(p.Property) + 1
		}
		if !rsp.MoreData || len(list.TPMProperty) == 0 {
			return props, nil
		}
	}
}

// handles lists the handles in [first, last].
func (t *TPM) handles(first, last uint32) ([]uint32, error) {
	var out []uint32
	next := first
	for {
		rsp, err := (tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}).Execute(t.tr)
		if err != nil {
			return nil, err
		}
		list, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, err
		}
		for _, h := range list.Handle {
			if uint32(h) > last {
				return out, nil
			}
			out = append(out, uint32(h))
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(list.Handle) == 0 {
			return out, nil
		}
	}
}

// bufferMax returns TPM_PT_NV_BUFFER_MAX, read once and cached. The caller holds t.mu.
func (t *TPM) bufferMax() (uint32, error) {
	if t.nvBufferMax != 0 {
		return t.nvBufferMax, nil
	}
	v, err := t.property(tpm2.TPMPTNVBufferMax)
	if err != nil {
		return 0, fmt.Errorf("reading TPM_PT_NV_BUFFER_MAX: %w", err)
	}
	if v == 0 {
		return 0, fmt.Errorf("reading TPM_PT_NV_BUFFER_MAX: zero")
	}
	t.nvBufferMax = v
	return v, nil
}

// property reads one TPM property. The caller holds t.mu.
func (t *TPM) property(pt tpm2.TPMPT) (uint32, error) {
	rsp, err := (tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(pt),
		PropertyCount: 1,
	}).Execute(t.tr)
	if err != nil {
		return 0, err
	}
	list, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, err
	}
	if len(list.TPMProperty) == 0 || list.TPMProperty[0].Property != pt {
		return 0, fmt.Errorf("property %#x missing", uint32(pt))
	}
	return list.TPMProperty[0].Value, nil
}
