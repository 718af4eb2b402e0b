package store

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// checkpointDomain separates checkpoint signatures from every other use of
// the audit key.
const checkpointDomain = "devid-station/audit-checkpoint/v1\x00"

// Checkpoint is a signed statement of the chain head: the station's audit key
// signed that record Seq of StationID's chain has hash Hash. The checkpoint
// itself is the chain's record Record (Seq+1), and the latest one is also
// saved beside the store (the anchor), so a chain cut back or re-chained
// below it shows.
type Checkpoint struct {
	StationID string    `json:"station_id"`
	Seq       uint64    `json:"seq"`
	Hash      []byte    `json:"hash"`
	Record    uint64    `json:"record"`
	Time      time.Time `json:"time"`
	// PublicKey is the signer's public key (DER SubjectPublicKeyInfo).
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature"`
}

// signedDigest is the SHA-256 the audit key signs.
func signedDigest(stationID string, seq uint64, hash []byte) []byte {
	b := []byte(checkpointDomain)
	b = binary.BigEndian.AppendUint32(b, uint32(len(stationID)))
	b = append(b, stationID...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, hash...)
	h := sha256.Sum256(b)
	return h[:]
}

// KeySHA256 returns the SHA-256 of the checkpoint's public key.
func (c *Checkpoint) KeySHA256() []byte {
	h := sha256.Sum256(c.PublicKey)
	return h[:]
}

// KeySHA256 returns the SHA-256 of pub's DER SubjectPublicKeyInfo.
func KeySHA256(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	h := sha256.Sum256(der)
	return h[:], nil
}

// verify checks the signature with the checkpoint's own public key.
func (c *Checkpoint) verify() error {
	pub, err := x509.ParsePKIXPublicKey(c.PublicKey)
	if err != nil {
		return fmt.Errorf("checkpoint public key: %w", err)
	}
	ok, err := VerifyAuditSignature(pub, signedDigest(c.StationID, c.Seq, c.Hash), c.Signature)
	if err != nil {
		return fmt.Errorf("checkpoint %w", err)
	}
	if !ok {
		return errors.New("checkpoint signature does not verify")
	}
	return nil
}

// check verifies a checkpoint found in the chain right after prev.
func (c *Checkpoint) check(stationID string, prev ChainHead) error {
	switch {
	case c.StationID != stationID:
		return fmt.Errorf("checkpoint of station %q", c.StationID)
	case c.Seq != prev.Seq || string(c.Hash) != string(prev.Hash):
		return fmt.Errorf("checkpoint signs seq %d hash %x, the chain has seq %d hash %x", c.Seq, c.Hash, prev.Seq, prev.Hash)
	}
	return c.verify()
}

// details encodes the checkpoint as audit record details.
func (c *Checkpoint) details() map[string]string {
	return map[string]string{
		"signed_seq":  strconv.FormatUint(c.Seq, 10),
		"signed_hash": hex.EncodeToString(c.Hash),
		"public_key":  base64.StdEncoding.EncodeToString(c.PublicKey),
		"key_sha256":  hex.EncodeToString(c.KeySHA256()),
		"signature":   base64.StdEncoding.EncodeToString(c.Signature),
	}
}

// checkpointOf decodes the checkpoint an audit record carries.
func checkpointOf(a *AuditEvent) (Checkpoint, error) {
	c := Checkpoint{StationID: a.StationID, Record: a.Seq, Time: a.Time}
	var err error
	if c.Seq, err = strconv.ParseUint(a.Details["signed_seq"], 10, 64); err != nil {
		return c, fmt.Errorf("checkpoint signed_seq: %w", err)
	}
	if c.Hash, err = hex.DecodeString(a.Details["signed_hash"]); err != nil {
		return c, fmt.Errorf("checkpoint signed_hash: %w", err)
	}
	if c.PublicKey, err = base64.StdEncoding.DecodeString(a.Details["public_key"]); err != nil {
		return c, fmt.Errorf("checkpoint public_key: %w", err)
	}
	if c.Signature, err = base64.StdEncoding.DecodeString(a.Details["signature"]); err != nil {
		return c, fmt.Errorf("checkpoint signature: %w", err)
	}
	return c, nil
}

// sign signs the head with signer.
func sign(signer crypto.Signer, c *Checkpoint) error {
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return fmt.Errorf("audit public key: %w", err)
	}
	c.PublicKey = der
	if c.Signature, err = SignAudit(signer, signedDigest(c.StationID, c.Seq, c.Hash)); err != nil {
		return fmt.Errorf("signing audit checkpoint: %w", err)
	}
	return nil
}

// SignAudit signs d, a SHA-256 digest, with the station's audit key: what the checkpoints and
// the QA export's manifest carry. Ed25519 signs the digest as its message.
func SignAudit(signer crypto.Signer, d []byte) ([]byte, error) {
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := signer.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0)
	}
	return signer.Sign(rand.Reader, d, opts)
}

// VerifyAuditSignature reports whether sig is the signature SignAudit makes of d with the
// audit key pub; an error names a key type the audit key cannot have.
func VerifyAuditSignature(pub crypto.PublicKey, d, sig []byte) (bool, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, d, sig), nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d, sig) == nil, nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, d, sig), nil
	}
	return false, fmt.Errorf("key type %T not supported", pub)
}

