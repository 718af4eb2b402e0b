package agent

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/devid-station/devid/device-agent/tpm"
	"github.com/devid-station/devid/device-agent/tpm/reserved"
	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/protobuf/proto"
)

// guardTPM is the fake TPM that fails the fuzz run when the dispatcher lets a command write,
// evict or undefine endorsement material, or create a key outside the owner's persistent range.
type guardTPM struct {
	fakeTPM
	t *testing.T
}

func (g *guardTPM) checkHandle(op string, h uint32) {
	if reserved.Endorsement(h) {
		g.t.Errorf("%s reached the TPM for reserved endorsement handle %#x", op, h)
	}
}

func (g *guardTPM) CreateKey(req tpm.KeyRequest) (*tpm.Key, error) {
	g.checkHandle("CreateKey", req.Handle)
	if req.Handle < persistentFirst || req.Handle > persistentOwnerEnd {
		g.t.Errorf("CreateKey reached the TPM for handle %#x", req.Handle)
	}
	return g.fakeTPM.CreateKey(req)
}

func (g *guardTPM) NVWrite(req tpm.NVWriteRequest) (*tpm.NVWriteResult, error) {
	g.checkHandle("NVWrite", req.Index)
	if req.Index < nvIndexFirst || req.Index > nvIndexLast {
		g.t.Errorf("NVWrite reached the TPM for index %#x", req.Index)
	}
	return g.fakeTPM.NVWrite(req)
}

func (g *guardTPM) Evict(handle uint32, auth tpm.Hierarchy) (bool, error) {
	g.checkHandle("Evict", handle)
	return g.fakeTPM.Evict(handle, auth)
}

func (g *guardTPM) NVUndefine(index uint32, auth tpm.Hierarchy) (bool, error) {
	g.checkHandle("NVUndefine", index)
	return g.fakeTPM.NVUndefine(index, auth)
}

// outsideSecret is the content of a unit file outside the agent's file root.
const outsideSecret = "outside-the-root"

