package conn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// Separate pools keep head sizes and body chunk sizes apart, so one does
// not skew the other's calibration.
var headPool, bodyPool bytebufferpool.Pool

const (
	bodyChunk = 32 << 10 // request body read size
	inlineMax = 16 << 10 // bodies up to this size go out with the head
)

// write sends p with one netpoll Write (which checks for a close and takes
// the flushing lock). netpoll v0.7.2 writer paths can panic on a connection
// closed concurrently; a panic becomes ErrClosed.
func (c *Conn) write(p []byte) (err error) {
	if c.g != nil {
		return c.goWrite(p)
	}
	defer func() {
		if r := recover(); r != nil {
			c.wfail = true
			err = fmt.Errorf("%w: write panicked: %v", ErrClosed, r)
		}
	}()
	n, err := c.nc.Write(p)
	if err != nil {
		c.wfail = true
		if n > 0 && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			// netpoll took p (n is all of it) and its flush failed
			// after sending some, or none, of it: a write timeout, a
			// close seen while it waited. Only an error of the first
			// sendmsg (the upstream's reset or close, already there)
			// shows that nothing went out. Written lets delivered()
			// look at what the upstream acknowledged, and keeps an
			// inline body from being handed back for a resend.
			c.last.Written = true
		}
		if errors.Is(err, netpoll.ErrConnClosed) || errors.Is(err, netpoll.ErrEOF) {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return err
	}
	c.last.Written = true
	c.sent += int64(len(p))
	return nil
}

// writePiece writes p, a piece of a request body; what names it in an
// error. On a netpoll connection it writes to the socket itself, not
// through netpoll's writer, whose flush, once the socket has no room,
// waits for room or for the write timeout and nothing else: an origin
// that answered (a 407, a 413) and then stopped reading the body (RFC
// 9112 §9.5 lets it) would hold the exchange until the write timeout.
// While the socket has no room it looks again, between short waits for
// room, at what checkAnswer looks at between pieces: such an answer
// (ErrAnswered), which netpoll's poller keeps reading, or an answer read
// while the body goes out (full duplex) that outgrew the high-water mark,
// which moves the exchange to Go net. Nothing of the head is left in
// netpoll's buffer by then (its write flushed it), so the bytes go out in
// order. Go net connections write as before.
func (c *Conn) writePiece(p []byte, what string) error {
	var deadline time.Time
	for len(p) > 0 && c.g == nil {
		var n int
		var err error
		fd := -1
		if !c.withFd(func(f int) { fd = f; n, err = unix.Write(f, p) }) {
			c.wfail = true
			return c.fail(PhaseWrite, fmt.Errorf("%s: %w", what, ErrClosed))
		}
		if n > 0 {
			c.last.Written = true
			c.sent += int64(n)
			p = p[n:]
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			c.wfail = true
			return c.fail(PhaseWrite, fmt.Errorf("%s: %w", what, err))
		}
		if err := c.checkAnswer(); err != nil {
			return err
		}
		if c.g != nil {
			continue // moved to Go net (checkAnswer): the rest goes there, below
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(c.wto)
		}
		if !now.Before(deadline) {
			c.wfail = true
			return c.fail(PhaseWrite, fmt.Errorf("%s: %w", what, os.ErrDeadlineExceeded))
		}
		// Outside the connection's lock, so that Close is not held up:
		// a close meanwhile ends the wait at the next look, or (its fd
		// reused) it only wakes this early.
		wait := min(deadline.Sub(now), pieceLook)
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(wait/time.Millisecond)+1)
	}
	if len(p) > 0 {
		if err := c.goWrite(p); err != nil {
			return c.fail(PhaseWrite, fmt.Errorf("%s: %w", what, err))
		}
	}
	return nil
}

// pieceLook is the longest writePiece waits for room in the socket before
// it looks for an answer again.
const pieceLook = 20 * time.Millisecond

// edits returns the edits to serialize ex with, in c.ownEdits.
func (c *Conn) edits(ex *Exchange) *parser.Edits {
	forwardEdits(&c.ownEdits, &c.clBuf, ex)
	return &c.ownEdits
}

