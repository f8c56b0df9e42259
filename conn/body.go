package conn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
)

// maxPiece bounds one piece handed to the sink.
const maxPiece = 64 << 10

// source yields response body bytes: peek returns at least one unread byte
// (blocking for it), valid until consume; buffered is how many bytes read
// from the socket are in hand unconsumed, the peeked ones included.
type source interface {
	peek() ([]byte, error)
	consume(n int) error
	buffered() int
}

// readBody streams the body framed as resp says into sink.
func (c *Conn) readBody(resp *parser.Response, sink Sink, cfg Config) error {
	fr := resp.Framing()
	switch fr {
	case parser.FramingNone:
		return nil
	case parser.FramingTunnel:
		// Upgrades and tunnels are not relayed here; the connection is
		// spent.
		c.noReuse = true
		return nil
	}
	left := resp.ContentLength()
	dec := &c.chunked
	dec.Reset()
	var src source
	if c.g != nil {
		c.g.timeout = cfg.ReadTimeout
		c.g.from = 2
		src = c.g
	} else {
		_ = c.nc.SetReadTimeout(cfg.ReadTimeout)
		c.np.c = c
		src = &c.np
	}
	onNetpoll := c.g == nil
	var gb *bytebufferpool.ByteBuffer // gathers tiny chunks (gather)
	defer func() {
		if gb != nil {
			bodyPool.Put(gb)
		}
	}()
	for {
		if fr == parser.FramingLength && left == 0 || fr == parser.FramingChunked && dec.Done() {
			return nil
		}
		// c.detached here means the watchdog stopped the poller during
		// the last sink call.
		if onNetpoll && (c.detached.Load() || c.overHighWater(fr, left, cfg.BodyHighWater)) {
			gs, err := c.detach(cfg.ReadTimeout)
			if err != nil {
				return c.fail(PhaseBody, fmt.Errorf("detach: %w", err))
			}
			src, onNetpoll = gs, false
			c.stopWatch()
		}
		b, err := src.peek()
		if len(b) > 0 {
			c.last.Responded = true
		}
		if err != nil {
			if fr == parser.FramingUntilClose && errors.Is(err, ErrUnexpectedEOF) {
				// The close ends the body, unless it was a reset: then the
				// body was cut short, and nothing says how much is missing.
				if onNetpoll && c.peerReset() {
					return c.fail(PhaseBody, fmt.Errorf("%w: body delimited by the close", ErrPeerReset))
				}
				if c.truncated() {
					return c.fail(PhaseBody, ErrTLSTruncated)
				}
				return nil
			}
			if e := AsError(err); e != nil {
				return e
			}
			return c.fail(PhaseBody, err)
		}
		var data []byte
		var n int
		switch fr {
		case parser.FramingLength:
			n = int(min(int64(len(b)), left))
			data = b[:n]
			left -= int64(n)
		case parser.FramingChunked:
			var derr error
			data, n, derr = dec.Next(b)
			if derr == nil && len(data) > 0 && len(data) < gatherBelow && n < len(b) {
				if gb == nil {
					gb = bodyPool.Get()
				}
				data, n, derr = gather(gb, dec, b, data, n)
			}
			if derr != nil {
				return c.fail(PhaseProtocol, fmt.Errorf("chunked body: %w", derr))
			}
		default:
			data, n = b, len(b)
		}
		if c.last.Ended.IsZero() && (fr == parser.FramingLength && int64(src.buffered()-n) >= left || fr == parser.FramingChunked && dec.Done()) {
			// The last byte is in hand, in this piece or buffered behind
			// it: the upstream's idle timer runs from about now, however
			// long the sink takes with the pieces left (Outcome.Ended).
			c.last.Ended = time.Now()
		}
		if len(data) > 0 {
			c.last.BodyBytes += int64(len(data))
			c.sinkCall(true)
			err := sink.OnBody(data)
			c.sinkCall(false)
			if err != nil {
				_ = src.consume(n)
				return c.fail(PhaseBody, fmt.Errorf("%w: %w", ErrSink, err))
			}
		}
		if err := src.consume(n); err != nil {
			return err
		}
	}
}

