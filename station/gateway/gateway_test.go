package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// fakeStream is the station's end of a session whose agent is played by the test.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   chan *agentv1.AgentMessage   // what the agent sends
	sent chan *agentv1.StationMessage // what the station sent
}

func newFakeStream(t *testing.T) *fakeStream {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &fakeStream{ctx: ctx, in: make(chan *agentv1.AgentMessage, 8), sent: make(chan *agentv1.StationMessage, 8)}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(m *agentv1.StationMessage) error {
	f.sent <- m
	return nil
}

func (f *fakeStream) Recv() (*agentv1.AgentMessage, error) {
	select {
	case m := <-f.in:
		return m, nil
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
}

func result(id uint64) *agentv1.AgentMessage {
	return &agentv1.AgentMessage{Body: &agentv1.AgentMessage_Result{Result: &agentv1.Result{Id: id,
		Op: &agentv1.Result_Info{Info: &agentv1.InfoResult{}}}}}
}

func info() *agentv1.Command {
	return &agentv1.Command{Op: &agentv1.Command_Info{Info: &agentv1.InfoRequest{}}}
}

func newSession(t *testing.T) (*Session, *fakeStream) {
	st := newFakeStream(t)
	s := &Session{stream: st, results: make(chan *agentv1.Result, 1), done: make(chan struct{})}
	go s.recvLoop()
	return s, st
}

// TestLateAnswerIsDropped: a command whose caller gave up is answered late, after the next
// command was sent; the next caller gets its own answer, not the late one.
func TestLateAnswerIsDropped(t *testing.T) {
	s, st := newSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Do(ctx, info()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first command: %v, want its deadline", err)
	}
	<-st.sent
	done := make(chan *agentv1.Result, 1)
	go func() {
		r, err := s.Do(context.Background(), info())
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	<-st.sent
	st.in <- result(1) // the late answer
	st.in <- result(2)
	select {
	case r := <-done:
		if r.GetId() != 2 {
			t.Fatalf("second command got result %d", r.GetId())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
}

// TestResultForAFutureCommand is a protocol violation.
func TestResultForAFutureCommand(t *testing.T) {
	s, st := newSession(t)
	st.in <- result(7)
	if _, err := s.Do(context.Background(), info()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Do: %v, want ErrProtocol", err)
	}
}

// TestStreamEndInterrupts: the agent going away ends a waiting command.
func TestStreamEndInterrupts(t *testing.T) {
	s, st := newSession(t)
	go func() {
		<-st.sent
		close(st.in)
	}()
	// A closed channel makes Recv return a nil message: the loop sees no result and stops.
	if _, err := s.Do(context.Background(), info()); err == nil {
		t.Fatal("Do succeeded on a dead stream")
	}
}

func TestValidateHello(t *testing.T) {
	ok := &agentv1.Hello{ProtocolVersion: 1, HardwareSerial: "SN-0001", BootId: "b"}
	tests := []struct {
		name string
		edit func(h *agentv1.Hello)
		want string
	}{
		{"valid", func(*agentv1.Hello) {}, ""},
		{"other protocol", func(h *agentv1.Hello) { h.ProtocolVersion = 2 }, "protocol version"},
		{"empty serial", func(h *agentv1.Hello) { h.HardwareSerial = "" }, "serial"},
		{"serial with a slash", func(h *agentv1.Hello) { h.HardwareSerial = "SN/1" }, "serial"},
		{"serial with a quote", func(h *agentv1.Hello) { h.HardwareSerial = `SN"1` }, "serial"},
		{"padded serial", func(h *agentv1.Hello) { h.HardwareSerial = " SN1" }, "serial"},
		{"long serial", func(h *agentv1.Hello) { h.HardwareSerial = strings.Repeat("A", 65) }, "serial"},
		{"long boot id", func(h *agentv1.Hello) { h.BootId = strings.Repeat("b", 129) }, "boot id"},
		{"16 file roots", func(h *agentv1.Hello) { h.FileRoots = make([]string, 16) }, ""},
		{"17 file roots", func(h *agentv1.Hello) { h.FileRoots = make([]string, 17) }, "file roots"},
		{"long file root", func(h *agentv1.Hello) { h.FileRoots = []string{"/" + strings.Repeat("r", 1024)} }, "file root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &agentv1.Hello{ProtocolVersion: ok.ProtocolVersion, HardwareSerial: ok.HardwareSerial, BootId: ok.BootId}
			tc.edit(h)
			err := ValidateHello(h)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateHello: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadHello) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidateHello: %v, want ErrBadHello about %s", err, tc.want)
			}
		})
	}
}
