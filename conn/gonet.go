package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// DefaultTLSHandshakeTimeout bounds a TLS handshake when the caller gives
// no timeout.
const DefaultTLSHandshakeTimeout = 10 * time.Second

// ErrTLSHandshakeTimeout reports a TLS handshake that did not finish in
// time.
var ErrTLSHandshakeTimeout = errors.New("conn: TLS handshake timeout")

// NewGo makes a Conn of an established Go net connection (a TLS
// connection, or a CONNECT tunnel): netpoll has no TLS, so such a
// connection runs its exchanges on blocking Go net I/O from the start, the
// way a detached one finishes its body, and shares the rest of the
// exchange code. The returned connection is Busy, held by the caller, and
// owns nc.
//
// A CONNECT tunnel through a parent spoken to over TLS ends with the
// parent's close_notify when the target closes (Squid sends one): a body
// delimited by the close that ends with a bare TCP close of the parent
// connection instead was cut short on the way, and fails with
// ErrTLSTruncated as one from a TLS origin does.
func NewGo(addr string, nc net.Conn) *Conn {
	c := &Conn{addr: addr, slot: slots.Add(1), born: time.Now()}
	c.gc = nc
	c.g = &goSource{gc: nc, buf: make([]byte, maxPiece)}
	c.trackGoAcks(nc)
	c.state.Store(uint32(Busy))
	if tc, ok := nc.(*TunnelConn); ok {
		if pc, ok := tc.Conn.(*tls.Conn); ok {
			c.tlsRaw, _ = pc.NetConn().(*tlsTransport)
		}
	}
	return c
}

// DialTLS connects to addr (a resolved ip:port) within timeout and runs
// the TLS handshake with cfg (which names the server: ServerName) within
// handshakeTimeout (zero: DefaultTLSHandshakeTimeout). It blocks: callers
// run it on a worker pool. A TCP failure is an *Error with PhaseDial; a
// handshake or certificate failure one with PhaseTLS wrapping crypto/tls's
// error, so errors.As finds *tls.CertificateVerificationError and the
// crypto/x509 error inside it (x509.UnknownAuthorityError,
// x509.HostnameError, x509.CertificateInvalidError).
func DialTLS(ctx context.Context, addr string, timeout, handshakeTimeout time.Duration, cfg *tls.Config) (*Conn, error) {
	raw, err := DialGo(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	return ClientTLS(ctx, addr, raw, handshakeTimeout, cfg)
}

// DialGo connects to addr with Go's net package within timeout (and ctx).
// A failure is an *Error with PhaseDial; one that ctx ended wraps ctx's
// error, one that timeout ended ErrConnectTimeout.
func DialGo(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var ne net.Error
		return nil, dialFailed(ctx, addr, err, errors.As(err, &ne) && ne.Timeout())
	}
	return raw, nil
}

// ClientTLS runs the client side of a TLS handshake over raw (a fresh TCP
// connection, or a CONNECT tunnel through a parent) and returns the
// connection as a Busy Conn for addr. raw is closed on failure. Errors are
// as DialTLS's.
func ClientTLS(ctx context.Context, addr string, raw net.Conn, handshakeTimeout time.Duration, cfg *tls.Config) (*Conn, error) {
	tc, err := HandshakeTLS(ctx, addr, raw, handshakeTimeout, cfg)
	if err != nil {
		return nil, err
	}
	c := NewGo(addr, tc)
	st := tc.ConnectionState()
	c.tlsState = &st
	c.tlsRaw, _ = tc.NetConn().(*tlsTransport)
	if c.tlsRaw != nil {
		c.ackBase = c.tlsRaw.ackBase
	}
	return c, nil
}

// tlsTransport is the connection under a TLS client. It notes when it
// read the TCP close: crypto/tls reports both a close_notify alert and a
// bare close at a record boundary as io.EOF, and only the first proves
// that a body delimited by the close is complete (RFC 9112 §9.8).
type tlsTransport struct {
	net.Conn
	eof bool // set and read by the goroutine running the exchange
	// The TCP side of acknowledgements (acked.go): the peer's count
	// before the handshake (ackUnknown unless Conn is plain TCP), and
	// the bytes written, records and handshake included (a close from
	// another goroutine writes its alert too).
	ackBase int64
	sent    atomic.Int64
}

