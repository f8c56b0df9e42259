package shard

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// pipes is a Set's registry of the connections in pipeline mode, by key:
// taken from the shared pool by the first request of a pipeline, they
// carry requests while any is outstanding and go back to the pool (or
// close) when the last one is done. Its lock nests outside the pool's.
type pipes struct {
	mu sync.Mutex
	m  map[poolset.Key][]*conn.Conn
	// off holds the keys not pipelined for now, with the time they may
	// be again: a pipeline that a large response took off netpoll sends
	// the requests behind it again (their responses stay unread), so
	// after one the key's requests go one per connection for a while.
	off map[poolset.Key]time.Time
	gen uint64 // counts the changes to m
}

// pipelineOff is how long a key goes unpipelined after a large response
// ended a pipeline.
const pipelineOff = time.Second

// pipelinable reports a task that may be pipelined (Task.Pipeline), with
// its context's Abortable.
func pipelinable(t *Task) (*conn.Abortable, bool) {
	ab, ok := t.Ctx.(*conn.Abortable)
	if !ok || t.Pipeline < 2 || t.Run != nil || t.Switch || t.Pin || t.Dialer != nil {
		return nil, false
	}
	return ab, conn.Pipelinable(&t.Exchange)
}

// runPipelined runs t pipelined on a connection of its key, on the
// caller's goroutine: behind the requests already outstanding on one that
// has room, else on an idle connection from the pool, which starts a
// pipeline. It reports ran false when t was not sent: it cannot be
// pipelined, or no connection can take it; c, when not nil, is a Busy
// connection from the pool that cannot be pipelined (Go net), which the
// caller runs t on as RunInline would.
func (s *Set) runPipelined(t *Task) (ran bool, c *conn.Conn) {
	ab, ok := pipelinable(t)
	if !ok {
		return false, nil
	}
	c, turn, plain := s.pipeJoin(t, ab)
	if turn == nil {
		return false, plain
	}
	if turn.Flushes() {
		c.PipeFlush()
	}
	t.ctr = s.stats.For(t.Key)
	t.attempts++
	t.ctr.Attempts.Add(1)
	t.ctr.OnReused.Add(1)
	t.ctr.Pipelined.Add(1)
	_, err := pipeReceive(t, c, turn)
	if c.PipeDone(turn) {
		s.pipeRetire(t, c)
	}
	// c is another request's now, or back in the pool.
	if err == nil {
		finish(t, nil)
		return true, nil
	}
	if e := conn.AsError(err); e != nil && t.Ctx.Err() == nil && !s.closed.Load() {
		unanswered := errors.Is(err, conn.ErrUnanswered)
		raced := !unanswered && stale(e)
		if raced {
			t.ctr.RacesHit.Add(1)
		}
		// An unanswered request is sent again whatever MaxRetries says:
		// it failed because of a request before it, never reaches a
		// pipeline again (a resent task runs on a shard), and goes once.
		if (unanswered || raced && t.attempts <= s.cfg.MaxRetries) && t.resendable(e, s.cfg.StrictResend) {
			if raced {
				t.ctr.RacesRetried.Add(1)
			} else {
				t.ctr.Unanswered.Add(1)
			}
			t.ctr.Retries.Add(1)
			if unanswered {
				// Not a failed attempt: nothing was wrong with the
				// request, and its resend keeps the whole retry budget
				// for a stale connection of its own.
				t.attempts--
			}
			t.fresh = raced
			t.resent = true
			s.shardFor(0).post(event{kind: evSubmit, t: t})
			return true, nil
		}
	}
	finish(t, err)
	return true, nil
}

// pipeReceive reads t's response in its turn; a sink's panic becomes an
// error after closing c, so that the turn is always handed on.
func pipeReceive(t *Task, c *conn.Conn, turn *conn.Turn) (out conn.Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			_ = c.Close()
			err = &conn.Error{Phase: conn.PhaseBody, Addr: t.Key.Addr, Reused: true, Written: true, Delivered: true, Responded: true,
				Err: fmt.Errorf("%w: panic: %v", conn.ErrSink, r)}
		}
	}()
	return c.PipeReceive(&t.Exchange, t.Sink, turn)
}

