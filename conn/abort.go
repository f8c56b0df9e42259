package conn

import (
	"context"
	"sync"
	"sync/atomic"
)

// Abortable is a context for many exchanges that ends only when Abort is
// called. RoundTrip under an Abortable itself (not under a context derived
// from it) registers the connection in the Abortable's set instead of
// watching the context with context.AfterFunc, which costs no allocation;
// Abort ends the context, then closes every connection in the set, as the
// watch would. Contexts derived from it behave as children of any
// cancellable context.
type Abortable struct {
	context.Context
	cancel context.CancelFunc
	sets   [abortStripes]abortSet // a connection's set is chosen by its slot
}

// abortStripes spreads the registrations over several locks: every
// exchange takes one twice.
const abortStripes = 16

type abortSet struct {
	mu      sync.Mutex
	aborted bool
	busy    map[*Conn]struct{} // exchanging under it; nil once aborted
	_       [40]byte           // a cache line each
}

// slots numbers connections for the choice of an abortSet.
var slots atomic.Uint32

// NewAbortable returns an Abortable that has not ended.
func NewAbortable() *Abortable {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Abortable{Context: ctx, cancel: cancel}
	for i := range a.sets {
		a.sets[i].busy = make(map[*Conn]struct{})
	}
	return a
}

// Abort ends the context and closes the connections exchanging under it.
// It is idempotent and safe from any goroutine.
func (a *Abortable) Abort() {
	a.cancel()
	for i := range a.sets {
		s := &a.sets[i]
		s.mu.Lock()
		s.aborted = true
		busy := s.busy
		s.busy = nil
		s.mu.Unlock()
		for c := range busy {
			_ = c.Close()
		}
	}
}

// watch adds c to the set; false when the Abortable has ended.
func (a *Abortable) watch(c *Conn) bool {
	s := &a.sets[c.slot%abortStripes]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return false
	}
	s.busy[c] = struct{}{}
	return true
}

// unwatch takes c out of the set; false when Abort took it first and has
// closed it or is closing it.
func (a *Abortable) unwatch(c *Conn) bool {
	s := &a.sets[c.slot%abortStripes]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.busy[c]; !ok {
		return false
	}
	delete(s.busy, c)
	return true
}

// Abort aborts the exchange running under it, from any goroutine, without
// a context: a caller that runs one exchange at a time for a party of its
// own (a proxy's client connection) keeps one per party, set up once and
// given to each of its exchanges (Exchange.Abort), at no cost per
// exchange beyond a lock taken twice. Abort closes the connection of the
// exchange in progress, which fails with ErrAborted, and makes every later
// exchange under it fail the same way before anything is sent. A
// pipelined exchange (PipeReceive) is not aborted: its connection carries
// other requests. The zero value is ready to use; an Abort must not be
// copied once used.
type Abort struct {
	mu      sync.Mutex
	aborted atomic.Bool // set under mu; read without it by Aborted
	busy    *Conn       // exchanging under it
}

// Abort marks a aborted and closes the connection exchanging under it,
// if any. It is idempotent, safe from any goroutine, and does not block
// on the exchange.
func (a *Abort) Abort() {
	a.mu.Lock()
	a.aborted.Store(true)
	c := a.busy
	a.busy = nil
	a.mu.Unlock()
	if c != nil {
		c.closeAtOnce()
	}
}

// Aborted reports whether Abort was called.
func (a *Abort) Aborted() bool { return a.aborted.Load() }

// watch makes c the connection Abort closes; false when a was aborted.
func (a *Abort) watch(c *Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.aborted.Load() {
		return false
	}
	a.busy = c
	return true
}

// unwatch ends the watch of c; false when Abort took it first and has
// closed it or is closing it.
func (a *Abort) unwatch(c *Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy != c {
		return false
	}
	a.busy = nil
	return true
}