func (t *tlsTransport) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	t.sent.Add(int64(n))
	return n, err
}

func (t *tlsTransport) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}

// truncated reports a TLS connection whose end was the TCP close, without
// a close_notify alert.
func (c *Conn) truncated() bool { return c.tlsRaw != nil && c.tlsRaw.eof }

// HandshakeTLS runs the client side of a TLS handshake over raw within
// handshakeTimeout (zero: DefaultTLSHandshakeTimeout) and ctx, and returns
// the TLS connection. raw is closed on failure, which is an *Error with
// PhaseTLS naming addr (see DialTLS).
func HandshakeTLS(ctx context.Context, addr string, raw net.Conn, handshakeTimeout time.Duration, cfg *tls.Config) (*tls.Conn, error) {
	if handshakeTimeout <= 0 {
		handshakeTimeout = DefaultTLSHandshakeTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	tt := &tlsTransport{Conn: raw, ackBase: ackUnknown}
	if n, ok := baseAcked(tcpAcked(raw)); ok {
		tt.ackBase = n
	}
	tc := tls.Client(tt, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		if ctx.Err() == nil && hctx.Err() != nil {
			// The handshake's own timeout, not the caller's context: the
			// peer failed to answer in time, so the error must not pass
			// for the context's end (context.DeadlineExceeded, which is
			// what crypto/tls returns), which is no fault of the peer's.
			err = fmt.Errorf("%w (%v)", ErrTLSHandshakeTimeout, handshakeTimeout)
		}
		return nil, &Error{Phase: PhaseTLS, Addr: addr, Err: fmt.Errorf("tls handshake with %s (server name %q): %w", addr, cfg.ServerName, err)}
	}
	return tc, nil
}

// TLSState returns the TLS connection state of a TLS connection, nil for a
// plaintext one.
func (c *Conn) TLSState() *tls.ConnectionState { return c.tlsState }

// Resumed reports a TLS connection whose handshake resumed an earlier
// session.
func (c *Conn) Resumed() bool { return c.tlsState != nil && c.tlsState.DidResume }

// OnGoNet reports a connection that runs on Go net from the start (TLS,
// tunnels) rather than on netpoll.
func (c *Conn) OnGoNet() bool { return c.g != nil }

// goAlive reports, without blocking, that the peer of an idle Go net
// connection has not closed it and nothing is waiting to be read: a
// non-blocking MSG_PEEK on the socket under the TLS layer. Any byte on an
// idle connection (for TLS, a close_notify alert, say) makes it unfit.
func (c *Conn) goAlive() bool { return c.goLook(true) }

// goLook is goAlive; grace lets a look within goProbeGrace of the last
// exchange skip the socket (below), and Probe, which must look, does not.
func (c *Conn) goLook(grace bool) bool {
	s := c.g
	if s.r != s.w {
		return false
	}
	nc, buffered := socketUnder(c.gc)
	if buffered {
		return false
	}
	// Within goProbeGrace of a completed exchange the pool's first look
	// (on return) makes no probe: a connection that answered a moment ago
	// is very likely still open. The next look (on checkout) probes while
	// the connection has carried one exchange only, so an origin that
	// closes right after each response without saying so has every
	// close caught before a request meets it. Once a connection has
	// carried more than one, its origin keeps connections open, and the
	// look on checkout within the grace makes no probe either: that is a
	// system call per request saved for a caller that keeps one
	// connection busy. A close that still comes in that moment (an idle
	// timeout, a reload) is met by a request that can go again on a fresh
	// connection (a GET: counted as a race, retried); one that cannot (a
	// POST, a body that cannot be had again) probes first whatever the
	// grace (Probe, from the shard's takeFor). netpoll connections are not
	// probed here at all (the poller sees the close, a moment late).
	if at := s.answeredAt.Load(); grace && at != 0 && nanotime()-at < int64(goProbeGrace) &&
		(c.requests > 1 || s.answeredAt.CompareAndSwap(at, 0)) {
		return true
	}
	if s.probe == nil {
		sc, ok := nc.(syscall.Conn)
		if !ok {
			return true // nothing to probe: the exchange finds out
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		// Made once: SyscallConn and a capturing closure allocate.
		s.raw = raw
		s.probe = func(fd uintptr) {
			n, _, err := syscall.Recvfrom(int(fd), s.peek1[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			s.alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		}
	}
	s.alive = false
	// Control, not Read: Read fails at once once the last exchange's read
	// deadline has passed, which says nothing of the connection.
	err := s.raw.Control(s.probe)
	return err == nil && s.alive
}

// socketUnder returns the connection under nc's TLS layers and tunnels
// (an https origin through a parent, itself maybe reached over TLS): the
// socket. buffered reports a tunnel layer on the way that holds bytes not
// read yet.
func socketUnder(nc net.Conn) (sock net.Conn, buffered bool) {
	for {
		switch t := nc.(type) {
		case *tls.Conn:
			nc = t.NetConn()
		case *tlsTransport:
			nc = t.Conn
		case *TunnelConn:
			buffered = buffered || t.Buffered() > 0
			nc = t.Conn
		default:
			return nc, buffered
		}
	}
}

// goProbeGrace is how long after a completed exchange goAlive takes an
// idle Go net connection as alive without a probe.
const goProbeGrace = 50 * time.Millisecond

// epoch makes nanotime's monotonic readings.
var epoch = time.Now()

// nanotime is monotonic nanoseconds since epoch (never 0 in practice).
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// goWrite sends p on a Go net connection under the write timeout.
func (c *Conn) goWrite(p []byte) error {
	_ = c.gc.SetWriteDeadline(time.Now().Add(c.wto))
	var wire int64
	if c.tlsRaw != nil {
		wire = c.tlsRaw.sent.Load()
	}
	if n, err := c.gc.Write(p); err != nil {
		c.wfail = true
		if n > 0 || c.tlsRaw != nil && c.tlsRaw.sent.Load() > wire {
			// Part of p reached the socket before the error (a write
			// timeout, a reset while the socket buffer was full): the
			// upstream may hold it (see write).
			c.last.Written = true
			c.sent += int64(n)
		}
		if errors.Is(err, net.ErrClosed) || c.isClosed() {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return err
	}
	c.last.Written = true
	c.sent += int64(len(p))
	return nil
}

// goReadHead is readHead on Go net: the head accumulates in the
// connection's buffer, and the parser resumes on the bytes so far after
// each read (moved to the buffer's start, or to a larger buffer, when
// there is no room left).
func (c *Conn) goReadHead(deadline time.Time) (int, error) {
	s := c.g
	for {
		if s.r < s.w {
			if err := notHTTP1(s.buf[s.r:s.w]); err != nil {
				return 0, c.fail(PhaseProtocol, err)
			}
			hl, perr := c.resp.Parse(s.buf[s.r:s.w])
			if perr == nil {
				return hl, nil
			}
			if perr != parser.ErrNeedMore {
				return 0, c.fail(PhaseProtocol, fmt.Errorf("response head: %w", perr))
			}
		}
		if time.Until(deadline) <= 0 {
			return 0, c.fail(PhaseAwaitHead, ErrHeaderTimeout)
		}
		if s.w == len(s.buf) {
			if s.r > 0 {
				s.w = copy(s.buf, s.buf[s.r:s.w])
				s.r = 0
			} else {
				nb := make([]byte, 2*len(s.buf))
				copy(nb, s.buf[:s.w])
				s.buf = nb
			}
		} else if s.r == s.w {
			s.r, s.w = 0, 0
		}
		_ = s.gc.SetReadDeadline(deadline)
		n, err := s.gc.Read(s.buf[s.w:])
		if n > 0 {
			s.w += n
			c.last.Responded = true
			continue
		}
		return 0, c.fail(PhaseAwaitHead, goReadErr(err, ErrHeaderTimeout))
	}
}

// goReadErr maps an error of a Go net read that returned no byte.
func goReadErr(err, timeout error) error {
	var ne net.Error
	switch {
	case err == nil:
		return io.ErrNoProgress
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %w", ErrUnexpectedEOF, err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %w", timeout, err)
	case errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}
