package engine

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrBodyClosed is what the exchange sees, and a later Read returns, when
// the reader closed the body early; the connection is then closed, not
// reused.
var ErrBodyClosed = errors.New("engine: response body closed by the reader")

// bodyPipe hands body pieces from the exchange worker (OnBody) to the
// reader of Response.Body without buffering: OnBody blocks until the
// reader has copied the whole piece, so the piece (a view into the
// connection's buffer) is never used after OnBody returns, and a slow
// reader holds the exchange, which is the backpressure. Its bound is one
// piece in flight.
type bodyPipe struct {
	ctx    context.Context // the request's: ends a blocked OnBody
	abort  func()          // ends ctx: Close of an unfinished body
	ch     chan []byte     // a piece offered by OnBody
	ack    chan struct{}   // the offered piece was consumed (capacity 1)
	done   chan struct{}   // closed by finish
	closed chan struct{}   // closed by Close

	mu        sync.Mutex // guards cur and isClosed against Close and an aborted OnBody
	cur       []byte     // what is left of the piece being read
	isClosed  bool
	abandoned bool  // the writer gave up on a piece (its context ended)
	err       error // set before done is closed
	once      sync.Once

	// length is the body's Content-Length, -1 when unknown; got counts
	// the bytes read. Both under mu: a caller that gave up before the
	// head closes the pipe while the head may be arriving.
	length, got int64
}

// setLength records the body's Content-Length.
func (bp *bodyPipe) setLength(n int64) {
	bp.mu.Lock()
	bp.length = n
	bp.mu.Unlock()
}

func newBodyPipe(ctx context.Context, abort func()) *bodyPipe {
	return &bodyPipe{ctx: ctx, abort: abort, ch: make(chan []byte), ack: make(chan struct{}, 1),
		done: make(chan struct{}), closed: make(chan struct{}), length: -1}
}

// write offers p to the reader and waits until it is consumed.
func (bp *bodyPipe) write(p []byte) error {
	select {
	case bp.ch <- p:
	case <-bp.closed:
		return ErrBodyClosed
	case <-bp.ctx.Done():
		return bp.ctx.Err()
	}
	select {
	case <-bp.ack:
		return nil
	case <-bp.closed:
		return ErrBodyClosed // Close held mu: the reader is not copying p
	case <-bp.ctx.Done():
		bp.mu.Lock() // wait out a copy in progress, then drop p
		bp.cur = nil
		bp.abandoned = true // a Read holding p but not yet mu must drop it too
		bp.mu.Unlock()
		return bp.ctx.Err()
	}
}

// finish ends the body with err (nil: complete).
func (bp *bodyPipe) finish(err error) {
	bp.err = err
	close(bp.done)
}

// Read implements io.Reader.
func (bp *bodyPipe) Read(b []byte) (int, error) {
	bp.mu.Lock()
	if len(bp.cur) == 0 && !bp.isClosed {
		bp.mu.Unlock()
		select {
		case p := <-bp.ch:
			bp.mu.Lock()
			if bp.abandoned {
				// The writer gave up between the hand-off and this lock:
				// p may already be reused memory.
				bp.mu.Unlock()
				return 0, bp.ctx.Err()
			}
			bp.cur = p
		case <-bp.done:
			if bp.err != nil {
				return 0, bp.err
			}
			return 0, io.EOF
		case <-bp.closed:
			return 0, ErrBodyClosed
		}
	}
	defer bp.mu.Unlock()
	if bp.isClosed {
		return 0, ErrBodyClosed
	}
	if bp.cur == nil { // the writer gave up on this piece
		return 0, bp.ctx.Err()
	}
	n := copy(b, bp.cur)
	bp.got += int64(n)
	bp.cur = bp.cur[n:]
	if len(bp.cur) == 0 {
		bp.cur = nil
		bp.ack <- struct{}{}
	}
	return n, nil
}

// Close implements io.Closer: an unfinished body aborts the exchange by
// ending the request's context, so its connection is closed at once, also
// while the exchange waits for body bytes that the upstream is slow to
// send; a finished one has already released it. A body whose
// Content-Length the reader has read in full is finished, as net/http's
// client takes it, even before the exchange has seen its end: Close waits
// for that (it follows at once), so the connection is reused.
func (bp *bodyPipe) Close() error {
	bp.mu.Lock()
	whole := bp.length >= 0 && bp.got >= bp.length
	bp.mu.Unlock()
	if whole {
		select {
		case <-bp.done:
		case <-bp.ctx.Done():
		}
	}
	bp.once.Do(func() {
		bp.mu.Lock()
		bp.isClosed = true
		bp.cur = nil
		close(bp.closed)
		bp.mu.Unlock()
	})
	select {
	case <-bp.done:
	default:
		// The exchange may be blocked reading the upstream rather than
		// offering a piece: only the context's end reaches it there.
		bp.abort()
	}
	return nil
}