// forwardEdits sets e to the edits to serialize ex with: a copy of the
// caller's (the caller's own are never written to, so one Edits may serve
// request after request) with the body framing set: Content-Length for a
// known length (its digits in clBuf, which e then refers to), chunked for
// an unknown one, and "Content-Length: 0" when the parsed head announced a
// body that is absent.
func forwardEdits(e *parser.Edits, clBuf *[20]byte, ex *Exchange) {
	if ex.Edits != nil {
		e.CopyFrom(ex.Edits)
	} else {
		e.Reset()
	}
	h := ex.Head
	m := e.MethodID(h)
	switch {
	case m == parser.MethodConnect:
	case ex.Body == nil:
		if h.Has(parser.HdrContentLength) || h.Has(parser.HdrTransferEncoding) {
			e.Set("Content-Length", zeroValue)
		}
	case ex.ContentLength >= 0:
		e.Set("Content-Length", strconv.AppendInt(clBuf[:0], ex.ContentLength, 10))
	default:
		e.Set("Transfer-Encoding", chunkedValue)
	}
	if m != parser.MethodConnect && !e.Carries(&h.Header, connectionName) {
		// Ask for the upstream's idle timeout. HTTP/1.1 persists without
		// this option (RFC 9112 §9.3), but Apache announces its timeout
		// ("Keep-Alive: timeout=N") only to a request that carries it, and
		// the pool retires a connection before that timeout ends, which
		// keeps requests out of the stale race with the upstream's close.
		e.Add("Connection", keepAliveValue)
	}
}

// writeHead serializes the head and sends it, with a small body of known
// length appended when inline is true, in one write.
func (c *Conn) writeHead(ex *Exchange, inline bool) error {
	bb := headPool.Get()
	defer func() {
		if c.kept != bb {
			headPool.Put(bb)
		}
	}()
	if err := parser.WriteRequestHead(bb, ex.Head, c.edits(ex)); err != nil {
		return c.fail(PhaseWrite, fmt.Errorf("serialize head: %w", err))
	}
	if inline {
		c.last.BodyRead = true
		n := len(bb.B)
		bb.B = append(bb.B, make([]byte, ex.ContentLength)...)
		if _, err := io.ReadFull(ex.Body, bb.B[n:]); err != nil {
			kind := ErrRequestBody
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				kind = ErrBodyLength
			}
			return c.fail(PhaseWrite, fmt.Errorf("%w: %w", kind, err))
		}
	}
	if err := c.write(bb.B); err != nil {
		if inline && !c.last.Written {
			// Nothing went out (the upstream's close, seen between the
			// pool's probe and this write: the stale race): hand the
			// body read back, so that the request may go again on
			// another connection without GetBody.
			ex.Body = bytes.NewReader(bytes.Clone(bb.B[len(bb.B)-int(ex.ContentLength):]))
			c.last.BodyRead = false
		}
		return c.fail(PhaseWrite, fmt.Errorf("write head: %w", err))
	}
	if inline {
		c.kept = bb
	}
	return nil
}

// handBack ends what writeHead kept of an inline body. When the exchange
// failed with err before any response byte, after the body went out, the
// body is handed back as when nothing went out: Body becomes a reader of
// the bytes sent and BodyRead is false, so that the request can go again
// without GetBody when the retry rules allow: the upstream never received
// it (the stale race, conn.Error.Delivered false), or it is idempotent.
// The buffer then goes back to its pool.
func (c *Conn) handBack(ex *Exchange, err error) {
	bb := c.kept
	if bb == nil {
		return
	}
	c.kept = nil
	if e := AsError(err); e != nil && e.Written && !e.Responded && !c.last.Responded {
		ex.Body = bytes.NewReader(bytes.Clone(bb.B[len(bb.B)-int(ex.ContentLength):]))
		e.BodyRead, c.last.BodyRead = false, false
	}
	headPool.Put(bb)
}

// dropKept gives back what writeHead kept of an inline body once a
// response byte came in: the request cannot go again after that.
func (c *Conn) dropKept() {
	if c.kept != nil {
		headPool.Put(c.kept)
		c.kept = nil
	}
}

