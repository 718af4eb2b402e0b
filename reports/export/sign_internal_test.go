package export

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/json"
)

// SignBody makes manifest.json for an arbitrary body signed by signer, as the station signs
// its manifests (FuzzVerify re-signs what it changes so that Verify reads past the signature).
// It fails for a body that is not JSON.
func SignBody(body []byte, signer crypto.Signer) ([]byte, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return nil, err
	}
	sig, err := signer.Sign(rand.Reader, manifestDigest(compact.Bytes()), crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Manifest{Body: compact.Bytes(), Signature: sig})
}
