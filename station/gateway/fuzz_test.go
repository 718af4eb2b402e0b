package gateway

import (
	"errors"
	"strings"
	"testing"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzValidateHello decodes arbitrary bytes as an agent's Hello, as the gateway receives it:
// a refusal wraps ErrBadHello, and an accepted Hello speaks this protocol version, has a
// serial the store can key on and stays within the field bounds.
func FuzzValidateHello(f *testing.F) {
	for _, h := range []*agentv1.Hello{
		{ProtocolVersion: ProtocolVersion, HardwareSerial: "SN-0001", BootId: "b", FixtureSlot: "3", AgentVersion: "dev",
			FileRoots: []string{"/etc/devid", "/etc/aziot"}},
		{ProtocolVersion: ProtocolVersion, HardwareSerial: "../etc"},
		{ProtocolVersion: 2, HardwareSerial: "SN"},
		{ProtocolVersion: ProtocolVersion, HardwareSerial: strings.Repeat("A", 65)},
		{ProtocolVersion: ProtocolVersion, HardwareSerial: "SN", FileRoots: make([]string, maxFileRoots+1)},
	} {
		b, err := proto.Marshal(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h agentv1.Hello
		if err := proto.Unmarshal(data, &h); err != nil {
			return
		}
		if err := ValidateHello(&h); err != nil {
			if !errors.Is(err, ErrBadHello) {
				t.Fatalf("refusal does not wrap ErrBadHello: %v", err)
			}
			return
		}
		s := h.GetHardwareSerial()
		if h.GetProtocolVersion() != ProtocolVersion || len(s) == 0 || len(s) > 64 || strings.ContainsAny(s, "/\\ \x00") {
			t.Fatalf("accepted version %d, serial %q", h.GetProtocolVersion(), s)
		}
		if len(h.GetBootId()) > 128 || len(h.GetFixtureSlot()) > 128 || len(h.GetAgentVersion()) > 128 || len(h.GetFileRoots()) > maxFileRoots {
			t.Fatal("accepted a Hello beyond the field bounds")
		}
		for _, r := range h.GetFileRoots() {
			if len(r) > maxFileRootBytes {
				t.Fatal("accepted a file root beyond the bound")
			}
		}
	})
}
