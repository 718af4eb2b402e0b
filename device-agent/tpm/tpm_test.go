package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/devid-station/devid/device-agent/tpm"
)

func TestOpenUnknownSpec(t *testing.T) {
	for _, spec := range []string{"", "tpm", "swtpm:127.0.0.1:1"} {
		if _, err := tpm.Open(spec); !errors.Is(err, tpm.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument", spec, err)
		}
	}
	if _, err := tpm.Open("device:/nonexistent/tpm"); err == nil {
		t.Error("Open of a missing device succeeded")
	}
}

func TestInfo(t *testing.T) {
	tp := openSim(t)
	if got := tp.Description(); got != "simulator" {
		t.Errorf("Description = %q", got)
	}
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.NVBufferMax == 0 || info.NVIndexMax < 2048 || info.Family != "2.0" || info.Manufacturer == 0 || info.ManufacturerID == "" || info.SpecYear < 2013 || info.SpecDayOfYear == 0 || info.SpecDayOfYear > 366 {
		t.Errorf("implausible Info %+v", info)
	}
	if len(info.PersistentHandles) != 0 {
		t.Errorf("fresh simulator has persistent handles %#x", info.PersistentHandles)
	}
	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: 0x01500000, Auth: tpm.Owner, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	info, err = tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.PersistentHandles, tpm.IDevIDHandle) {
		t.Errorf("PersistentHandles %#x lack %#x", info.PersistentHandles, tpm.IDevIDHandle)
	}
	if !slices.Contains(info.NVIndices, 0x01500000) {
		t.Errorf("NVIndices %#x lack 0x01500000", info.NVIndices)
	}
}

// ekCertNV wraps a certificate as some vendors store it: a 4-byte header and padding.
func ekCertNV(cert []byte) []byte {
	out := []byte{0x10, 0x01, 0x00, 0x30} // the last header byte happens to be a SEQUENCE tag
	out = append(out, cert...)
	return append(out, bytes.Repeat([]byte{0xFF}, 37)...)
}

func TestReadEK(t *testing.T) {
	for _, tc := range []struct {
		name   string
		alg    tpm.Algorithm
		handle uint32
		index  uint32
	}{
		{"RSA", tpm.RSA2048, tpm.EKHandleRSA, tpm.EKCertIndexRSA},
		{"ECC", tpm.ECCP256, tpm.EKHandleECC, tpm.EKCertIndexECC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := openSim(t)
			ek, err := tp.ReadEK(tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			if ek.Persisted || ek.Handle != 0 || ek.Certificate != nil || ek.CertificateIndex != tc.index || ek.Algorithm != tc.alg {
				t.Errorf("recreated EK = %+v", ek)
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
			if err != nil {
				t.Fatal(err)
			}
			want := tpm.EKTemplate(tc.alg)
			if pub.ObjectAttributes != want.ObjectAttributes || !bytes.Equal(pub.AuthPolicy.Buffer, want.AuthPolicy.Buffer) || pub.Type != want.Type {
				t.Errorf("EK public area does not follow the default template")
			}
			if _, err := tpm.PublicKey(ek.Public); err != nil {
				t.Errorf("PublicKey(EK): %v", err)
			}

			// The vendor persists the EK and stores its certificate behind a header.
			provisioned, err := tp.ProvisionEK(tc.alg, tc.handle)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(provisioned, ek.Public) {
				t.Error("persisted EK differs from the recreated one (same seed, same template)")
			}
			again, err := tp.ProvisionEK(tc.alg, tc.handle)
			if err != nil || !bytes.Equal(again, provisioned) {
				t.Errorf("second ProvisionEK = %v", err)
			}
			cert := selfSigned(t, "EK "+tc.name)
			if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: tc.index, Auth: tpm.Platform, Data: ekCertNV(cert), WriteLock: true}); err != nil {
				t.Fatal(err)
			}
			ek2, err := tp.ReadEK(tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			if !ek2.Persisted || ek2.Handle != tc.handle || !bytes.Equal(ek2.Public, ek.Public) {
				t.Errorf("persisted EK = %+v", ek2)
			}
			if !bytes.Equal(ek2.Certificate, cert) {
				t.Errorf("certificate = %x, want %x", ek2.Certificate, cert)
			}
			if ek2.CertificateRawSize != uint32(len(cert)+4+37) {
				t.Errorf("CertificateRawSize = %d", ek2.CertificateRawSize)
			}
		})
	}
}

