package conn

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// Pipelining (RFC 9112 §9.3.2): a connection in pipeline mode carries
// several requests at once. Their heads go out back to back, several in one
// write when they come together, and their responses come back in the
// order sent, each read by its own request's goroutine in turn. That turns
// the two system calls an exchange makes on the upstream side (one write,
// one read) into two per batch.
//
// Only requests that are safe to send twice take part: GET and HEAD
// without a body, that do not ask to close. When the connection cannot go
// on (a response that closes it, an error, a response the watchdog took
// off the poller), the requests queued behind are answered with
// ErrUnanswered, and the layer above sends them again on another
// connection.
//
// A batch's write (flushOut) starts under c.mu, which the watchdog also
// holds when it takes the fd off the poller, and marks the connection
// writing: the fd does not leave the poller until the write is over (the
// watchdog looks again later; detach waits), so no write lands on a
// detached connection. The write itself runs outside c.mu: it may wait
// long for room (an upstream that stops reading), and Close must be able
// to end it meanwhile. Heads that come during the write wait for its end
// (netpoll's writer takes one user at a time).

// ErrUnanswered reports a pipelined request whose connection ended, or
// stopped being read in order, before its response: the upstream may or
// may not have seen it. Only idempotent requests are pipelined, so it may
// be sent again.
var ErrUnanswered = errors.New("conn: pipelined request unanswered: the connection ended before its response")

// DefaultStallAfter is the default of StartPipeline's stall: how long a
// pipeline may go without finishing a response and still take more
// requests. A slow response (a long poll, a slow backend) holds up every
// request behind it, so once it has held the line this long new requests
// go to other connections.
const DefaultStallAfter = 20 * time.Millisecond

// pipeline is a connection's pipeline state, under its mu.
type pipeline struct {
	mu       sync.Mutex
	depth    int   // most requests outstanding at once
	queued   int   // sent and not finished
	tail     *Turn // last request sent; nil when none waits
	holder   *Turn // the request whose response is being read, or next to be
	evicted  bool  // waiters were sent away (evictWaiters): responses remain unread
	flushing bool  // a sender will flush what was written
	answered int   // responses read whole; the turn's holder's
	progress int64 // nanotime of the last turn handed on, or of the start
	stall    int64 // StartPipeline's stall, in ns
	closed   bool  // takes no more requests
	ab       *Abortable
	written  *sync.Cond   // on c.mu: broadcast when a flush ends (c.writing)
	edits    parser.Edits // the edits of the head being written
	clBuf    [20]byte     // forwardEdits' digits buffer for edits
	sent     int          // requests sent on the connection in all, these included
	limit    int          // most requests the connection may carry in all; 0 for no limit
	until    time.Time    // no request goes out from then on; zero for no end
}

// Turn is one pipelined request's place in its connection's order of
// responses.
type Turn struct {
	ready   chan struct{} // signalled when the response before it is done, or when evicted
	next    *Turn
	flush   bool // its sender flushes the batch (PipeFlush)
	evicted bool // sent away while waiting (evictWaiters); under the pipeline's mu
}

// Flushes reports that the turn's sender must call PipeFlush.
func (t *Turn) Flushes() bool { return t.flush }

var turnPool = sync.Pool{New: func() any { return &Turn{ready: make(chan struct{}, 1)} }}

// Pipelinable reports whether ex may be pipelined: GET or HEAD as sent,
// with no body, not asking to close or to switch protocols.
func Pipelinable(ex *Exchange) bool {
	if ex.Head == nil || ex.Body != nil && ex.ContentLength != 0 {
		return false
	}
	switch ex.Edits.MethodID(ex.Head) {
	case parser.MethodGet, parser.MethodHead:
	default:
		return false
	}
	return !ex.Edits.ConnectionClose(&ex.Head.Header) && !offersUpgrade(ex)
}

// StartPipeline puts a Busy netpoll connection in pipeline mode for up to
// depth requests at once, under ab (which closes it when aborted; nil for
// none), taking no more requests once no response has finished for stall
// (DefaultStallAfter when not positive). It reports false, changing
// nothing, for a connection that cannot be pipelined (Go net, TLS,
// detached) or an ab already aborted.
func (c *Conn) StartPipeline(depth int, ab *Abortable, writeTimeout, stall time.Duration) bool {
	if c.g != nil || c.tlsState != nil || c.detached.Load() || depth < 2 || c.State() != Busy {
		return false
	}
	if ab != nil && !ab.watch(c) {
		return false
	}
	if c.pl == nil {
		c.pl = &pipeline{written: sync.NewCond(&c.mu)}
	}
	pl := c.pl
	pl.mu.Lock()
	pl.depth, pl.queued, pl.tail, pl.flushing, pl.closed, pl.ab, pl.answered = depth, 0, nil, false, false, ab, 0
	pl.holder, pl.evicted = nil, false
	pl.progress = nanotime()
	if stall <= 0 {
		stall = DefaultStallAfter
	}
	pl.stall = int64(stall)
	pl.sent, pl.limit, pl.until = c.requests, 0, time.Time{}
	pl.mu.Unlock()
	if writeTimeout <= 0 {
		writeTimeout = DefaultWriteTimeout
	}
	_ = c.nc.SetWriteTimeout(writeTimeout)
	return true
}

