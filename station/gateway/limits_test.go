package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/devid-station/devid/proto/agent/v1"
)

// fakeClock is a Clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// peerStream is a session stream from addr whose agent says Hello at once.
func peerStream(t *testing.T, addr string) *fakeStream {
	st := newFakeStream(t)
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	st.ctx = peer.NewContext(st.ctx, &peer.Peer{Addr: tcp})
	st.in <- &agentv1.AgentMessage{Body: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{ProtocolVersion: ProtocolVersion, HardwareSerial: "SN-1"}}}
	return st
}

// TestAdmitHasADeadline: a session waits for a provisioning slot up to SlotWait, not forever,
// and takes the slot a finished session released.
func TestAdmitHasADeadline(t *testing.T) {
	srv := New(Config{MaxInFlight: 1, SlotWait: 50 * time.Millisecond})
	newSess := func() *Session {
		return &Session{slots: srv.slots, slotWait: srv.cfg.SlotWait, done: make(chan struct{})}
	}
	a, b := newSess(), newSess()
	if err := a.Admit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Admit(t.Context()); err != nil {
		t.Fatalf("admitting an admitted session: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- b.Admit(t.Context()) }()
	select {
	case err := <-waited:
		if !errors.Is(err, ErrNoSlot) {
			t.Fatalf("second session: %v, want ErrNoSlot", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Admit waited for a slot without a deadline")
	}
	a.release()
	if err := b.Admit(t.Context()); err != nil {
		t.Fatalf("after the first session released its slot: %v", err)
	}
}

// TestPeerLimits runs sessions through Server.Session: one peer address may hold at most
// MaxSessionsPerPeer sessions while another is still served, and after MaxRefusalsPerPeer
// refused sessions its new sessions are refused without a Hello until the window's deadline.
func TestPeerLimits(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	release := make(chan struct{})
	var handled sync.WaitGroup
	srv := New(Config{MaxSessionsPerPeer: 2, MaxRefusalsPerPeer: 2, RefusalWindow: time.Minute, Clock: clock,
		Handler: func(ctx context.Context, s *Session) error {
			handled.Done()
			if s.Hello().GetHardwareSerial() == "SN-REFUSE" {
				return fmt.Errorf("%w: test", ErrRefused)
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}})
	session := func(st *fakeStream) chan error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Session(st) }()
		return errc
	}

	// Two sessions of 10.0.0.1 are held by the handler; a third is turned away, 10.0.0.2 is not.
	handled.Add(3)
	held := []chan error{session(peerStream(t, "10.0.0.1:1001")), session(peerStream(t, "10.0.0.1:1002"))}
	other := session(peerStream(t, "10.0.0.2:1001"))
	handled.Wait()
	if err := <-session(peerStream(t, "10.0.0.1:1003")); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third session of one peer: %v, want ResourceExhausted", err)
	}
	close(release)
	for _, c := range append(held, other) {
		if err := <-c; err != nil {
			t.Fatalf("held session: %v", err)
		}
	}

	// Two refusals block the peer until the window's deadline, whatever the Hello says.
	for range 2 {
		st := peerStream(t, "10.0.0.1:2000")
		<-st.in // replace the Hello
		st.in <- &agentv1.AgentMessage{Body: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{ProtocolVersion: ProtocolVersion, HardwareSerial: "SN-REFUSE"}}}
		handled.Add(1)
		if err := <-session(st); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("refused session: %v", err)
		}
	}
	if err := <-session(peerStream(t, "10.0.0.1:2001")); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("session after the refusal limit: %v, want ResourceExhausted", err)
	}
	handled.Add(1)
	if err := <-session(peerStream(t, "10.0.0.2:2001")); err != nil {
		t.Fatalf("another peer after the first one's refusals: %v", err)
	}
	clock.Advance(time.Minute)
	handled.Add(1)
	if err := <-session(peerStream(t, "10.0.0.1:2002")); err != nil {
		t.Fatalf("session after the window's deadline: %v", err)
	}
}

func TestPeerHost(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"10.0.0.1:4000", "10.0.0.1"},
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::7]:4001", "2001:db8:1:2::/64"},
		{"[::ffff:10.0.0.1]:4000", "::ffff:10.0.0.1"},
		{"pipe", "pipe"},
	}
	for _, tc := range tests {
		if got := peerHost(tc.addr); got != tc.want {
			t.Errorf("peerHost(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
