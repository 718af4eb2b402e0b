package workflow

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"github.com/devid-station/devid/station/attest"
)

// agentSigner is a crypto.Signer whose key stays in the unit's TPM: each signature is a Sign
// command over the session, checked against the certificate's key before it is used.
type agentSigner struct {
	ctx    context.Context
	u      *unit
	handle uint32
	pub    crypto.PublicKey
}

func (s *agentSigner) Public() crypto.PublicKey { return s.pub }

func (s *agentSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var hash agentv1.HashAlgorithm
	switch opts.HashFunc() {
	case crypto.SHA256:
		hash = agentv1.HashAlgorithm_HASH_ALGORITHM_SHA256
	case crypto.SHA384:
		hash = agentv1.HashAlgorithm_HASH_ALGORITHM_SHA384
	default:
		return nil, fmt.Errorf("agent signer: unsupported hash %v", opts.HashFunc())
	}
	_, pss := opts.(*rsa.PSSOptions)
	scheme := agentv1.SignatureScheme_SIGNATURE_SCHEME_ECDSA
	switch s.pub.(type) {
	case *rsa.PublicKey:
		scheme = agentv1.SignatureScheme_SIGNATURE_SCHEME_RSASSA_PKCS1V15
		if pss {
			scheme = agentv1.SignatureScheme_SIGNATURE_SCHEME_RSAPSS
		}
	case *ecdsa.PublicKey:
	default:
		return nil, errors.New("agent signer: unsupported key type")
	}
	res, err := s.u.do(s.ctx, &agentv1.Command{Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{
		KeyHandle: s.handle, Digest: digest, Hash: hash, Scheme: scheme,
	}}})
	if err != nil {
		return nil, fmt.Errorf("agent signer: %w", err)
	}
	sig := res.GetSign().GetSignature()
	if err := attest.VerifySignature(s.pub, opts.HashFunc(), digest, sig, pss); err != nil {
		return nil, fmt.Errorf("agent signer: %w", err)
	}
	return sig, nil
}