// LimitPipeline bounds the requests a connection just put in pipeline
// mode takes: no more than maxRequests in its life (0 for no limit), none
// from until on (zero for no end), as the pool's MaxRequests and
// MaxLifetime bound a connection that goes back to it between requests. A
// pipeline that stays busy never goes back: without this, its connection
// would carry requests past both.
func (c *Conn) LimitPipeline(maxRequests int, until time.Time) {
	pl := c.pl
	pl.mu.Lock()
	pl.limit, pl.until = maxRequests, until
	pl.mu.Unlock()
}

// EndPipeline takes a connection whose pipeline was closed and finished
// (PipeDone reported last) out of pipeline mode. It reports false when an
// abort has closed the connection meanwhile.
func (c *Conn) EndPipeline() bool {
	pl := c.pl
	pl.mu.Lock()
	ab := pl.ab
	pl.ab, pl.depth = nil, 0
	pl.mu.Unlock()
	if ab != nil && !ab.unwatch(c) {
		return false
	}
	return true
}

// pipelined reports a connection in pipeline mode, whose writes and
// reads are not the ones RoundTrip tracks.
func (c *Conn) pipelined() bool {
	return c.pl != nil && c.pl.depth > 0
}

// PipeSend writes ex's head after the requests already pipelined on c
// (ex must be Pipelinable). It returns ok false, writing nothing, when c
// takes no more requests (closed, full, gone). With turn.flush set, the
// caller must call PipeFlush next: it was the first of a batch, whose
// write goes out once the requests ready to run have joined it.
func (c *Conn) PipeSend(ex *Exchange) (turn *Turn, ok bool) {
	pl := c.pl
	bb := headPool.Get()
	defer headPool.Put(bb)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed || pl.queued >= pl.depth || pl.queued > 0 && nanotime()-pl.progress > pl.stall {
		return nil, false
	}
	if pl.limit > 0 && pl.sent >= pl.limit || !pl.until.IsZero() && !time.Now().Before(pl.until) {
		// Spent: it goes back to the pool, which retires it, once the
		// requests it took are answered (closed would leave them
		// unanswered).
		return nil, false
	}
	e := &pl.edits
	forwardEdits(e, &pl.clBuf, ex)
	if err := parser.WriteRequestHead(bb, ex.Head, e); err != nil {
		return nil, false
	}
	if !c.appendOut(bb.B) {
		pl.closed = true
		return nil, false
	}
	turn = turnPool.Get().(*Turn)
	turn.next, turn.flush, turn.evicted = nil, !pl.flushing, false
	pl.flushing = true
	if pl.tail == nil && pl.queued == 0 {
		turn.ready <- struct{}{} // nothing before it
		pl.holder = turn
	} else if pl.tail != nil {
		pl.tail.next = turn
	}
	pl.tail = turn
	pl.queued++
	pl.sent++
	return turn, true
}

// appendOut copies p into the connection's output buffer, unflushed. It
// reports false when the connection is closed or off the poller. It waits
// for a flush under way (c.writing: until the socket took the bytes, or
// the write timeout when the upstream does not read, or a Close): only
// requests for this connection wait with it.
func (c *Conn) appendOut(p []byte) (ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writing {
		c.pl.written.Wait() // netpoll's writer takes one user at a time
	}
	if c.closed || c.detached.Load() {
		return false
	}
	defer func() {
		if r := recover(); r != nil { // netpoll's writer on a closing connection
			ok = false
		}
	}()
	w := c.nc.Writer()
	buf, err := w.Malloc(len(p))
	if err != nil {
		return false
	}
	copy(buf, p)
	// Counted as sent, so that a later exchange's acknowledgement check
	// (acked.go) starts from the right place.
	c.sent += int64(len(p))
	return true
}

// PipeFlush sends the batch that the caller's PipeSend began: first it
// yields, so that the requests already runnable add their heads, then it
// writes them all at once. A failed write (the upstream closed after an
// earlier response, say) closes the pipeline but not the connection: the
// response being read, already sent for, is read to its end, and every
// request behind it fails unanswered when its turn comes.
func (c *Conn) PipeFlush() {
	runtime.Gosched()
	pl := c.pl
	pl.mu.Lock()
	pl.flushing = false // a head added from now on starts the next batch
	pl.mu.Unlock()
	// Ordered with appendOut by c.writing: neither pl.mu nor c.mu is held
	// while the socket takes the bytes.
	if err := c.flushOut(); err != nil {
		pl.mu.Lock()
		pl.closed = true
		pl.mu.Unlock()
	}
}

