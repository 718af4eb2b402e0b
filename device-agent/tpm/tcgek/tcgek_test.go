package tcgek

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestPolicies recomputes each EK's authorization policy from its parts: PolicyA is
// PolicySecret(TPM_RH_ENDORSEMENT) in the name algorithm, and a high-range EK's policy is
// PolicyOR of its branches.
func TestPolicies(t *testing.T) {
	for _, ty := range All() {
		t.Run(ty.Name, func(t *testing.T) {
			pc, err := tpm2.NewPolicyCalculator(ty.Public.NameAlg)
			if err != nil {
				t.Fatal(err)
			}
			if err := (tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement}).Update(pc); err != nil {
				t.Fatal(err)
			}
			policyA := pc.Hash().Digest
			if len(ty.PolicyBranches) == 0 {
				if !bytes.Equal(policyA, ty.Public.AuthPolicy.Buffer) {
					t.Fatalf("low-range policy %x, want PolicyA %x", ty.Public.AuthPolicy.Buffer, policyA)
				}
				return
			}
			if !bytes.Equal(ty.PolicyBranches[0], policyA) {
				t.Fatalf("first branch %x, want PolicyA %x", ty.PolicyBranches[0], policyA)
			}
			pc.Reset()
			var list tpm2.TPMLDigest
			for _, b := range ty.PolicyBranches {
				list.Digests = append(list.Digests, tpm2.TPM2BDigest{Buffer: b})
			}
			if err := (tpm2.PolicyOr{PHashList: list}).Update(pc); err != nil {
				t.Fatal(err)
			}
			if got := pc.Hash().Digest; !bytes.Equal(got, ty.Public.AuthPolicy.Buffer) {
				t.Fatalf("PolicyOR(branches) = %x, template policy %x", got, ty.Public.AuthPolicy.Buffer)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	for _, ty := range All() {
		p := ty.Public
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte{1}}})
		if p.Type == tpm2.TPMAlgRSA {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: []byte{1}})
		}
		got, ok := Match(p)
		if !ok || got.Name != ty.Name {
			t.Errorf("%s: Match = %s, %v", ty.Name, got.Name, ok)
		}
		p.ObjectAttributes.SignEncrypt = true
		if _, ok := Match(p); ok {
			t.Errorf("%s: a signing key matched", ty.Name)
		}
	}
}