// FuzzDispatch runs arbitrary station commands (protobuf bytes) through the agent's dispatcher
// on a fake TPM and a sysroot with one file root, /etc/devid. Every command gets one answer
// with its id and within the message bound; an error answer has a code and a short UTF-8
// message; no endorsement handle or index reaches the TPM for a write, evict or undefine; and
// no file outside the root is read, written or created.
func FuzzDispatch(f *testing.F) {
	for _, cmd := range []*agentv1.Command{
		{Id: 1, Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}},
		{Id: 2, Op: &agentv1.Command_ReadEk{ReadEk: &agentv1.ReadEKRequest{Algorithms: []agentv1.KeyAlgorithm{agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256}}}},
		{Id: 3, Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{Role: agentv1.KeyRole_KEY_ROLE_IDEVID,
			Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, Handle: 0x81020000}}},
		{Id: 4, Op: &agentv1.Command_CreateKey{CreateKey: &agentv1.CreateKeyRequest{Role: agentv1.KeyRole_KEY_ROLE_LDEVID,
			Algorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_RSA_2048, Handle: 0x81010001, SrkHandle: 0x81000001}}},
		{Id: 5, Op: &agentv1.Command_ActivateCredential{ActivateCredential: &agentv1.ActivateCredentialRequest{KeyHandle: 0x81020000,
			EkAlgorithm: agentv1.KeyAlgorithm_KEY_ALGORITHM_ECC_P256, CredentialBlob: []byte{1, 2}, EncryptedSecret: []byte{3}}}},
		{Id: 6, Op: &agentv1.Command_BuildCsr{BuildCsr: &agentv1.BuildCSRRequest{KeyHandle: 0x81020000, Subject: []byte{0x30, 0x00},
			Extensions: []*agentv1.Extension{{Oid: "2.5.29.17", Value: []byte{0x30, 0x00}}, {Oid: "1..2"}}}}},
		{Id: 7, Op: &agentv1.Command_Sign{Sign: &agentv1.SignRequest{KeyHandle: 0x81020000, Digest: make([]byte, 32)}}},
		{Id: 8, Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x01C90000, Auth: agentv1.Hierarchy_HIERARCHY_OWNER,
			Size: 4096, Data: []byte("cert")}}},
		{Id: 9, Op: &agentv1.Command_NvWrite{NvWrite: &agentv1.NVWriteRequest{Index: 0x01C00002, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM, Data: []byte("x")}}},
		{Id: 10, Op: &agentv1.Command_NvRead{NvRead: &agentv1.NVReadRequest{Index: 0x01C00002}}},
		{Id: 11, Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: "/etc/devid/ldevid.pem", Content: []byte("pem"), Mode: 0o644}}},
		{Id: 12, Op: &agentv1.Command_WriteFile{WriteFile: &agentv1.WriteFileRequest{Path: "/etc/devid/../outside", Content: []byte("x")}}},
		{Id: 13, Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: "/etc/devid/../outside"}}},
		{Id: 14, Op: &agentv1.Command_ReadFile{ReadFile: &agentv1.ReadFileRequest{Path: "/etc/devid/link"}}},
		{Id: 15, Op: &agentv1.Command_RemoveFile{RemoveFile: &agentv1.RemoveFileRequest{Path: "/etc/devid/ldevid.pem"}}},
		{Id: 16, Op: &agentv1.Command_Evict{Evict: &agentv1.EvictRequest{Handle: 0x81010001, Auth: agentv1.Hierarchy_HIERARCHY_OWNER}}},
		{Id: 17, Op: &agentv1.Command_NvUndefine{NvUndefine: &agentv1.NVUndefineRequest{Index: 0x01C00002, Auth: agentv1.Hierarchy_HIERARCHY_PLATFORM}}},
		{Id: 18, Op: &agentv1.Command_Finish{Finish: &agentv1.FinishRequest{}}},
		{Id: 19},
	} {
		b, err := proto.Marshal(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cmd agentv1.Command
		if err := proto.Unmarshal(data, &cmd); err != nil {
			return
		}
		sysroot := t.TempDir()
		root := filepath.Join(sysroot, "etc", "devid")
		outside := filepath.Join(sysroot, "etc", "outside")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(outside, []byte(outsideSecret), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../outside", filepath.Join(root, "link")); err != nil {
			t.Fatal(err)
		}
		d := sysrootDispatcher(t, sysroot, "/etc/devid")
		d.tpm = &guardTPM{t: t}

		res := d.execute(&cmd)
		if res == nil || res.GetId() != cmd.GetId() {
			t.Fatalf("answer %v does not carry id %d", res, cmd.GetId())
		}
		if n := messageSize(res); n > d.maxBytes {
			t.Fatalf("answer of %d bytes exceeds the %d-byte bound", n, d.maxBytes)
		}
		if e := res.GetError(); e != nil {
			if e.GetCode() == agentv1.ErrorCode_ERROR_CODE_UNSPECIFIED || !utf8.ValidString(e.GetMessage()) ||
				len(e.GetMessage()) > maxErrorMessage+len("…") {
				t.Fatalf("error answer without a code or with a bad message: %v", e)
			}
			if e.GetCode() == agentv1.ErrorCode_ERROR_CODE_INTERNAL {
				t.Fatalf("a handler panicked: %s", e.GetMessage())
			}
		} else if res.GetOp() == nil {
			t.Fatal("success answer without a result")
		}
		if bytes.Contains(res.GetReadFile().GetContent(), []byte(outsideSecret)) {
			t.Fatal("ReadFile answered a file outside the root")
		}
		if got, err := os.ReadFile(outside); err != nil || string(got) != outsideSecret {
			t.Fatalf("file outside the root changed: %q, %v", got, err)
		}
		err := filepath.WalkDir(sysroot, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p == outside || e.IsDir() || strings.HasPrefix(p, root+string(filepath.Separator)) {
				if !e.IsDir() && e.Type().IsRegular() && strings.HasPrefix(p, root) {
					if fi, err := e.Info(); err == nil && fi.Mode().Perm()&0o022 != 0 {
						return fmt.Errorf("%s is group or other writable: %v", p, fi.Mode())
					}
				}
				if e.IsDir() && p != sysroot && !strings.HasPrefix(p, root) && p != filepath.Dir(root) {
					return fmt.Errorf("directory %s created outside the root", p)
				}
				return nil
			}
			return fmt.Errorf("%s created outside the root", p)
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