// pipeJoin sends t's head on a connection in pipeline mode with room, or
// on an idle one from the pool, which starts one. It returns turn nil when
// it sent nothing; plain is then a Busy connection from the pool that
// cannot be pipelined, or nil.
func (s *Set) pipeJoin(t *Task, ab *conn.Abortable) (c *conn.Conn, turn *conn.Turn, plain *conn.Conn) {
	// The registry's lock is not held while a connection is written to:
	// a head waits for the batch being written before it, which may wait
	// for room in the socket, and only the requests for that connection
	// may wait with it. A
	// connection that left pipeline mode since (closed, back in the pool)
	// refuses the head (PipeSend); one that started another pipeline of
	// the same key takes it, as it would from the registry.
	var seen [8]*conn.Conn
	s.pipes.mu.Lock()
	for try := 0; ; try++ {
		if s.closed.Load() {
			s.pipes.mu.Unlock()
			return nil, nil, nil
		}
		if until, ok := s.pipes.off[t.Key]; ok {
			if time.Now().Before(until) {
				s.pipes.mu.Unlock()
				return nil, nil, nil
			}
			delete(s.pipes.off, t.Key)
		}
		n, gen := copy(seen[:], s.pipes.m[t.Key]), s.pipes.gen
		s.pipes.mu.Unlock()
		for _, c := range seen[:n] {
			if turn, ok := c.PipeSend(&t.Exchange); ok {
				return c, turn, nil
			}
		}
		s.pipes.mu.Lock()
		if s.pipes.gen == gen || try == 2 {
			break
		}
		// A pipeline started (or ended) meanwhile, maybe one of this
		// key that a request coming at the same moment just began: look
		// again rather than take another connection.
	}
	defer s.pipes.mu.Unlock()
	for {
		var ok bool
		if c, ok = s.pool.Get(t.Key); !ok {
			return nil, nil, nil
		}
		if err := c.SetState(conn.Busy); err == nil {
			break
		}
		_ = c.Close()
		s.pool.Closed(t.Key, poolset.Busy)
	}
	if !c.StartPipeline(t.Pipeline, ab, t.Exchange.Config.WriteTimeout, s.cfg.PipelineStall) {
		return nil, nil, c
	}
	// The pool's limits apply to the requests the pipeline takes while it
	// never goes back to the pool.
	var until time.Time
	pc := s.pool.Config()
	if pc.MaxLifetime > 0 {
		until = c.Born().Add(pc.MaxLifetime)
	}
	c.LimitPipeline(pc.MaxRequests, until)
	turn, ok := c.PipeSend(&t.Exchange)
	if !ok {
		// Closed under us, the head cannot be written, or past the
		// pool's limits: the plain path runs it (the pool gave it out) or
		// fails it with the reason.
		c.EndPipeline()
		return nil, nil, c
	}
	if s.pipes.m == nil {
		s.pipes.m = make(map[poolset.Key][]*conn.Conn)
	}
	s.pipes.m[t.Key] = append(s.pipes.m[t.Key], c)
	s.pipes.gen++
	return c, turn, nil
}

// pipeRetire takes c, whose pipeline has ended, out of the registry and
// back to the pool, or closes it.
func (s *Set) pipeRetire(t *Task, c *conn.Conn) {
	s.pipes.mu.Lock()
	list := s.pipes.m[t.Key]
	for i, x := range list {
		if x == c {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(s.pipes.m, t.Key)
	} else {
		s.pipes.m[t.Key] = list
	}
	s.pipes.gen++
	if c.Detached() {
		if s.pipes.off == nil {
			s.pipes.off = make(map[poolset.Key]time.Time)
		}
		s.pipes.off[t.Key] = time.Now().Add(pipelineOff)
	}
	s.pipes.mu.Unlock()
	c.EndPipeline()
	_ = s.settle(t, c, c.LastOutcome(), nil)
}