func TestProvisionEKErrors(t *testing.T) {
	tp := openSim(t)
	if _, err := tp.ProvisionEK(tpm.ECCP256, tpm.EKHandleECC); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.ProvisionEK(tpm.RSA2048, tpm.EKHandleECC); !errors.Is(err, tpm.ErrHandleOccupied) {
		t.Errorf("RSA EK over the ECC EK: %v, want ErrHandleOccupied", err)
	}
	if _, err := tp.ProvisionEK(tpm.RSA2048, 0x81800001); !errors.Is(err, tpm.ErrInvalidArgument) {
		t.Errorf("platform-range handle: %v, want ErrInvalidArgument", err)
	}
	if _, err := tp.ProvisionEK(tpm.AlgUnspecified, tpm.EKHandleRSA); !errors.Is(err, tpm.ErrInvalidArgument) {
		t.Errorf("no algorithm: %v, want ErrInvalidArgument", err)
	}
}

func TestReadEKIgnoresForeignObjectAtEKHandle(t *testing.T) {
	tp := openSim(t)
	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.EKHandleECC})
	ek, err := tp.ReadEK(tpm.ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	if ek.Persisted {
		t.Error("a DevID key at the EK handle was taken for the EK")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt {
		t.Error("recreated EK is not a restricted decryption key")
	}
}

func TestReadEKChain(t *testing.T) {
	tp := openSim(t)
	if chain, err := tp.ReadEKChain(); err != nil || len(chain) != 0 {
		t.Fatalf("empty chain = %d certs, %v", len(chain), err)
	}
	c1, c2, c3 := selfSigned(t, "EK root"), selfSigned(t, "EK intermediate"), selfSigned(t, "public root")
	first := append(append(append([]byte{}, c1...), c2...), make([]byte, 20)...)
	for _, w := range []tpm.NVWriteRequest{
		{Index: tpm.EKChainIndexFirst, Auth: tpm.Platform, Data: first},
		{Index: tpm.EKChainIndexFirst + 1, Auth: tpm.Platform, Data: c3},
	} {
		if _, err := tp.NVWrite(w); err != nil {
			t.Fatal(err)
		}
	}
	chain, err := tp.ReadEKChain()
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || !bytes.Equal(chain[0], c1) || !bytes.Equal(chain[1], c2) || !bytes.Equal(chain[2], c3) {
		t.Errorf("chain has %d certs, not c1, c2, c3", len(chain))
	}
}

func TestCreateKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		role   tpm.Role
		alg    tpm.Algorithm
		handle uint32
	}{
		{"IDevID-ECC", tpm.IDevID, tpm.ECCP256, tpm.IDevIDHandle},
		{"IDevID-RSA", tpm.IDevID, tpm.RSA2048, tpm.IDevIDHandle},
		{"LDevID-ECC", tpm.LDevID, tpm.ECCP256, tpm.LDevIDHandle},
		{"LDevID-RSA", tpm.LDevID, tpm.RSA2048, 0x81000010},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := openSim(t)
			req := tpm.KeyRequest{Role: tc.role, Algorithm: tc.alg, Handle: tc.handle}
			k := mustCreate(t, tp, req)
			if k.Existed || k.Handle != tc.handle || k.SRKCreated != (tc.role == tpm.LDevID) {
				t.Errorf("first CreateKey = %+v", k)
			}
			name, err := tpm.Name(k.Public)
			if err != nil || !bytes.Equal(name, k.Name) {
				t.Errorf("Name(Public) = %x, %v; key Name %x", name, err, k.Name)
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.Public)
			if err != nil {
				t.Fatal(err)
			}
			a := pub.ObjectAttributes
			if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || !a.SignEncrypt || a.Decrypt || a.Restricted {
				t.Errorf("attributes %+v do not follow the DevID template", a)
			}
			if _, err := tpm.PublicKey(k.Public); err != nil {
				t.Error(err)
			}

			again := mustCreate(t, tp, req)
			if !again.Existed || again.SRKCreated || !bytes.Equal(again.Name, k.Name) || !bytes.Equal(again.Public, k.Public) {
				t.Errorf("second CreateKey = %+v, want the same key with Existed", again)
			}

			other := tpm.RSA2048
			if tc.alg == tpm.RSA2048 {
				other = tpm.ECCP256
			}
			if _, err := tp.CreateKey(tpm.KeyRequest{Role: tc.role, Algorithm: other, Handle: tc.handle}); !errors.Is(err, tpm.ErrHandleOccupied) {
				t.Errorf("other algorithm at the handle: %v, want ErrHandleOccupied", err)
			}
			otherRole := tpm.LDevID
			if tc.role == tpm.LDevID {
				otherRole = tpm.IDevID
			}
			if _, err := tp.CreateKey(tpm.KeyRequest{Role: otherRole, Algorithm: tc.alg, Handle: tc.handle}); !errors.Is(err, tpm.ErrHandleOccupied) {
				t.Errorf("same template, other hierarchy: %v, want ErrHandleOccupied", err)
			}
		})
	}
}

