package export

import (
	"bytes"

	"github.com/devid-station/devid/station/store"
)

// The obvious form of reading audit.jsonl, whole: decode every line, then check the chain.
// readAudit, which Verify uses, streams it instead; TestReadAudit requires the same findings.

// decodeAuditFile decodes audit.jsonl; nil (and the reason through fail) when it is missing or
// a line does not decode. With checkChain it is the obvious form of readAudit, which Verify
// uses: TestReadAudit holds readAudit to them.
func decodeAuditFile(data []byte, fail func(string, ...any)) []store.AuditEvent {
	if data == nil {
		fail("%s: missing", AuditFile)
		return nil
	}
	recs, err := decodeAudit(data)
	if err != nil {
		fail("%v", err)
		return nil
	}
	return recs
}

// checkChain verifies the records of audit.jsonl: the range the manifest states, each
// record's hash and link, a signed checkpoint first (unless it starts the chain) and last.
func checkChain(recs []store.AuditEvent, body *Body, keySHA []byte, fail func(string, ...any)) bool {
	r := body.Audit
	switch {
	case len(recs) == 0:
		fail("%s: no records", AuditFile)
		return false
	case recs[0].Seq != r.First || !bytes.Equal(recs[0].PrevHash, r.Prev.Hash) || r.Prev.Seq+1 != r.First:
		fail("%s record %d: the range does not start at record %d after the manifest's previous hash", AuditFile, recs[0].Seq, r.First)
		return false
	case r.First > 1 && recs[0].Action != store.AuditActionCheckpoint:
		fail("%s record %d: the range does not start with a signed checkpoint", AuditFile, recs[0].Seq)
		return false
	}
	prev := r.Prev
	if r.First == 1 {
		prev = store.ChainHead{}
	}
	head, cps, err := store.VerifyRecords(recs, prev, keySHA)
	if err != nil {
		chainFailure(fail, err)
		return false
	}
	last := recs[len(recs)-1]
	switch {
	case head.Seq != r.Last || !bytes.Equal(head.Hash, r.Head.Hash):
		fail("%s record %d: the records end at %d, the manifest's range at %d", AuditFile, head.Seq, head.Seq, r.Last)
		return false
	case last.Action != store.AuditActionCheckpoint:
		fail("%s record %d: the range does not end with a signed checkpoint", AuditFile, last.Seq)
		return false
	case len(cps) != len(r.Checkpoints):
		fail("%s: %d checkpoints, the manifest lists %d", AuditFile, len(cps), len(r.Checkpoints))
		return false
	}
	for i, c := range cps {
		if m := r.Checkpoints[i]; m.Record != c.Record || m.Seq != c.Seq || !bytes.Equal(m.Hash, c.Hash) {
			fail("%s record %d: the checkpoint is not the manifest's", AuditFile, c.Record)
			return false
		}
	}
	return true
}

// decodeAudit decodes audit.jsonl, one JSON record a line, on every core. An error names the
// first line at fault.
func decodeAudit(data []byte) ([]store.AuditEvent, error) {
	return decodeAuditLines(auditLines(data), 0)
}
