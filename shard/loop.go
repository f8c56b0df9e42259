package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

type evKind uint8

const (
	evSubmit   evKind = iota // a new request
	evDialed                 // a dial finished: c or err
	evGrant                  // the pool answered a waiter: g
	evCanceled               // a waiting request's context ended
	evDone                   // an exchange finished: c, out, err
	evUnpin                  // end session pinKey
	evLookup                 // report session pinKey on reply
	evProbe                  // check idle pinned sessions
	evEndKey                 // end the sessions pinned under key
)

type event struct {
	kind   evKind
	t      *Task
	c      *conn.Conn
	g      poolset.Grant[*conn.Conn]
	err    error
	out    conn.Outcome
	pinKey uint64
	key    *poolset.Key
	reply  chan<- lookup
}

type lookup struct {
	state conn.State
	ok    bool
}

// Shard is one event-loop goroutine and the state it owns.
type Shard struct {
	set *Set
	id  int

	mu    sync.Mutex // guards q only
	q     []event
	wake  chan struct{}
	quit  chan struct{}
	spare []event

	// Owned by the shard goroutine.
	stopping bool // shutting down: no new work starts
	pending  int  // requests waiting for the pool
	pinned   map[uint64]*session
	probe    *time.Timer // armed while a pinned session is live
}

