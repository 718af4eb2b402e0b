package workflow

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
)

// EnrollIntent is what an enrollment step's intent records before the request leaves: the CA
// asked, the SHA-256 of the CSR sent, and the key that may hold a certificate afterwards.
type EnrollIntent struct {
	Step            string `json:"step"`
	CA              string `json:"ca"`
	CSRSHA256       string `json:"csr_sha256"`
	KeyName         string `json:"key_name"`
	PublicKeySHA256 string `json:"public_key_sha256"`
}

// ParseEnrollIntent reads an enrollment step's intent.
func ParseEnrollIntent(raw []byte) (EnrollIntent, error) {
	var in EnrollIntent
	err := json.Unmarshal(raw, &in)
	return in, err
}

// PublicKeySHA256 is the lowercase hex SHA-256 of pub's DER SubjectPublicKeyInfo ("" when pub
// cannot be encoded).
func PublicKeySHA256(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
