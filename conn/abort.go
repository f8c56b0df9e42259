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
