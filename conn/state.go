package conn

import "fmt"

// State is where a connection stands in its life.
//
//	from        to                 when
//	Connecting  Busy               the dial succeeded; the dialer holds it
//	Connecting  Closing            the dial failed
//	Idle        Busy               taken from the pool (Get, hand-off)
//	Idle        Closing            the pool closes it (expiry, eviction, drain)
//	Busy        Idle               returned to the pool after a reusable exchange
//	Busy        Pinned             kept for a pinned session
//	Busy        Closing            an error, "close", a detached body, ...
//	Pinned      Busy               the session releases it
//	Pinned      Closing            the session or the peer ends
//	Closing     Closed             the socket is closed
//
// Every other pair, including a state to itself, is illegal.
type State uint32

// States.
const (
	Connecting State = iota
	Idle
	Busy
	Pinned
	Closing
	Closed
	numStates
)

var stateNames = [numStates]string{"connecting", "idle", "busy", "pinned", "closing", "closed"}

// String names the state.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}

// legal[from] is the set of states from may move to, as a bit set.
var legal = [numStates]uint32{
	Connecting: 1<<Busy | 1<<Closing,
	Idle:       1<<Busy | 1<<Closing,
	Busy:       1<<Idle | 1<<Pinned | 1<<Closing,
	Pinned:     1<<Busy | 1<<Closing,
	Closing:    1 << Closed,
	Closed:     0,
}

// ErrBadTransition reports a state change the state machine forbids.
var ErrBadTransition = fmt.Errorf("conn: illegal state transition")

// Transition validates the change from one state to another. It is the
// single definition of the state machine: every change of a Conn's state
// goes through it.
func Transition(from, to State) error {
	if from >= numStates || to >= numStates || legal[from]&(1<<to) == 0 {
		return fmt.Errorf("%w: %v -> %v", ErrBadTransition, from, to)
	}
	return nil
}

// State reports the connection's current state.
func (c *Conn) State() State { return State(c.state.Load()) }

// SetState moves the connection to state to, validated by Transition. An
// illegal change returns an error wrapping ErrBadTransition and changes
// nothing. Closing and Closed are reached through Close, not SetState.
func (c *Conn) SetState(to State) error {
	if to == Closing || to == Closed {
		return fmt.Errorf("%w: %v is entered by Close", ErrBadTransition, to)
	}
	return c.transition(to)
}

// transition is the one place the state changes.
func (c *Conn) transition(to State) error {
	for {
		from := State(c.state.Load())
		if err := Transition(from, to); err != nil {
			return err
		}
		if c.state.CompareAndSwap(uint32(from), uint32(to)) {
			return nil
		}
	}
}
