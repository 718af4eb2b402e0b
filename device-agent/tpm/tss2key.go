package tpm

import (
	"bytes"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// TSS2PEMType is the PEM block type of a TSS2 private key file (the format of the tpm2-tss
// engine, the tpm2-openssl provider, tpm2-tools' tpm2_encodeobject and tpm2-pkcs11's
// tpm2_ptool link).
const TSS2PEMType = "TSS2 PRIVATE KEY"

// oidLoadableKey is the TSS2 key type of a key to load with TPM2_Load under its parent.
var oidLoadableKey = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 3}

// tss2Key is the ASN.1 TPMKey structure of a TSS2 private key file.
type tss2Key struct {
	Type      asn1.ObjectIdentifier
	EmptyAuth bool `asn1:"explicit,tag:0,optional"`
	Parent    int64
	Public    []byte // TPM2B_PUBLIC
	Private   []byte // TPM2B_PRIVATE
}

// TSS2PrivateKeyPEM encodes a loadable TPM key as a TSS2 PRIVATE KEY PEM file: its parent's
// persistent handle, its TPM-marshalled TPMT_PUBLIC and its TPM2B_PRIVATE (the private part
// as TPM2_Create returned it, wrapped by the parent: it is usable only inside that TPM). The
// key's auth value is empty.
func TSS2PrivateKeyPEM(parent uint32, public, private []byte) ([]byte, error) {
	if len(public) == 0 || len(private) == 0 {
		return nil, fmt.Errorf("%w: TSS2 key needs the public and the private area", ErrInvalidArgument)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, fmt.Errorf("%w: public area: %v", ErrInvalidArgument, err)
	}
	der, err := asn1.Marshal(tss2Key{
		Type: oidLoadableKey, EmptyAuth: true, Parent: int64(parent),
		Public: tpm2.Marshal(tpm2.New2B(*pub)), Private: private,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding TSS2 key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: TSS2PEMType, Bytes: der}), nil
}

// ParseTSS2PrivateKeyPEM returns the parent handle and the TPM-marshalled TPMT_PUBLIC of a
// loadable TSS2 PRIVATE KEY PEM file.
func ParseTSS2PrivateKeyPEM(data []byte) (parent uint32, public []byte, err error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != TSS2PEMType {
		return 0, nil, errors.New("no " + TSS2PEMType + " PEM block")
	}
	var k tss2Key
	rest, err := asn1.Unmarshal(b.Bytes, &k)
	if err != nil || len(rest) > 0 {
		return 0, nil, fmt.Errorf("malformed TSS2 key: %v", err)
	}
	if !k.Type.Equal(oidLoadableKey) || k.Parent < 0 || k.Parent > 0xFFFFFFFF || len(k.Private) == 0 {
		return 0, nil, errors.New("TSS2 key is not a loadable key with a parent handle and a private part")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.Public)
	if err != nil {
		return 0, nil, fmt.Errorf("TSS2 key public area: %w", err)
	}
	if !bytes.Equal(tpm2.Marshal(*pub), k.Public) {
		return 0, nil, errors.New("TSS2 key public area has trailing bytes")
	}
	return uint32(k.Parent), pub.Bytes(), nil
}
