package poolset

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Acquire is the blocking form of Get, TryReserve and Wait, for callers
// that may block (never a shard). It returns an idle connection (counted
// busy) or a dial permit (counted connecting), waiting as long as ctx
// allows. When ctx ends first, it returns an error wrapping ctx.Err(), and
// also ErrPoolTimeout if the deadline passed; a grant that arrived too late
// is given back to the pool. Other errors: ErrQueueFull, ErrDraining,
// ErrPoolClosed, wrapped with the key.
//
// The fast path (an idle connection or a free permit) does not allocate;
// waiting allocates a channel and a Waiter.
func (p *Pool[C]) Acquire(ctx context.Context, key Key) (Grant[C], error) {
	if err := ctx.Err(); err != nil {
		return Grant[C]{}, acquireErr(key, err)
	}
	if c, ok := p.Get(key); ok {
		return Grant[C]{Conn: c}, nil
	}
	if p.TryReserve(key) {
		return Grant[C]{Permit: true}, nil
	}
	ch := make(chan Grant[C], 1)
	// The pool gets no deadline of its own: ctx's timer is the only one,
	// so the error says deterministically which limit ended the wait.
	w, err := p.Wait(key, time.Time{}, func(g Grant[C]) { ch <- g })
	if err != nil {
		return Grant[C]{}, err
	}
	select {
	case g := <-ch:
		return g, g.Err
	case <-ctx.Done():
		if !w.Cancel() {
			// # Race window: the delivery won. fn has run or is running,
			// so the grant is (or is about to be) in ch. Mirror net/http's
			// wantConn.cancel: take it and give it back.
			p.giveBack(key, <-ch)
		}
		return Grant[C]{}, acquireErr(key, ctx.Err())
	}
}

// acquireErr wraps a context error for key; a passed deadline also matches
// ErrPoolTimeout.
func acquireErr(key Key, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (wait for %v): %w", ErrPoolTimeout, key, err)
	}
	return fmt.Errorf("poolset: wait for %v: %w", key, err)
}