func TestCreateKeyLDevIDNeedsItsSRK(t *testing.T) {
	tp := openSim(t)
	mustCreate(t, tp, tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle})
	// An RSA LDevID wants an RSA SRK, but an ECC SRK sits at the SRK handle asked for.
	if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.RSA2048, Handle: 0x81020010, SRKHandle: tpm.SRKHandleECC}); !errors.Is(err, tpm.ErrHandleOccupied) {
		t.Errorf("RSA LDevID over an ECC SRK: %v, want ErrHandleOccupied", err)
	}
	// The same key asked under another SRK is not the key asked for.
	if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle, SRKHandle: 0x81000020}); !errors.Is(err, tpm.ErrHandleOccupied) {
		t.Errorf("LDevID under another SRK: %v, want ErrHandleOccupied", err)
	}
}

// TestCreateKeyDefaultSRKHandles checks that without an SRK handle the SRK lands where the TCG
// handle registry puts it: the ECC SRK at 0x81000002, the RSA SRK at 0x81000001.
func TestCreateKeyDefaultSRKHandles(t *testing.T) {
	tp := openSim(t)
	ecc := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle})
	rsaKey := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.RSA2048, Handle: tpm.LAKHandle})
	if !ecc.SRKCreated || !rsaKey.SRKCreated {
		t.Fatalf("SRKCreated = %v, %v; want both", ecc.SRKCreated, rsaKey.SRKCreated)
	}
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []uint32{0x81000001, 0x81000002, 0x81020002, 0x81020003} {
		if !slices.Contains(info.PersistentHandles, h) {
			t.Errorf("PersistentHandles %#x lack %#x", info.PersistentHandles, h)
		}
	}
	// Each SRK is of its algorithm: an ECC LDevID under the RSA SRK is refused.
	if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: 0x81020010, SRKHandle: 0x81000001}); !errors.Is(err, tpm.ErrHandleOccupied) {
		t.Errorf("ECC LDevID under the RSA SRK: %v, want ErrHandleOccupied", err)
	}
}

func TestCreateKeyInvalid(t *testing.T) {
	tp := openSim(t)
	withAttrs := func(f func(*tpm2.TPMAObject)) []byte {
		tmpl := tpm.DevIDTemplate(tpm.ECCP256)
		f(&tmpl.ObjectAttributes)
		return tpm2.Marshal(tmpl)
	}
	good := tpm2.Marshal(tpm.DevIDTemplate(tpm.ECCP256))
	for _, tc := range []struct {
		name string
		req  tpm.KeyRequest
	}{
		{"transient handle", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: 0x80000001}},
		{"platform range", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: 0x81800000}},
		{"NV index", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: 0x01C90000}},
		{"no role", tpm.KeyRequest{Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle}},
		{"no algorithm", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle}},
		{"SRK at the key handle", tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.SRKHandleECC}},
		{"garbage template", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: []byte{0x00, 0x23, 0x00}}},
		{"trailing bytes", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: append(slices.Clone(good), 0)}},
		{"decrypt", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: withAttrs(func(a *tpm2.TPMAObject) { a.Decrypt = true })}},
		{"restricted", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: withAttrs(func(a *tpm2.TPMAObject) { a.Restricted = true })}},
		{"not signing", tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: withAttrs(func(a *tpm2.TPMAObject) { a.SignEncrypt = false })}},
		{"algorithm mismatch", tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: tpm.IDevIDHandle, Template: good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tp.CreateKey(tc.req); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("CreateKey = %v, want ErrInvalidArgument", err)
			}
		})
	}
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	if len(info.PersistentHandles) != 0 {
		t.Errorf("rejected requests left persistent objects %#x", info.PersistentHandles)
	}
}