// ErrAnswered stops a request body whose error response came in while it
// was going out (writeBody). A body's Read that stops waiting for bytes
// because the upstream answered (AnswerWatcher) returns an error wrapping
// it.
var ErrAnswered = errors.New("conn: final response before the request body was sent")

// AnswerWatcher is implemented by a request body whose Read may wait long
// for bytes: a reader of a client connection, whose client may pause in
// the middle of its upload (a streaming client, or one that waits to see
// whether the server answers, as RFC 9112 §9.5 has clients watch for an
// answer while they send). Without it, an error response the upstream
// sends meanwhile (a 413, a 401) is noticed only after that Read returns.
type AnswerWatcher interface {
	// WatchAnswer is called with a function before the body is read, and
	// with nil once the body is done with. A Read that waits for bytes
	// calls the function now and then, on its own goroutine (the one that
	// runs RoundTrip: the function is safe for no other); once it reports
	// true, the upstream has begun an error response, and Read returns an
	// error wrapping ErrAnswered instead of waiting on. The response is
	// then read and delivered, and the rest of the body is not sent.
	WatchAnswer(answered func() bool)
}

// answered reports an error response (status 300 or more) that came in
// while the request body is still going out: the server does not want
// the rest, and a client stops sending it (RFC 9112 §9.5). Squid, for
// one, answers a challenge to a large upload and then reads no more of
// it: the body would block, and the connection would not serve another
// request. A success (2xx) before the body is no refusal: a full-duplex
// origin (a streaming echo, an upload reporting its progress) answers
// first and then reads the body, which it must get whole; curl, too,
// keeps sending after a 2xx and stops at 300 or more. An interim
// response (1xx) is no answer either, but the final one may follow it
// already (an origin that sends 100 Continue unasked, or 103 Early
// Hints, then a 413): the complete interim heads buffered are looked
// past, and left for the response reading to deliver in order. netpoll's
// poller reads a response as it comes; a Go net connection reads only
// when asked, and cannot tell.
//
// It runs before each piece of an upload and from an AnswerWatcher's
// wait: the usual look (no byte, or a first status that is not 1xx) is
// one Peek of a status line.
func (c *Conn) answered() bool {
	if c.g != nil {
		return false
	}
	r := c.nc.Reader()
	n := r.Len()
	if n < statusEnd {
		return false
	}
	b, err := r.Peek(statusEnd)
	if err != nil {
		return false
	}
	if b[statusEnd-3] != '1' || string(b[statusEnd-3:]) == "101" {
		return b[statusEnd-3] >= '3'
	}
	// Interim heads first: look at what follows them. A Peek across
	// netpoll's buffer nodes copies into the buffer's own peek cache,
	// which it keeps (and grows) until the bytes are consumed.
	if b, err = r.Peek(min(n, answerScanMax)); err != nil {
		return false
	}
	return refusedAfterInterim(b)
}

// statusEnd is the length of a status line up to its status code.
const statusEnd = len("HTTP/1.1 200")

// answerScanMax bounds the bytes answered looks through for a final
// status line past interim heads: a parser's default head limit. An error
// response beyond it is seen once the body is sent, as it was before.
const answerScanMax = parser.DefaultMaxHeadBytes

// refusedAfterInterim reports that b, the start of a response, holds
// complete interim heads followed by the status line of an error
// response (300 or more). A 101 ends the look as a final response would:
// the connection speaks another protocol after it. Incomplete or
// malformed bytes report false; the response reading deals with them.
func refusedAfterInterim(b []byte) bool {
	for range maxInterim + 1 {
		if len(b) < statusEnd || string(b[:5]) != "HTTP/" {
			return false
		}
		if d := b[statusEnd-3]; d != '1' || string(b[statusEnd-3:statusEnd]) == "101" {
			return d >= '3'
		}
		end := headEnd(b)
		if end < 0 {
			return false
		}
		b = b[end:]
	}
	return false
}