// flushOut sends the output buffer. It holds c.mu only to start and to
// end: while c.writing, the fd stays on the poller (stopPoller refuses,
// detach waits) and Close may close the connection, which ends the write.
func (c *Conn) flushOut() (err error) {
	c.mu.Lock()
	for c.writing {
		c.pl.written.Wait() // another batch's write
	}
	if c.closed || c.detached.Load() {
		c.mu.Unlock()
		return ErrClosed
	}
	c.writing = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.writing = false
		c.pl.written.Broadcast()
		c.mu.Unlock()
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: flush panicked: %v", ErrClosed, r)
		}
	}()
	return c.nc.Writer().Flush()
}

// PipeReceive waits for turn, then reads the response to ex into sink, as
// RoundTrip does after sending. A request whose turn comes after the
// connection stopped (an earlier response closed it, or failed) fails with
// ErrUnanswered, without reading. PipeDone must follow, whatever the
// outcome.
func (c *Conn) PipeReceive(ex *Exchange, sink Sink, turn *Turn) (Outcome, error) {
	<-turn.ready
	pl := c.pl
	pl.mu.Lock()
	closed, evicted := pl.closed, turn.evicted
	pl.mu.Unlock()
	if evicted {
		// Sent away while the response in front was stuck in its sink:
		// the connection is another request's, not to be touched.
		return Outcome{Reused: true, Written: true}, &Error{Phase: PhaseAwaitHead, Addr: c.addr, Reused: true, Written: true, Delivered: true, Err: ErrUnanswered}
	}
	if closed || c.isClosed() {
		// c.last stays the last response's: the connection's fate (a
		// close the upstream asked for) is told by it.
		c.noReuse = true
		out := Outcome{Reused: true, Written: true}
		return out, &Error{Phase: PhaseAwaitHead, Addr: c.addr, Reused: true, Written: true, Delivered: true, Err: ErrUnanswered}
	}
	c.last = Outcome{Reused: true, Written: true}
	c.noReuse = true
	c.requests++
	cfg, _ := c.begin(ex)
	err := c.receive(ex, sink, cfg, 0, false)
	if err != nil {
		c.noReuse = true
		if e := AsError(err); e != nil && !e.Responded && pl.answered > 0 && endedBeforeAnswer(err) {
			// Closed or reset after answering a request before this one:
			// the upstream stopped there, as with a close it announced.
			// A timeout is not: the upstream took the request and is
			// slow with it, and a resend would ask it twice.
			e.Err = fmt.Errorf("%w: %w", ErrUnanswered, e.Err)
		}
	} else {
		pl.answered++
	}
	return c.last, err
}

// EvictAfter is how long a sink call on a pipelined connection may block
// (a client reading its response slowly) before the requests waiting
// behind it are sent away, to go again on other connections, rather than
// wait for that client.
const EvictAfter = 250 * time.Millisecond

// evictWaiters sends away the requests waiting behind the one whose
// response is being delivered: each wakes with ErrUnanswered, and the
// connection, whose responses to them are still to come, takes no more
// and is not reused. It is called by the watchdog, under c.mu; it does
// not wait for pl.mu (whose holders may wait for c.mu) and reports
// whether it got it.
func (c *Conn) evictWaiters() bool {
	pl := c.pl
	if !pl.mu.TryLock() {
		return false
	}
	defer pl.mu.Unlock()
	h := pl.holder
	if pl.depth == 0 || h == nil || h.next == nil {
		return true
	}
	for t := h.next; t != nil; {
		next := t.next
		t.evicted, t.next = true, nil
		pl.queued--
		t.ready <- struct{}{}
		t = next
	}
	h.next, pl.tail = nil, h
	pl.closed, pl.evicted = true, true
	return true
}

// endedBeforeAnswer reports a read that failed because the connection
// ended (the upstream's close or reset, or ours), not a timeout or an
// error of the response itself.
func endedBeforeAnswer(err error) bool {
	if errors.Is(err, ErrUnanswered) {
		return false // already said
	}
	return errors.Is(err, ErrUnexpectedEOF) || errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerReset) ||
		errors.Is(err, syscall.ECONNRESET)
}

// PipeDone ends turn: the next request's turn begins, or, when the
// connection cannot go on, every request behind it fails unanswered. It
// reports last when no request is left: the pipeline is then closed, and
// the caller ends it (EndPipeline) and settles the connection
// (Reusable says whether it may go back to the pool).
func (c *Conn) PipeDone(turn *Turn) (last bool) {
	pl := c.pl
	pl.mu.Lock()
	if turn.evicted {
		// Counted out and unlinked when it was sent away.
		pl.mu.Unlock()
		turnPool.Put(turn)
		return false
	}
	if pl.evicted {
		c.noReuse = true // the responses of the requests sent away are still to come
	}
	if c.noReuse || c.detached.Load() {
		pl.closed = true
	}
	pl.queued--
	pl.progress = nanotime()
	next := turn.next
	if next == nil {
		pl.tail = nil
	}
	if pl.queued == 0 {
		pl.closed = true // a sender from now on takes another connection
		last = true
	}
	pl.holder = next
	pl.mu.Unlock()
	turn.next = nil
	turnPool.Put(turn)
	if next != nil {
		next.ready <- struct{}{}
	}
	return last
}