func TestCreateKeyCustomTemplate(t *testing.T) {
	tp := openSim(t)
	tmpl := tpm.DevIDTemplate(tpm.RSA2048)
	tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
		KeyBits: 2048,
	})
	k := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Handle: tpm.IDevIDHandle, Template: tpm2.Marshal(tmpl)})
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.Public)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := pub.Parameters.RSADetail(); err != nil || d.Scheme.Scheme != tpm2.TPMAlgRSASSA {
		t.Errorf("template's scheme not applied: %v", err)
	}
	// The plain DevID template is another template: the handle is occupied for it.
	if _, err := tp.CreateKey(tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: tpm.IDevIDHandle}); !errors.Is(err, tpm.ErrHandleOccupied) {
		t.Errorf("default template over a custom one: %v, want ErrHandleOccupied", err)
	}
}

// makeCredential does what the station does: TPM2_MakeCredential in software for the EK.
func makeCredential(t *testing.T, ekPublic, name, secret []byte) (blob, encSecret []byte) {
	t.Helper()
	return makeCredentialB(t, ekPublic, name, secret)
}

func makeCredentialB(t testing.TB, ekPublic, name, secret []byte) (blob, encSecret []byte) {
	t.Helper()
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	blob, encSecret, err = tpm2.CreateCredential(rand.Reader, ek, name, secret)
	if err != nil {
		t.Fatal(err)
	}
	return blob, encSecret
}

func TestActivateCredential(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ekAlg     tpm.Algorithm
		keyAlg    tpm.Algorithm
		role      tpm.Role
		persistEK bool
	}{
		{"RSA-EK/IDevID-ECC", tpm.RSA2048, tpm.ECCP256, tpm.IDevID, false},
		{"ECC-EK/IDevID-ECC", tpm.ECCP256, tpm.ECCP256, tpm.IDevID, false},
		{"RSA-EK-persisted/IDevID-RSA", tpm.RSA2048, tpm.RSA2048, tpm.IDevID, true},
		{"ECC-EK-persisted/LDevID-ECC", tpm.ECCP256, tpm.ECCP256, tpm.LDevID, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := openSim(t)
			if tc.persistEK {
				h := tpm.EKHandleRSA
				if tc.ekAlg == tpm.ECCP256 {
					h = tpm.EKHandleECC
				}
				if _, err := tp.ProvisionEK(tc.ekAlg, h); err != nil {
					t.Fatal(err)
				}
			}
			ek, err := tp.ReadEK(tc.ekAlg)
			if err != nil {
				t.Fatal(err)
			}
			k := mustCreate(t, tp, tpm.KeyRequest{Role: tc.role, Algorithm: tc.keyAlg, Handle: 0x81020001})
			secret := []byte("0123456789abcdef0123456789abcdef")
			blob, enc := makeCredential(t, ek.Public, k.Name, secret)
			got, err := tp.ActivateCredential(k.Handle, tc.ekAlg, blob, enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("secret = %x, want %x", got, secret)
			}
		})
	}
}