// headEnd returns the length of the head at the start of b, up to and
// including the empty line that ends it (CRLF, or a bare LF, which the
// parser takes too), or -1 when b holds no end yet.
func headEnd(b []byte) int {
	for i := 0; ; {
		k := bytes.IndexByte(b[i:], '\n')
		if k < 0 {
			return -1
		}
		i += k + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// checkAnswer looks at what came in while the request body goes out,
// before each piece of it: ErrAnswered for an error response (answered).
// A success response is read only once the body is done, and netpoll's
// poller would meanwhile buffer all that a full-duplex origin sends (an
// echo of a large upload): past the high-water mark, the rest of the
// exchange moves to Go net I/O (adoptGoNet), where TCP holds the origin
// back.
func (c *Conn) checkAnswer() error {
	if c.answered() {
		return ErrAnswered
	}
	if c.g == nil && c.nc.Reader().Len() > c.hw {
		if err := c.adoptGoNet(); err != nil {
			return c.fail(PhaseWrite, fmt.Errorf("move to Go net during the request body: %w", err))
		}
	}
	return nil
}

// cutShort reports a body Read that gave up its wait for bytes because
// the upstream answered (AnswerWatcher), and did.
func (c *Conn) cutShort(err error) bool {
	return err != nil && errors.Is(err, ErrAnswered) && c.answered()
}

// writeBody streams the body: exactly ContentLength bytes, or chunked.
func (c *Conn) writeBody(ex *Exchange) error {
	bb := bodyPool.Get()
	defer bodyPool.Put(bb)
	const pre = 18 // room for a chunk-size line: 16 hex digits + CRLF
	if cap(bb.B) < pre+bodyChunk+2 {
		bb.B = make([]byte, pre+bodyChunk+2)
	}
	buf := bb.B[:pre+bodyChunk+2]
	c.last.BodyRead = true
	if w, ok := ex.Body.(AnswerWatcher); ok && c.g == nil {
		if c.answerFn == nil {
			c.answerFn = c.answered
		}
		w.WatchAnswer(c.answerFn)
		defer w.WatchAnswer(nil)
	}
	if ex.ContentLength >= 0 {
		left := ex.ContentLength
		for left > 0 {
			n, err := ex.Body.Read(buf[:min(int64(bodyChunk), left)])
			if n > 0 {
				if err := c.checkAnswer(); err != nil {
					return err
				}
				if err := c.writePiece(buf[:n], "write body"); err != nil {
					return err
				}
				left -= int64(n)
			}
			if c.cutShort(err) {
				return ErrAnswered
			}
			if err == io.EOF {
				if left > 0 {
					return c.fail(PhaseWrite, fmt.Errorf("%w: %d bytes short", ErrBodyLength, left))
				}
				break
			}
			if err != nil {
				return c.fail(PhaseWrite, fmt.Errorf("%w: %w", ErrRequestBody, err))
			}
		}
		return nil
	}
	for {
		n, err := ex.Body.Read(buf[pre : pre+bodyChunk])
		if n > 0 {
			size := strconv.AppendUint(buf[:0:pre], uint64(n), 16)
			size = append(size, '\r', '\n')
			start := pre - len(size)
			copy(buf[start:], size)
			end := pre + n
			buf[end], buf[end+1] = '\r', '\n'
			if err := c.checkAnswer(); err != nil {
				return err
			}
			if err := c.writePiece(buf[start:end+2], "write body chunk"); err != nil {
				return err
			}
		}
		if c.cutShort(err) {
			return ErrAnswered
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.fail(PhaseWrite, fmt.Errorf("%w: %w", ErrRequestBody, err))
		}
	}
	if err := c.writePiece(lastChunk, "write last chunk"); err != nil {
		return err
	}
	return nil
}

// Bytes the framing and the keep-alive option add; never written to
// (Edits keep references, so a conversion at the call would allocate per
// request).
var (
	zeroValue      = []byte("0")
	keepAliveValue = []byte("keep-alive")
	connectionName = []byte("Connection")
	chunkedValue   = []byte("chunked")
	lastChunk      = []byte("0\r\n\r\n")
)