// gatherBelow: chunk data shorter than this is gathered with the chunks
// buffered behind it (gather).
const gatherBelow = 4 << 10

// gather copies data, the data of a short chunk that ended n bytes into
// b, into gb together with the data of the chunks that follow it in b,
// and returns the gathered data and the bytes of b consumed. A body of
// tiny chunks then reaches the sink in one piece per buffer read rather
// than one per chunk: each piece is a sink call, for the demo a write to
// its client. The data all comes from b, so a piece stays within maxPiece.
func gather(gb *bytebufferpool.ByteBuffer, dec *parser.ChunkedDecoder, b, data []byte, n int) ([]byte, int, error) {
	gb.B = append(gb.B[:0], data...)
	for n < len(b) && !dec.Done() {
		d, m, err := dec.Next(b[n:])
		if err != nil {
			return nil, 0, err
		}
		if m == 0 {
			break
		}
		gb.B = append(gb.B, d...)
		n += m
	}
	return gb.B, n, nil
}

// overHighWater reports that it is time to leave netpoll for blocking
// reads. A sink may block inside one OnBody as long as it likes while
// netpoll keeps reading, so the bound must hold before the call, not just
// between calls: a body of known length leaves while more than hw bytes
// are still to arrive beyond what is buffered (so netpoll never holds more
// than hw plus what it already had); a body of unknown length leaves once
// netpoll holds more than hw, or once more than hw was delivered (a large
// body: the rest goes through the kernel's window). A body already wholly
// buffered gains nothing from a detach.
func (c *Conn) overHighWater(fr parser.Framing, left int64, hw int) bool {
	buf := c.nc.Reader().Len()
	if fr == parser.FramingLength {
		return left-int64(buf) > int64(hw)
	}
	return buf > hw || c.last.BodyBytes > int64(hw)
}

// npSource reads from netpoll's buffer.
type npSource struct{ c *Conn }

func (s *npSource) peek() ([]byte, error) {
	r := s.c.nc.Reader()
	n := r.Len()
	if n == 0 {
		if _, err := r.Peek(1); err != nil {
			return nil, s.c.readErr(PhaseBody, err, ErrReadTimeout)
		}
		n = r.Len()
	}
	s.c.last.Responded = true
	b, err := r.Peek(min(n, maxPiece))
	if err != nil {
		return nil, s.c.readErr(PhaseBody, err, ErrReadTimeout)
	}
	return b, nil
}

func (s *npSource) buffered() int { return s.c.nc.Reader().Len() }

func (s *npSource) consume(n int) error {
	if !s.c.skip(n) {
		return s.c.fail(PhaseBody, ErrClosed)
	}
	return nil
}

// goSource reads after a detach: first the bytes sliced out of netpoll's
// buffer, then those recovered after the detach, then the socket through
// blocking Go net reads.
type goSource struct {
	sl      netpoll.Reader // sliced before the detach; nil once drained
	rest    []byte         // recovered after the detach
	gc      net.Conn
	timeout time.Duration
	buf     []byte
	r, w    int
	from    int // where the last peek came from: 0 sl, 1 rest, 2 buf

	// goAlive's state: answeredAt is when the last exchange completed
	// (nanotime; 0 never, or once the first look at a connection that
	// has carried one exchange took it); raw and probe are made on the
	// first probe and kept, and alive is probe's result.
	answeredAt atomic.Int64
	raw        syscall.RawConn
	probe      func(fd uintptr)
	alive      bool
	peek1      [1]byte
}

