package shard

import (
	"errors"

	"github.com/serverside-go/serverside/conn"
)

// RunInline runs t on the caller's goroutine when the queue runner's first
// two steps settle it without shard state: the request is not pinned and
// the shared pool has a free persistent connection. The exchange then
// blocks the caller, not an exchange worker, and no inbox hop is paid: the
// common case of a kept-alive upstream costs what a flat client costs.
//
// It reports false, having done nothing, when t needs a shard (a pin key,
// no idle connection, a closed Set) or its context has already ended (the
// shard fails it without taking a connection, which the exchange would
// otherwise close unused); the caller then Submits t. A retry
// after a stale connection goes through a shard, which dials. t.Done is
// called exactly once when RunInline reports true, on this goroutine or,
// for a retry, on a shard's.
func (s *Set) RunInline(t *Task) bool {
	if t.PinKey != 0 || t.fresh || s.closed.Load() || t.Ctx.Err() != nil {
		return false
	}
	if t.Pipeline > 1 {
		if ran, c := s.runPipelined(t); ran {
			return true
		} else if c != nil {
			return s.runInlineOn(t, c)
		}
	}
	var c *conn.Conn
	for {
		var ok bool
		if c, ok = s.pool.Get(t.Key); !ok {
			return false
		}
		if s.takeFor(t, c) {
			break
		}
	}
	return s.runInlineOn(t, c)
}

// runInlineOn is RunInline once t has c, a Busy connection from the pool.
func (s *Set) runInlineOn(t *Task, c *conn.Conn) bool {
	t.ctr = s.stats.For(t.Key)
	t.attempts++
	t.ctr.Attempts.Add(1)
	if c.Requests() > 0 {
		t.ctr.OnReused.Add(1)
	}
	out, err := roundTrip(t, c)
	err = s.settle(t, c, out, err)
	if err == nil {
		finish(t, nil)
		return true
	}
	if errors.Is(err, ErrResend) {
		t.resent = true
		if s.closed.Load() {
			finish(t, ErrClosed)
			return true
		}
		s.shardFor(0).post(event{kind: evSubmit, t: t})
		return true
	}
	if e := conn.AsError(err); e != nil && t.Ctx.Err() == nil && stale(e) {
		t.ctr.RacesHit.Add(1)
		if t.attempts <= s.cfg.MaxRetries && t.replayable(e, s.cfg.StrictResend) && rewind(t, s.cfg.Logger) {
			t.ctr.RacesRetried.Add(1)
			t.ctr.Retries.Add(1)
			t.fresh = true
			if s.closed.Load() {
				finish(t, err)
				return true
			}
			s.shardFor(0).post(event{kind: evSubmit, t: t})
			return true
		}
	}
	if e := conn.AsError(err); e != nil && t.Reroute != nil && t.Ctx.Err() == nil && headerTimedOut(e) &&
		t.attempts <= s.cfg.MaxRetries && t.resendable(e, s.cfg.StrictResend) && !s.closed.Load() && rewind(t, s.cfg.Logger) &&
		t.Reroute(t, err) {
		// A peer that gave no response byte within the response-header
		// timeout on a kept-alive connection: the request moves to
		// another peer as from a shard (exchanged). The task is this
		// goroutine's alone until it is posted, so the hook may run here.
		t.ctr.Retries.Add(1)
		t.ctr = s.stats.For(t.Key)
		t.resent = true // on a shard now: Retried
		s.shardFor(0).post(event{kind: evSubmit, t: t})
		return true
	}
	finish(t, err)
	return true
}
