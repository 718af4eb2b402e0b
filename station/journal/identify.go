package journal

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// Identify is the agent's identify report as verify_ek's intent keeps it (Intent.Identify):
// the TPM's properties, the EKs read, the chain certificates and the agent's Hello.
//
// It encodes as {"info", "eks", "chain", "hello"} with each protobuf message in protojson
// (proto field names). Records written before hold encoding/json of the generated structs
// under the keys "Info", "EKs", "Chain" and "Hello", and UnmarshalJSON reads them too:
// encoding/json matches the keys case-insensitively, and protojson accepts what encoding/json
// made of the messages (the proto field names of the generated json tags, enums as numbers,
// 64-bit integers as numbers, bytes in standard base64).
type Identify struct {
	Info  *agentv1.InfoResult
	EKs   []*agentv1.EndorsementKey
	Chain [][]byte
	Hello *agentv1.Hello
}

// identifyJSON is Identify's stored form; the messages are protojson.
type identifyJSON struct {
	Info  json.RawMessage   `json:"info,omitempty"`
	EKs   []json.RawMessage `json:"eks,omitempty"`
	Chain [][]byte          `json:"chain,omitempty"`
	Hello json.RawMessage   `json:"hello,omitempty"`
}

var (
	marshalOpts   = protojson.MarshalOptions{UseProtoNames: true}
	unmarshalOpts = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// MarshalJSON encodes the report with protojson for its messages.
func (id Identify) MarshalJSON() ([]byte, error) {
	var out identifyJSON
	var err error
	if id.Info != nil {
		if out.Info, err = marshalOpts.Marshal(id.Info); err != nil {
			return nil, fmt.Errorf("encoding the TPM info: %w", err)
		}
	}
	for _, k := range id.EKs {
		b, err := marshalOpts.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("encoding an EK: %w", err)
		}
		out.EKs = append(out.EKs, b)
	}
	out.Chain = id.Chain
	if id.Hello != nil {
		if out.Hello, err = marshalOpts.Marshal(id.Hello); err != nil {
			return nil, fmt.Errorf("encoding the hello: %w", err)
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes a report in either stored form.
func (id *Identify) UnmarshalJSON(b []byte) error {
	var in identifyJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	out := Identify{Chain: in.Chain}
	if in.Info != nil {
		out.Info = &agentv1.InfoResult{}
		if err := unmarshal(in.Info, out.Info, "the TPM info"); err != nil {
			return err
		}
	}
	for _, raw := range in.EKs {
		k := &agentv1.EndorsementKey{}
		if err := unmarshal(raw, k, "an EK"); err != nil {
			return err
		}
		out.EKs = append(out.EKs, k)
	}
	if in.Hello != nil {
		out.Hello = &agentv1.Hello{}
		if err := unmarshal(in.Hello, out.Hello, "the hello"); err != nil {
			return err
		}
	}
	*id = out
	return nil
}

func unmarshal(b []byte, m proto.Message, what string) error {
	if err := unmarshalOpts.Unmarshal(b, m); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	return nil
}