// post appends ev to the inbox; safe from any goroutine, never blocks.
func (s *Shard) post(ev event) {
	s.mu.Lock()
	s.q = append(s.q, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Shard) run() {
	defer s.set.wg.Done()
	for {
		select {
		case <-s.wake:
		case <-s.quit:
			s.stopping = true
			s.drainInbox()
			s.closeSessions()
			return
		}
		s.mu.Lock()
		batch := s.q
		s.q = s.spare[:0]
		s.mu.Unlock()
		for i := range batch {
			s.handle(batch[i])
			batch[i] = event{}
		}
		s.spare = batch[:0]
	}
}

// drainInbox answers what is left at shutdown without starting work.
func (s *Shard) drainInbox() {
	s.mu.Lock()
	batch := s.q
	s.q = nil
	s.mu.Unlock()
	for _, ev := range batch {
		switch ev.kind {
		case evSubmit:
			ev.t.Done(ErrClosed)
		case evLookup:
			ev.reply <- lookup{}
		default:
			s.handle(ev) // results must still be accounted for
		}
	}
}

func (s *Shard) handle(ev event) {
	switch ev.kind {
	case evSubmit:
		s.start(ev.t)
	case evDialed:
		s.dialed(ev.t, ev.c, ev.err)
	case evGrant:
		s.granted(ev.t, ev.g)
	case evCanceled:
		if t := ev.t; t.waiter != nil && t.waiter.Cancel() {
			t.waiter = nil
			s.pending--
			s.finish(t, s.fail(t, conn.PhasePoolWait, t.Ctx.Err()))
		}
	case evDone:
		s.exchanged(ev.t, ev.c, ev.out, ev.err)
	case evUnpin:
		if ss, ok := s.pinned[ev.pinKey]; ok {
			s.endSession(ev.pinKey, ss, false)
		}
	case evProbe:
		s.probe = nil
		s.probeSessions(time.Now())
	case evEndKey:
		s.endSessionsOf(*ev.key)
	case evLookup:
		ss, ok := s.pinned[ev.pinKey]
		st := conn.Closed
		if ok && ss.c != nil {
			st = ss.c.State()
		}
		ev.reply <- lookup{state: st, ok: ok}
	}
}

// fail wraps err for t in a *conn.Error of phase p.
func (s *Shard) fail(t *Task, p conn.Phase, err error) error {
	return &conn.Error{Phase: p, Addr: t.Key.Addr, Err: err}
}

// start runs the queue runner's steps for t.
func (s *Shard) start(t *Task) {
	if s.stopping {
		s.finish(t, ErrClosed)
		return
	}
	if err := t.Ctx.Err(); err != nil {
		s.finish(t, s.fail(t, conn.PhasePoolWait, err))
		return
	}
	if t.PinKey != 0 {
		// A session speaks for its own upstream only (and an origin's
		// login through a parent for that origin only: serves): the
		// client's request to another (a forward proxy's next site)
		// goes as any other, unpinned, and the session stays for the
		// requests to its upstream. A handshake the request starts
		// there replaces it (pin).
		if ss, ok := s.pinned[t.PinKey]; ok && ss.serves(t) {
			s.runPinned(t, ss)
			return
		}
	}
	pool := s.set.pool
	for !t.fresh {
		c, ok := pool.Get(t.Key)
		if !ok {
			break
		}
		if s.set.takeFor(t, c) {
			s.exchange(t, c)
			return
		}
	}
	if pool.TryReserve(t.Key) {
		s.dial(t)
		return
	}
	if s.pending >= s.set.cfg.MaxPending {
		s.finish(t, s.fail(t, conn.PhasePoolWait, fmt.Errorf("%w: %d requests pending", ErrOverloaded, s.pending)))
		return
	}
	wait := s.set.cfg.PendingTimeout
	if t.PendingTimeout > 0 {
		wait = t.PendingTimeout
	}
	w, err := pool.Wait(t.Key, time.Now().Add(wait), func(g poolset.Grant[*conn.Conn]) {
		s.post(event{kind: evGrant, t: t, g: g})
	})
	if err != nil {
		s.waitFailed(t, err)
		return
	}
	s.pending++
	t.waiter = w
	t.stopWait = context.AfterFunc(t.Ctx, func() { s.post(event{kind: evCanceled, t: t}) })
}

// take marks a connection from the pool busy. It fails only for a
// connection closed after the pool's Alive probe (a context that ended as
// the connection was returned); that one is accounted closed.
func (s *Set) take(key poolset.Key, c *conn.Conn) bool {
	if err := c.SetState(conn.Busy); err != nil {
		_ = c.Close()
		s.pool.Closed(key, poolset.Busy)
		return false
	}
	return true
}

// takeFor marks c, a connection the pool handed out for t, busy, as take
// does. For a request that might not go again after meeting a stale
// connection's close (Task.fragile), it first looks at the socket
// (conn.Probe): a connection whose upstream's close is already in the
// kernel, though not yet seen by the poller and so by the pool's Alive, is
// closed and counted dead on checkout instead of carrying the request. It
// reports whether t may use c.
func (s *Set) takeFor(t *Task, c *conn.Conn) bool {
	if !s.take(t.Key, c) {
		return false
	}
	if t.fragile() && !c.Probe() {
		_ = c.Close()
		s.pool.ClosedDead(t.Key, poolset.Busy)
		return false
	}
	return true
}

// dial starts a dial on the dial pool. A dial beyond the pool's size runs
// on a goroutine of its own rather than failing: the pool bounds the
// goroutines kept, while the number of dials is bounded by the callers
// (the upstream's cap and MaxPending, when set). Failing a request for want of a worker turned
// bursts of new clients into 503s.
func (s *Shard) dial(t *Task) {
	fn := func() {
		var c *conn.Conn
		var err error
		if t.Dialer != nil {
			c, err = t.Dialer.Dial(t.Ctx, t.Key.Addr)
		} else {
			c, err = conn.Dial(t.Ctx, t.Key.Addr, s.set.cfg.ConnectTimeout)
		}
		s.post(event{kind: evDialed, t: t, c: c, err: err})
	}
	if s.set.dials.Submit(fn) != nil {
		s.set.overflow.Add(1)
		go func() {
			defer s.set.overflow.Done()
			fn()
		}()
	}
}

func (s *Shard) dialed(t *Task, c *conn.Conn, err error) {
	pool := s.set.pool
	if err != nil {
		if t.Ctx.Err() != nil {
			// The request gave up (its caller, or the engine's Close),
			// which ended the dial: not a failure of the upstream.
			pool.DialCanceled(t.Key)
		} else {
			pool.DialFailed(t.Key)
		}
		s.unsent(t, err)
		return
	}
	pool.Dialed(t.Key)
	if c.TLSState() != nil {
		t.ctr.TLSHandshakes.Add(1)
		if c.Resumed() {
			t.ctr.TLSResumed.Add(1)
		}
	}
	if s.stopping {
		// A dial that finished during shutdown: start nothing new.
		_ = c.Close()
		pool.Closed(t.Key, poolset.Busy)
		s.finish(t, ErrClosed)
		return
	}
	if err := t.Ctx.Err(); err != nil {
		s.release(t.Key, c) // a fresh connection: keep it for the next request
		s.finish(t, s.fail(t, conn.PhaseDial, err))
		return
	}
	s.exchange(t, c)
}

// unsent ends t with err, a failure before any byte of it was sent (a
// dial that failed), unless its Reroute points it at another upstream,
// where it starts afresh.
func (s *Shard) unsent(t *Task, err error) {
	if t.Reroute != nil && !s.stopping && t.Ctx.Err() == nil && t.Reroute(t, err) {
		t.ctr.Retries.Add(1)
		t.ctr = s.set.stats.For(t.Key)
		s.start(t)
		return
	}
	s.finish(t, err)
}

// waitFailed ends t, whose wait for a connection failed with err. A key
// that began draining (poolset.ErrDraining) before t had a connection is
// a failure before anything was sent, which t's Reroute may take to
// another upstream; other failures (a full queue, a pending timeout) end
// t.
func (s *Shard) waitFailed(t *Task, err error) {
	err = s.fail(t, conn.PhasePoolWait, err)
	if errors.Is(err, poolset.ErrDraining) {
		s.unsent(t, err)
		return
	}
	s.finish(t, err)
}

func (s *Shard) granted(t *Task, g poolset.Grant[*conn.Conn]) {
	s.pending--
	t.waiter = nil
	if t.stopWait != nil {
		t.stopWait()
		t.stopWait = nil
	}
	switch {
	case g.Err != nil:
		s.waitFailed(t, g.Err)
	case s.stopping && g.Permit:
		s.set.pool.GiveBack(t.Key, g)
		s.finish(t, ErrClosed)
	case s.stopping:
		if s.set.take(t.Key, g.Conn) {
			s.release(t.Key, g.Conn)
		}
		s.finish(t, ErrClosed)
	case g.Permit:
		if err := t.Ctx.Err(); err != nil {
			s.set.pool.GiveBack(t.Key, g) // free capacity: nothing was dialed
			s.finish(t, s.fail(t, conn.PhasePoolWait, err))
			return
		}
		s.dial(t)
	default:
		if err := t.Ctx.Err(); err != nil {
			// Nobody takes it: back as it was handed over, idle since
			// the response before and under that response's hint.
			s.set.pool.GiveBack(t.Key, g)
			s.finish(t, s.fail(t, conn.PhasePoolWait, err))
			return
		}
		c := g.Conn
		if t.fresh && c.Requests() > 0 {
			// A retry after the stale race goes on a new connection
			// (start): one handed over on return is a reused one, which
			// may be as stale as the first (one never used, whose dial's
			// request had gone, is as new as a dial). It is closed, and its place
			// under the cap dialed; unless the key takes no new
			// connection now (it began draining, or its cap was
			// lowered): start then fails t with ErrDraining, for its
			// Reroute, or has it wait again.
			_ = c.Close()
			if s.set.pool.Replace(t.Key) {
				s.dial(t)
			} else {
				s.start(t)
			}
			return
		}
		if !s.set.takeFor(t, c) {
			s.start(t)
			return
		}
		s.exchange(t, c)
	}
}

// release returns an unused busy connection to the pool. Its idle time,
// and the Keep-Alive hint that bounds it, are still those of its last
// response.
func (s *Shard) release(key poolset.Key, c *conn.Conn) {
	if err := c.SetState(conn.Idle); err != nil {
		_ = c.Close()
		s.set.pool.Closed(key, poolset.Busy)
		return
	}
	s.set.pool.Put(key, c, putInfo(c, c.LastOutcome()))
}

// putInfo is what the pool needs of c, whose last exchange ended with
// out, to decide its idle expiry and retirement.
func putInfo(c *conn.Conn, out conn.Outcome) poolset.PutInfo {
	return poolset.PutInfo{KeepAliveHint: out.KeepAliveHint, Requests: c.Requests(), Born: c.Born(), Ended: out.Ended}
}

// exchange hands the exchange to a worker; blocking I/O never runs here.
func (s *Shard) exchange(t *Task, c *conn.Conn) {
	t.attempts++
	t.ctr.Attempts.Add(1)
	if c.Requests() > 0 {
		t.ctr.OnReused.Add(1)
	}
	err := s.set.exchanges.Submit(func() {
		out, err := roundTrip(t, c)
		s.post(event{kind: evDone, t: t, c: c, out: out, err: err})
	})
	if err != nil {
		if t.pinned {
			if ss, ok := s.pinned[t.PinKey]; ok && ss.c == c {
				ss.busy = false
				defer s.nextPinned(ss)
			}
		} else {
			s.release(t.Key, c)
		}
		s.finish(t, s.fail(t, conn.PhasePoolWait, fmt.Errorf("%w: exchange pool: %w", ErrOverloaded, err)))
	}
}

// roundTrip runs the exchange, turning a panic in the caller's sink (or
// below) into an error: the completion must always reach the shard, or
// the connection's slot and the request's OnDone would be lost.
func roundTrip(t *Task, c *conn.Conn) (out conn.Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			_ = c.Close()
			err = &conn.Error{Phase: conn.PhaseBody, Addr: t.Key.Addr, Err: fmt.Errorf("%w: panic: %v", conn.ErrSink, r)}
		}
	}()
	if t.Run != nil {
		return t.Run(t.Ctx, c, t)
	}
	return c.RoundTrip(t.Ctx, &t.Exchange, t.Sink)
}