// CheckpointOptions make the store sign its chain head.
type CheckpointOptions struct {
	// Signer is the station's audit key; nil means no checkpoints.
	Signer crypto.Signer
	// Every is how many records may follow a checkpoint before the next; 0
	// means 1000.
	Every int
	// Interval is the longest time between checkpoints while records are
	// added; 0 means 5 minutes.
	Interval time.Duration
	// AnchorPath is the file the latest checkpoint is saved in (mode 0600);
	// empty means beside the store, "<store>.checkpoint".
	AnchorPath string
}

// checkpointer signs the head every N records, every T and at Close.
type checkpointer struct {
	opts    CheckpointOptions
	nudge   chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	signing sync.Mutex // one checkpoint at a time
	mu      sync.Mutex // guards last and lastAt
	last    uint64     // seq of the latest checkpoint's record
	lastAt  time.Time  // when it was signed (zero: none known)
}

func (s *Store) startCheckpoints(o CheckpointOptions, head uint64) {
	if o.Every <= 0 {
		o.Every = 1000
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Minute
	}
	if o.AnchorPath == "" {
		o.AnchorPath = s.path + ".checkpoint"
	}
	cp := &checkpointer{opts: o, nudge: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), last: head}
	if a, err := ReadAnchor(o.AnchorPath); err == nil && a != nil {
		cp.lastAt = a.Time
	}
	s.cp = cp
	go func() {
		defer close(cp.done)
		t := time.NewTicker(o.Interval)
		defer t.Stop()
		for {
			select {
			case <-cp.stop:
				return
			case <-t.C:
			case <-cp.nudge:
			}
			if _, err := s.Checkpoint(context.Background()); err != nil {
				s.log.Error("audit checkpoint failed", "error", err)
			}
		}
	}()
}

// afterCommit nudges the checkpointer once N records followed the last checkpoint.
func (s *Store) afterCommit(head uint64) {
	if s.cp == nil {
		return
	}
	s.cp.mu.Lock()
	due := head >= s.cp.last+uint64(s.cp.opts.Every)
	s.cp.mu.Unlock()
	if due {
		select {
		case s.cp.nudge <- struct{}{}:
		default:
		}
	}
}

// Checkpoint signs the chain head now (when records followed the last
// checkpoint), appends the checkpoint to the chain and saves it as the
// anchor. It returns the checkpoint, or nil when there was nothing new.
func (s *Store) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	if s.cp == nil {
		return nil, errors.New("no audit key: checkpoints are off")
	}
	s.cp.signing.Lock()
	defer s.cp.signing.Unlock()
	s.cp.mu.Lock()
	last := s.cp.last
	s.cp.mu.Unlock()
	var out *Checkpoint
	err := s.update(ctx, func(w *wtx) error {
		out = nil
		head := readHead(w.tx.raw.Bucket(bMeta))
		if head.Seq <= last {
			return nil
		}
		c := &Checkpoint{StationID: s.stationID, Seq: head.Seq, Hash: head.Hash, Record: head.Seq + 1, Time: w.now}
		if err := sign(s.cp.opts.Signer, c); err != nil {
			return err
		}
		out = c
		return w.audit(AuditEvent{Action: AuditActionCheckpoint, Details: c.details()})
	})
	if err != nil || out == nil {
		return nil, err
	}
	s.cp.mu.Lock()
	s.cp.last, s.cp.lastAt = out.Record, out.Time
	s.cp.mu.Unlock()
	if err := WriteAnchor(s.cp.opts.AnchorPath, out); err != nil {
		return out, err
	}
	return out, nil
}

// WriteAnchor saves c atomically in path with mode 0600.
func WriteAnchor(path string, c *Checkpoint) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".checkpoint-*")
	if err != nil {
		return fmt.Errorf("saving audit checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("saving audit checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("saving audit checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving audit checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving audit checkpoint: %w", err)
	}
	return nil
}

// ReadAnchor reads the checkpoint saved in path; nil without error when the
// file does not exist.
func ReadAnchor(path string) (*Checkpoint, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading audit checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("reading audit checkpoint %s: %w", path, err)
	}
	return &c, nil
}

// LastCheckpointTime is when the latest checkpoint was signed, as saved beside the store or
// signed since it opened; zero without checkpoints or when none is known.
func (s *Store) LastCheckpointTime() time.Time {
	if s.cp == nil {
		return time.Time{}
	}
	s.cp.mu.Lock()
	defer s.cp.mu.Unlock()
	return s.cp.lastAt
}

// AnchorPath returns where the latest checkpoint is saved ("" without checkpoints).
func (s *Store) AnchorPath() string {
	if s.cp == nil {
		return ""
	}
	return s.cp.opts.AnchorPath
}

// AuditOverride records that the station starts although Verify failed with
// failure, and the admin's reason.
func (s *Store) AuditOverride(ctx context.Context, reason string, failure error) error {
	if reason == "" {
		return fmt.Errorf("audit override: a reason is required: %w", ErrInvalidArgument)
	}
	return s.update(ctx, func(w *wtx) error {
		return w.audit(AuditEvent{Action: AuditActionOverride, Result: ResultError, ErrorCode: CodeAuditChainBroken,
			Details: map[string]string{"reason": reason, "failure": failure.Error()}})
	})
}