func (s *goSource) peek() ([]byte, error) {
	if s.sl != nil {
		if n := s.sl.Len(); n > 0 {
			s.from = 0
			return s.sl.Peek(min(n, maxPiece))
		}
		_ = s.sl.Release()
		s.sl = nil
	}
	if len(s.rest) > 0 {
		s.from = 1
		return s.rest[:min(len(s.rest), maxPiece)], nil
	}
	s.from = 2
	if s.r < s.w {
		return s.buf[s.r:s.w], nil
	}
	_ = s.gc.SetReadDeadline(time.Now().Add(s.timeout))
	n, err := s.gc.Read(s.buf)
	s.r, s.w = 0, n
	if n > 0 {
		return s.buf[:n], nil
	}
	return nil, goReadErr(err, ErrReadTimeout)
}

func (s *goSource) buffered() int {
	n := len(s.rest) + s.w - s.r
	if s.sl != nil {
		n += s.sl.Len()
	}
	return n
}

func (s *goSource) consume(n int) error {
	switch s.from {
	case 0:
		_ = s.sl.Skip(n)
	case 1:
		s.rest = s.rest[n:]
	default:
		s.r += n
	}
	return nil
}

// testHookBeforeDetach runs between the slice and the detach; tests use it
// to widen the window in which the poller reads more bytes.
var testHookBeforeDetach func()

// detach moves the connection from netpoll to blocking Go net I/O (see the
// package documentation for why no byte is lost). The connection is spent
// afterwards: it is closed after the response. The sink watchdog may have
// taken the fd off the poller already (c.detached), leaving the buffered
// bytes and the fd to adopt here.
func (c *Conn) detach(timeout time.Duration) (*goSource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writing {
		c.pl.written.Wait() // a pipelined write: the fd leaves the poller after it
	}
	if c.closed {
		return nil, ErrClosed
	}
	s := &goSource{timeout: timeout, buf: make([]byte, maxPiece)}
	r := c.nc.Reader()
	if !c.detached.Load() {
		if n := r.Len(); n > 0 {
			sl, err := r.Slice(n)
			if err != nil {
				return nil, fmt.Errorf("slice buffered body: %w", err)
			}
			s.sl = sl
		}
		if testHookBeforeDetach != nil {
			testHookBeforeDetach()
		}
		if err := c.stopPoller(); err != nil {
			return nil, err
		}
	}
	// The poller is done with the fd: what it read since the slice is
	// still in the input buffer. Take it out; never Release through the
	// connection again (its fd operator is freed).
	if n := r.Len(); n > 0 {
		if s.sl == nil {
			sl, err := r.Slice(n)
			if err != nil {
				return nil, fmt.Errorf("slice buffered body: %w", err)
			}
			s.sl = sl
		} else {
			b, err := r.Next(n)
			if err != nil {
				return nil, fmt.Errorf("recover buffered body: %w", err)
			}
			s.rest = append([]byte(nil), b...)
		}
		c.last.Recovered += int64(n)
	}
	fd := c.rawFD
	c.rawFD = -1
	f := os.NewFile(uintptr(fd), "upstream "+c.addr)
	gc, err := net.FileConn(f) // dups the fd
	_ = f.Close()              // closes the original fd either way
	if err != nil {
		return nil, fmt.Errorf("adopt fd: %w", err)
	}
	c.gc = gc
	s.gc = gc
	c.last.Detached = true
	return s, nil
}

// tcpClose is Linux's TCP_CLOSE socket state.
const tcpClose = 7

// peerReset reports a netpoll connection that its peer reset (RST) rather
// than closed (FIN). netpoll reports both as the same "peer close"; the
// socket's TCP state tells them apart while the fd is still ours (netpoll
// leaves a dialled connection's fd open until we close it): CLOSE after a
// reset, CLOSE_WAIT after a FIN, since our side has not closed yet. The
// first byte of struct tcp_info is that state. (Go net reports a reset as
// ECONNRESET by itself.)
func (c *Conn) peerReset() bool {
	d, ok := c.nc.(detacher)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.detached.Load() {
		return false // the fd may be another connection's by now
	}
	v, err := syscall.GetsockoptInt(d.Fd(), syscall.IPPROTO_TCP, syscall.TCP_INFO)
	return err == nil && v&0xff == tcpClose
}