// exchanged decides the connection's fate, then retries or finishes t.
func (s *Shard) exchanged(t *Task, c *conn.Conn, out conn.Outcome, err error) {
	reusable := err == nil && c.Reusable()
	switch {
	case t.pinned && t.Switch && err == nil && out.Status == 101:
		err = s.switchPinned(t, c, out)
	case t.pinned:
		s.pinnedDone(t, c, reusable)
	case reusable && t.Pin && t.PinKey != 0:
		s.pin(t, c)
	default:
		err = s.set.settle(t, c, out, err)
	}
	if err == nil {
		s.finish(t, nil)
		return
	}
	if errors.Is(err, ErrResend) && !t.pinned {
		s.resend(t)
		return
	}
	if e := conn.AsError(err); t.pinned && e != nil && t.Ctx.Err() == nil && stale(e) {
		// The session's connection was found closed on use: the same
		// answer as when it is found closed before.
		e.Err = fmt.Errorf("%w: session %d: %w", ErrPinnedGone, t.PinKey, e.Err)
	}
	if e := conn.AsError(err); e != nil && t.Ctx.Err() == nil && stale(e) {
		t.ctr.RacesHit.Add(1)
		if t.attempts <= s.set.cfg.MaxRetries && t.Ctx.Err() == nil && t.replayable(e, s.set.cfg.StrictResend) && rewind(t, s.set.cfg.Logger) {
			t.ctr.RacesRetried.Add(1)
			t.ctr.Retries.Add(1)
			t.fresh = true
			s.start(t)
			return
		}
	}
	if e := conn.AsError(err); e != nil && t.Reroute != nil && t.Ctx.Err() == nil && !t.pinned && (refused(e) || headerTimedOut(e)) &&
		(!e.Written || t.attempts <= s.set.cfg.MaxRetries) && t.resendable(e, s.set.cfg.StrictResend) && rewind(t, s.set.cfg.Logger) {
		// A new connection the peer dropped before answering (a peer
		// that is stopping, or one that drops every connection), or a
		// peer that gave no response byte within the response-header
		// timeout (one that hangs): the request goes to another peer,
		// as after a failed connect, when sending it again is safe. One
		// that was written is sent again only within MaxRetries, as
		// after the stale race: with retries disabled, nothing is sent
		// twice.
		s.unsent(t, err)
		return
	}
	s.finish(t, err)
}

