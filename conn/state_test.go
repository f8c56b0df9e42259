package conn

import (
	"errors"
	"testing"
)

func TestTransitionTable(t *testing.T) {
	want := map[[2]State]bool{
		{Connecting, Busy}: true, {Connecting, Closing}: true,
		{Idle, Busy}: true, {Idle, Closing}: true,
		{Busy, Idle}: true, {Busy, Pinned}: true, {Busy, Closing}: true,
		{Pinned, Busy}: true, {Pinned, Closing}: true,
		{Closing, Closed}: true,
	}
	n := 0
	for from := Connecting; from <= numStates; from++ {
		for to := Connecting; to <= numStates; to++ {
			err := Transition(from, to)
			if ok := want[[2]State{from, to}]; ok != (err == nil) {
				t.Errorf("%v -> %v: err=%v, want legal=%v", from, to, err, ok)
			}
			if err != nil && !errors.Is(err, ErrBadTransition) {
				t.Errorf("%v -> %v: %v does not wrap ErrBadTransition", from, to, err)
			}
			if err == nil {
				n++
			}
		}
	}
	if n != len(want) {
		t.Fatalf("%d legal transitions, want %d", n, len(want))
	}
}

func TestStateString(t *testing.T) {
	for s, name := range map[State]string{Connecting: "connecting", Idle: "idle", Busy: "busy",
		Pinned: "pinned", Closing: "closing", Closed: "closed", 42: "State(42)"} {
		if s.String() != name {
			t.Errorf("%d: %q, want %q", uint32(s), s.String(), name)
		}
	}
}

func TestSetStateRefusesClose(t *testing.T) {
	c := &Conn{}
	c.state.Store(uint32(Busy))
	if err := c.SetState(Closing); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("SetState(Closing) = %v", err)
	}
	if err := c.SetState(Idle); err != nil {
		t.Fatal(err)
	}
	if err := c.SetState(Pinned); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("idle -> pinned = %v", err)
	}
	if c.State() != Idle {
		t.Fatalf("state %v after a refused change", c.State())
	}
}