// TestActivateCredentialRefusesOtherKeys is the core security property: a credential is
// released only for the key whose Name it was made for, and only by the TPM holding the EK.
func TestActivateCredentialRefusesOtherKeys(t *testing.T) {
	tp := openSim(t)
	ek, err := tp.ReadEK(tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	k := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	other := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.ECCP256, Handle: tpm.LDevIDHandle})

	// A key that lives outside any TPM, dressed in the DevID template.
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	softPub := tpm.DevIDTemplate(tpm.ECCP256)
	softPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: soft.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: soft.Y.FillBytes(make([]byte, 32))},
	})
	softName, err := tpm.Name(tpm2.Marshal(softPub))
	if err != nil {
		t.Fatal(err)
	}

	// An EK that is not this TPM's.
	softEK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	foreignEK := tpm.EKTemplate(tpm.RSA2048)
	foreignEK.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: softEK.N.Bytes()})

	secret := []byte("station nonce, 32 bytes long....")
	for _, tc := range []struct {
		name string
		ek   []byte
		key  []byte
	}{
		{"software key name", ek.Public, softName},
		{"another TPM key's name", ek.Public, other.Name},
		{"foreign EK", tpm2.Marshal(foreignEK), k.Name},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, enc := makeCredential(t, tc.ek, tc.key, secret)
			got, err := tp.ActivateCredential(k.Handle, tpm.RSA2048, blob, enc)
			if !errors.Is(err, tpm.ErrActivationFailed) {
				t.Fatalf("ActivateCredential = %x, %v; want ErrActivationFailed", got, err)
			}
			if tpm.ResponseCode(err) == 0 {
				t.Errorf("error %v carries no TPM response code", err)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("corrupted blob", func(t *testing.T) {
		blob, enc := makeCredential(t, ek.Public, k.Name, secret)
		blob[len(blob)-1] ^= 1
		if _, err := tp.ActivateCredential(k.Handle, tpm.RSA2048, blob, enc); !errors.Is(err, tpm.ErrActivationFailed) {
			t.Errorf("ActivateCredential = %v, want ErrActivationFailed", err)
		}
	})
	t.Run("unknown key handle", func(t *testing.T) {
		blob, enc := makeCredential(t, ek.Public, k.Name, secret)
		if _, err := tp.ActivateCredential(0x81020099, tpm.RSA2048, blob, enc); !errors.Is(err, tpm.ErrNotFound) {
			t.Errorf("ActivateCredential = %v, want ErrNotFound", err)
		}
	})
}

func digestOf(h crypto.Hash, msg []byte) []byte {
	if h == crypto.SHA384 {
		d := sha512.Sum384(msg)
		return d[:]
	}
	d := sha256.Sum256(msg)
	return d[:]
}

func TestSign(t *testing.T) {
	tp := openSim(t)
	ecc := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	rsaKey := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.LDevID, Algorithm: tpm.RSA2048, Handle: tpm.LDevIDHandle})
	msg := []byte("station nonce")
	for _, tc := range []struct {
		name   string
		key    *tpm.Key
		hash   crypto.Hash
		scheme tpm.Scheme
	}{
		{"ECDSA-SHA256", ecc, crypto.SHA256, tpm.ECDSA},
		{"ECDSA-SHA384-default", ecc, crypto.SHA384, tpm.SchemeDefault},
		{"RSASSA-SHA256", rsaKey, crypto.SHA256, tpm.RSASSA},
		{"RSASSA-SHA384-default", rsaKey, crypto.SHA384, tpm.SchemeDefault},
		{"RSAPSS-SHA256", rsaKey, crypto.SHA256, tpm.RSAPSS},
		{"RSAPSS-SHA384", rsaKey, crypto.SHA384, tpm.RSAPSS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := digestOf(tc.hash, msg)
			sig, err := tp.Sign(tc.key.Handle, d, tc.hash, tc.scheme)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := tpm.PublicKey(tc.key.Public)
			if err != nil {
				t.Fatal(err)
			}
			switch p := pub.(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(p, d, sig) {
					t.Error("ECDSA signature does not verify")
				}
			case *rsa.PublicKey:
				if tc.scheme == tpm.RSAPSS {
					err = rsa.VerifyPSS(p, tc.hash, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
				} else {
					err = rsa.VerifyPKCS1v15(p, tc.hash, d, sig)
				}
				if err != nil {
					t.Errorf("RSA signature does not verify: %v", err)
				}
			}
		})
	}
	d := digestOf(crypto.SHA256, msg)
	for _, tc := range []struct {
		name   string
		handle uint32
		digest []byte
		hash   crypto.Hash
		scheme tpm.Scheme
		want   error
	}{
		{"unknown handle", 0x81020077, d, crypto.SHA256, tpm.SchemeDefault, tpm.ErrNotFound},
		{"PSS on ECC", ecc.Handle, d, crypto.SHA256, tpm.RSAPSS, tpm.ErrInvalidArgument},
		{"ECDSA on RSA", rsaKey.Handle, d, crypto.SHA256, tpm.ECDSA, tpm.ErrInvalidArgument},
		{"short digest", ecc.Handle, d[:20], crypto.SHA256, tpm.SchemeDefault, tpm.ErrInvalidArgument},
		{"SHA-1", ecc.Handle, d[:20], crypto.SHA1, tpm.SchemeDefault, tpm.ErrInvalidArgument},
		{"SRK is no signing key", tpm.SRKHandleRSA, d, crypto.SHA256, tpm.SchemeDefault, tpm.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tp.Sign(tc.handle, tc.digest, tc.hash, tc.scheme); !errors.Is(err, tc.want) {
				t.Errorf("Sign = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignerConcurrent(t *testing.T) {
	tp := openSim(t)
	k := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: tpm.IDevIDHandle})
	s, err := tp.Signer(k.Handle)
	if err != nil {
		t.Fatal(err)
	}
	want, err := tpm.PublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public().(*rsa.PublicKey)
	if !pub.Equal(want) {
		t.Fatal("Signer.Public differs from the key's public area")
	}
	if _, err := tp.Signer(0x81020050); !errors.Is(err, tpm.ErrNotFound) {
		t.Errorf("Signer(unknown) = %v, want ErrNotFound", err)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := digestOf(crypto.SHA256, []byte{byte(i)})
			var opts crypto.SignerOpts = crypto.SHA256
			if i%2 == 1 {
				opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			}
			sig, err := s.Sign(rand.Reader, d, opts)
			if err != nil {
				t.Error(err)
				return
			}
			if pss, ok := opts.(*rsa.PSSOptions); ok {
				err = rsa.VerifyPSS(pub, crypto.SHA256, d, sig, pss)
			} else {
				err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d, sig)
			}
			if err != nil {
				t.Errorf("signature %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

func TestBuildCSR(t *testing.T) {
	tp := openSim(t)
	ecc := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	rsaKey := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.RSA2048, Handle: 0x81020001})

	// The subject keeps the station's exact encoding (PrintableString serialNumber, order).
	subject, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Example Devices"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "unit"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 5}, Value: "SN-000123"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	exts := []tpm.Extension{
		{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: []byte{0x30, 0x03, 0x82, 0x01, 0x61}},
		{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x04, 0x02, 0xAB, 0xCD}},
	}
	for _, tc := range []struct {
		name   string
		key    *tpm.Key
		scheme tpm.Scheme
		alg    x509.SignatureAlgorithm
	}{
		{"ECDSA", ecc, tpm.SchemeDefault, x509.ECDSAWithSHA256},
		{"RSA-PKCS1v15", rsaKey, tpm.RSASSA, x509.SHA256WithRSA},
		{"RSA-PSS", rsaKey, tpm.RSAPSS, x509.SHA256WithRSAPSS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := tp.BuildCSR(tc.key.Handle, subject, exts, tc.scheme)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CheckSignature: %v", err)
			}
			if csr.SignatureAlgorithm != tc.alg {
				t.Errorf("signature algorithm %v, want %v", csr.SignatureAlgorithm, tc.alg)
			}
			if !bytes.Equal(csr.RawSubject, subject) {
				t.Errorf("subject %x, want %x", csr.RawSubject, subject)
			}
			if len(csr.Extensions) != len(exts) {
				t.Fatalf("%d extensions, want %d", len(csr.Extensions), len(exts))
			}
			for i := range exts {
				g, w := csr.Extensions[i], exts[i]
				if !g.Id.Equal(w.Id) || g.Critical != w.Critical || !bytes.Equal(g.Value, w.Value) {
					t.Errorf("extension %d = %+v, want %+v", i, g, w)
				}
			}
			want, err := tpm.PublicKey(tc.key.Public)
			if err != nil {
				t.Fatal(err)
			}
			if !want.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
				t.Error("CSR key is not the TPM key")
			}
		})
	}
	for _, tc := range []struct {
		name    string
		handle  uint32
		subject []byte
		scheme  tpm.Scheme
		want    error
	}{
		{"unknown handle", 0x81020042, subject, tpm.SchemeDefault, tpm.ErrNotFound},
		{"bad subject", ecc.Handle, []byte{0x30, 0x05, 0x01}, tpm.SchemeDefault, tpm.ErrInvalidArgument},
		{"PSS on ECC", ecc.Handle, subject, tpm.RSAPSS, tpm.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tp.BuildCSR(tc.handle, tc.subject, exts, tc.scheme); !errors.Is(err, tc.want) {
				t.Errorf("BuildCSR = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNV(t *testing.T) {
	tp := openSim(t)
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1500)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	const idx = 0x01500001
	res, err := tp.NVWrite(tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	wantChunks := (len(data) + int(info.NVBufferMax) - 1) / int(info.NVBufferMax)
	if !res.Defined || res.Chunks != wantChunks || res.Chunks < 2 || res.Locked || len(res.Name) != 34 {
		t.Errorf("NVWrite = %+v, want defined, %d chunks", res, wantChunks)
	}
	got, err := tp.NVRead(idx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, data) || got.Size != 1500 || got.Attributes&tpm.NVWritten == 0 || !bytes.Equal(got.Name, res.Name) {
		t.Errorf("NVRead = size %d attrs %#x, data equal %v", got.Size, got.Attributes, bytes.Equal(got.Data, data))
	}
	if got.Attributes&^tpm.NVStateBits != tpm.NVDefaultOwner {
		t.Errorf("attributes %#x, want %#x", got.Attributes&^tpm.NVStateBits, tpm.NVDefaultOwner)
	}

	// Rewriting reuses the index.
	data2 := bytes.Repeat([]byte{7}, 1500)
	res, err = tp.NVWrite(tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner, Data: data2})
	if err != nil || res.Defined {
		t.Fatalf("rewrite = %+v, %v", res, err)
	}
	if got, err := tp.NVRead(idx); err != nil || !bytes.Equal(got.Data, data2) {
		t.Errorf("reread: %v", err)
	}

	for _, tc := range []struct {
		name string
		req  tpm.NVWriteRequest
		want error
	}{
		{"data larger than index", tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner, Size: 1500, Data: make([]byte, 1501)}, tpm.ErrNVTooLarge},
		{"other size", tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner, Data: make([]byte, 1400)}, tpm.ErrHandleOccupied},
		{"other attributes", tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner, Attributes: tpm.NVDefaultOwner | tpm.NVWriteSTClear, Data: data}, tpm.ErrHandleOccupied},
		{"other hierarchy's defaults", tpm.NVWriteRequest{Index: idx, Auth: tpm.Platform, Data: data}, tpm.ErrHandleOccupied},
		{"not an NV index", tpm.NVWriteRequest{Index: 0x81000001, Auth: tpm.Owner, Data: data}, tpm.ErrInvalidArgument},
		{"no auth", tpm.NVWriteRequest{Index: idx, Data: data}, tpm.ErrInvalidArgument},
		{"endorsement auth", tpm.NVWriteRequest{Index: idx, Auth: tpm.Endorsement, Data: data}, tpm.ErrWrongHierarchy},
		{"empty", tpm.NVWriteRequest{Index: idx, Auth: tpm.Owner}, tpm.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tp.NVWrite(tc.req); !errors.Is(err, tc.want) {
				t.Errorf("NVWrite = %v, want %v", err, tc.want)
			}
		})
	}

	// Platform index, written and locked.
	const pidx = tpm.IDevIDCertIndex
	cert := selfSigned(t, "IDevID")
	res, err = tp.NVWrite(tpm.NVWriteRequest{Index: pidx, Auth: tpm.Platform, Size: 2048, Data: cert, WriteLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Defined || !res.Locked {
		t.Errorf("locked write = %+v", res)
	}
	got, err = tp.NVRead(pidx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attributes&tpm.NVWriteLocked == 0 || got.Size != 2048 || !bytes.Equal(got.Data[:len(cert)], cert) {
		t.Errorf("locked index: attrs %#x size %d", got.Attributes, got.Size)
	}
	if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: pidx, Auth: tpm.Platform, Size: 2048, Data: cert}); !errors.Is(err, tpm.ErrNVLocked) {
		t.Errorf("write to a locked index = %v, want ErrNVLocked", err)
	}

	if _, err := tp.NVRead(0x01500099); !errors.Is(err, tpm.ErrNotFound) {
		t.Errorf("NVRead(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := tp.NVUndefine(pidx, tpm.Owner); !errors.Is(err, tpm.ErrWrongHierarchy) {
		t.Errorf("NVUndefine(platform index, Owner) = %v, want ErrWrongHierarchy", err)
	}
	for _, tc := range []struct {
		name  string
		index uint32
		auth  tpm.Hierarchy
		want  bool
	}{
		{"platform index", pidx, tpm.Platform, true},
		{"platform index again", pidx, tpm.Platform, false},
		{"owner index", idx, tpm.Owner, true},
		{"absent", 0x01500099, tpm.Owner, false},
	} {
		t.Run("undefine "+tc.name, func(t *testing.T) {
			existed, err := tp.NVUndefine(tc.index, tc.auth)
			if err != nil || existed != tc.want {
				t.Errorf("NVUndefine = %v, %v; want %v", existed, err, tc.want)
			}
		})
	}
	if _, err := tp.NVRead(idx); !errors.Is(err, tpm.ErrNotFound) {
		t.Errorf("NVRead after undefine = %v, want ErrNotFound", err)
	}
}

func TestNVUnwrittenIndex(t *testing.T) {
	tp := openSim(t)
	// An index defined by someone else and never written reads as no data.
	if _, err := tp.NVWrite(tpm.NVWriteRequest{Index: 0x01500002, Auth: tpm.Owner, Size: 16}); err != nil {
		t.Fatal(err)
	}
	got, err := tp.NVRead(0x01500002)
	if err != nil {
		t.Fatal(err)
	}
	if got.Data != nil || got.Size != 16 || got.Attributes&tpm.NVWritten != 0 {
		t.Errorf("unwritten index = %+v", got)
	}
}

func TestEvict(t *testing.T) {
	tp := openSim(t)
	k := mustCreate(t, tp, tpm.KeyRequest{Role: tpm.IDevID, Algorithm: tpm.ECCP256, Handle: tpm.IDevIDHandle})
	for _, tc := range []struct {
		name    string
		handle  uint32
		auth    tpm.Hierarchy
		existed bool
		want    error
	}{
		{"platform range with owner auth", 0x81800001, tpm.Owner, false, tpm.ErrWrongHierarchy},
		{"owner range with platform auth", k.Handle, tpm.Platform, false, tpm.ErrWrongHierarchy},
		{"not persistent", 0x80000000, tpm.Owner, false, tpm.ErrInvalidArgument},
		{"key", k.Handle, tpm.Owner, true, nil},
		{"key again", k.Handle, tpm.Owner, false, nil},
		{"absent platform object", 0x81800001, tpm.Platform, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			existed, err := tp.Evict(tc.handle, tc.auth)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || existed != tc.existed {
				t.Errorf("Evict = %v, %v; want %v, %v", existed, err, tc.existed, tc.want)
			}
		})
	}
	if _, err := tp.Sign(k.Handle, digestOf(crypto.SHA256, nil), crypto.SHA256, tpm.SchemeDefault); !errors.Is(err, tpm.ErrNotFound) {
		t.Errorf("Sign after Evict = %v, want ErrNotFound", err)
	}
}

func TestPublicKeyAndName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte{1, 2, 3}},
		{"trailing", append(tpm2.Marshal(tpm.EKTemplate(tpm.RSA2048)), 0xFF)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tpm.PublicKey(tc.in); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("PublicKey = %v, want ErrInvalidArgument", err)
			}
			if _, err := tpm.Name(tc.in); !errors.Is(err, tpm.ErrInvalidArgument) {
				t.Errorf("Name = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestResponseCode(t *testing.T) {
	if rc := tpm.ResponseCode(errors.New("plain")); rc != 0 {
		t.Errorf("ResponseCode(plain) = %#x", rc)
	}
	if rc := tpm.ResponseCode(nil); rc != 0 {
		t.Errorf("ResponseCode(nil) = %#x", rc)
	}
	tp := openSim(t)
	_, err := tp.NVRead(0x01500099)
	if rc := tpm.ResponseCode(err); rc&0xFF != 0x8B {
		t.Errorf("ResponseCode(NV read of an absent index) = %#x, want TPM_RC_HANDLE", rc)
	}
}