// resend starts t again after Run answered a challenge on a connection
// that cannot carry the next request.
func (s *Shard) resend(t *Task) {
	if err := t.Ctx.Err(); err != nil {
		s.finish(t, s.fail(t, conn.PhasePoolWait, err))
		return
	}
	t.resent = true
	s.start(t)
}

// settle makes the keep-alive decision for an unpinned connection after
// an exchange: back to the shared pool, or closed. An isolated one (a
// connection-based handshake without a session to pin it to) is closed.
func (s *Set) settle(t *Task, c *conn.Conn, out conn.Outcome, err error) error {
	if err == nil && t.Switch && out.Status == 101 {
		return s.switchConn(t, c, out)
	}
	if err == nil && c.Keepable() && !t.Isolate {
		// Put, not Closed, also when the upstream closed the connection
		// (or sent bytes on it) after a response that let it be kept:
		// Put's liveness check refuses it and counts it dead on return,
		// the upstream's doing, not a close of the engine's own.
		if serr := c.SetState(conn.Idle); serr == nil {
			s.pool.Put(t.Key, c, putInfo(c, out))
			return nil
		}
	}
	_ = c.Close()
	if err == nil && out.CloseAsked {
		s.pool.ClosedByUpstream(t.Key, poolset.Busy)
	} else {
		s.pool.Closed(t.Key, poolset.Busy)
	}
	if out.Detached {
		t.ctr.Detached.Add(1)
	}
	return err
}

// switchConn hands c, busy after a 101 to a Switch task, to the caller in
// t.Switched: it now speaks the protocol the request asked for, and stays
// under the key's cap until the caller closes it. When it cannot (the
// request's context ended, so nobody takes the connection; or it was
// closed meanwhile) c is closed and the error the task ends with is
// returned: after the 101's head, which the sink has seen.
func (s *Set) switchConn(t *Task, c *conn.Conn, out conn.Outcome) error {
	key, pool := t.Key, s.pool
	err := t.Ctx.Err()
	if err == nil {
		var tc *conn.TunnelConn
		if tc, err = c.Hijack(func() { pool.Closed(key, poolset.Busy) }); err == nil {
			t.Switched = tc
			return nil
		}
	}
	_ = c.Close()
	pool.Closed(key, poolset.Busy)
	return &conn.Error{Phase: conn.PhaseBody, Addr: key.Addr, Reused: out.Reused, Written: true, Delivered: true, Responded: true,
		Err: fmt.Errorf("101 Switching Protocols, but the connection cannot be handed over: %w", err)}
}

// rewind prepares the body for another attempt.
func rewind(t *Task, log *slog.Logger) bool {
	if t.Exchange.Body == nil || t.Exchange.ContentLength == 0 || t.GetBody == nil {
		return true // no body, or one never read (replayable)
	}
	b, err := t.GetBody()
	if err != nil {
		log.Debug("shard: GetBody for a retry failed", "upstream", t.Key.Addr, "err", err)
		return false
	}
	t.Exchange.Body = b
	return true
}

// finish reports t's outcome and counts it.
func (s *Shard) finish(t *Task, err error) {
	if t.stopWait != nil {
		t.stopWait()
		t.stopWait = nil
	}
	finish(t, err)
}

// finish counts t's outcome and reports it.
func finish(t *Task, err error) {
	t.ctr.Requests.Add(1)
	if err != nil {
		t.ctr.Failed(t.Ctx, err)
	}
	t.Done(err)
}

// stale reports a failure that looks like the stale keep-alive race: on a
// reused connection, before any response byte, the connection was found
// closed or reset. Timeouts and sink or request-body failures are not.
func stale(e *conn.Error) bool {
	return e.Reused && hungUp(e)
}

// refused reports a new connection that the peer closed or reset before
// any response byte, or refused with a TLS alert after the handshake (a
// TLS 1.3 server that wants another client certificate): not the stale
// keep-alive race, which only a reused connection meets, but a peer that
// drops what is sent to it.
func refused(e *conn.Error) bool {
	return !e.Reused && (hungUp(e) || e.Phase == conn.PhaseTLS && !e.Responded)
}

// headerTimedOut reports a request that got no response byte within the
// response-header timeout.
func headerTimedOut(e *conn.Error) bool {
	return e.Phase == conn.PhaseAwaitHead && !e.Responded && errors.Is(e, conn.ErrHeaderTimeout)
}

// hungUp reports a failure before any response byte in which the
// connection was found closed or reset by the peer.
func hungUp(e *conn.Error) bool {
	if e.Responded || errors.Is(e, conn.ErrRequestBody) || errors.Is(e, conn.ErrAborted) {
		return false
	}
	return errors.Is(e, conn.ErrUnexpectedEOF) || errors.Is(e, conn.ErrClosed) || errors.Is(e, conn.ErrPeerReset) ||
		errors.Is(e, syscall.ECONNRESET) || errors.Is(e, syscall.EPIPE)
}
