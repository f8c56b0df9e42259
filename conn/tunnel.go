package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// MaxRefusalBody bounds the body of a refused CONNECT that Connect reads
// into ConnectResponse.Body.
const MaxRefusalBody = 64 << 10

// ErrTunnelRefused reports a CONNECT the parent answered with a non-2xx
// status; the ConnectResponse returned with it holds the answer.
var ErrTunnelRefused = errors.New("conn: CONNECT refused by the parent")

// ConnectResponse is a parent proxy's answer to CONNECT, copied out of the
// connection's buffer.
type ConnectResponse struct {
	// Status and Reason are from the status line.
	Status int
	Reason string
	// Header holds every field as received (names canonicalized by
	// http.Header).
	Header http.Header
	// Head is the response head as received, status line to the empty
	// line: what a proxy relays to its client verbatim.
	Head []byte
	// Body is a refusal's body (empty for a 2xx), at most MaxRefusalBody
	// bytes; BodyTruncated reports that it is not the whole body: the
	// parent sent more, or the body broke off before its framing's end.
	Body          []byte
	BodyTruncated bool
	// ClientChallenge is set by engine.Tunnel on a parent's 407 when the
	// client's Proxy-Authorization goes to that parent (a pass-through
	// login): the client can answer the challenge, so a proxy relays its
	// Proxy-Authenticate. This package never sets it.
	ClientChallenge bool
	// ClientProxy is set by engine.Tunnel on any answer of a parent to
	// which the client's Proxy-Authorization goes (a pass-through login):
	// only then is the answer's Proxy-Authentication-Info, which is for
	// the next outbound client alone (RFC 9110 §11.7.3), the client's to
	// have. This package never sets it.
	ClientProxy bool
}

// TunnelConn is an open tunnel: a connection whose bytes go to the tunnel's
// target, with the bytes the parent sent after its 2xx head (if any) read
// first, so none is lost. Close closes the connection and runs the
// owner's accounting once. Relay unwraps it so the kernel can splice.
type TunnelConn struct {
	net.Conn // the connection to the parent (or to the target, direct)

	mu      sync.Mutex // guards pre against concurrent Reads
	pre     []byte
	once    sync.Once
	onClose func()
}

// NewTunnelConn wraps nc, an open tunnel, with pre, bytes already read from
// it, to be read first. onClose (may be nil) runs once, after the first
// Close.
func NewTunnelConn(nc net.Conn, pre []byte, onClose func()) *TunnelConn {
	return &TunnelConn{Conn: nc, pre: pre, onClose: onClose}
}

// Read reads the bytes kept from the CONNECT exchange, then the
// connection.
func (t *TunnelConn) Read(p []byte) (int, error) {
	t.mu.Lock()
	if len(t.pre) > 0 {
		n := copy(p, t.pre)
		t.pre = t.pre[n:]
		t.mu.Unlock()
		return n, nil
	}
	t.mu.Unlock()
	return t.Conn.Read(p)
}

// Buffered returns how many bytes received after the CONNECT head are
// still unread.
func (t *TunnelConn) Buffered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pre)
}

// takeBuffered returns and forgets the unread bytes.
func (t *TunnelConn) takeBuffered() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pre
	t.pre = nil
	return p
}

// CloseWrite shuts down the writing side when the connection supports it
// (TCP does), for half-close relaying.
func (t *TunnelConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("conn: tunnel cannot half-close")
}

// Close closes the connection; the first call also runs the owner's
// accounting.
func (t *TunnelConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() {
		if t.onClose != nil {
			t.onClose()
		}
	})
	return err
}

// Connect asks the parent proxy at the other end of nc to open a tunnel to
// target ("host:port"): it sends "CONNECT target HTTP/1.1" with Host and the
// given extra header lines ("Name: value", e.g. a Proxy-Authorization),
// then reads the answer with the project's parser, all within timeout and
// ctx. addr names the parent in errors.
//
// On a 2xx it returns the answer and a TunnelConn over nc that keeps any
// byte read after the head. Otherwise it reads the refusal's body (framed
// as the head says, at most MaxRefusalBody bytes), closes nc and returns
// the answer with an *Error of PhaseTunnel wrapping ErrTunnelRefused, so a
// proxy can relay a 407 to its client. Any other failure closes nc and is
// an *Error of PhaseTunnel (or PhaseProtocol for a malformed answer or a
// 101, which no CONNECT asks for).
func Connect(ctx context.Context, nc net.Conn, addr, target string, header []string, timeout time.Duration) (*TunnelConn, *ConnectResponse, error) {
	tc, cr, kept, err := ConnectKeep(ctx, nc, addr, target, header, timeout)
	if kept {
		_ = nc.Close()
	}
	return tc, cr, err
}

// ConnectKeep is Connect, except that a refusal may leave nc open: when
// the parent keeps the connection (HTTP/1.1 without "Connection: close",
// or keep-alive), the refusal's body was read whole and no byte came
// after it, nc is left open, its deadlines cleared, and kept is true. The
// caller then owns nc: it may send another CONNECT on it (answering a
// 407) or keep it for a connection-based handshake (NTLM, Negotiate),
// and must close it. In every other case ConnectKeep behaves as Connect
// and kept is false.
func ConnectKeep(ctx context.Context, nc net.Conn, addr, target string, header []string, timeout time.Duration) (tc *TunnelConn, cr *ConnectResponse, kept bool, err error) {
	fail := func(p Phase, err error) (*TunnelConn, *ConnectResponse, bool, error) {
		_ = nc.Close()
		return nil, nil, false, &Error{Phase: p, Addr: addr, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(PhaseTunnel, err)
	}
	if !validTarget(target) {
		return fail(PhaseTunnel, fmt.Errorf("%w: %q", ErrBadTarget, target))
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = nc.SetDeadline(deadline)
	// The context's end interrupts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := make([]byte, 0, 128)
	req = append(req, "CONNECT "...)
	req = append(req, target...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, target...)
	req = append(req, "\r\n"...)
	for _, h := range header {
		req = append(req, h...)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	if _, err := nc.Write(req); err != nil {
		return fail(PhaseTunnel, fmt.Errorf("write CONNECT %s: %w", target, ctxErr(ctx, err)))
	}

	var resp parser.Response
	buf := make([]byte, 4096)
	n, hl := 0, 0
	for {
		if n > 0 {
			// The parser resumes incrementally only on the same message;
			// starting over on the bytes so far is as good for a head
			// this small.
			resp.Reset()
			resp.SetRequestMethod(parser.MethodConnect)
			var err error
			hl, err = resp.Parse(buf[:n])
			if err == nil && resp.Status() == 101 {
				// A CONNECT offers no protocol to switch to (RFC 9110
				// §7.8): neither a tunnel nor a refusal.
				return fail(PhaseProtocol, errors.New("CONNECT answered with 101 Switching Protocols"))
			}
			if err == nil && !resp.IsInterim() {
				break
			}
			if err == nil { // a 1xx before the answer: drop it
				n = copy(buf, buf[hl:n])
				continue
			}
			if err != parser.ErrNeedMore {
				return fail(PhaseProtocol, fmt.Errorf("CONNECT answer head: %w", err))
			}
		}
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := nc.Read(buf[n:])
		n += m
		if m == 0 {
			return fail(PhaseTunnel, fmt.Errorf("read CONNECT answer: %w", ctxErr(ctx, goReadErr(err, ErrHeaderTimeout))))
		}
	}
	cr = &ConnectResponse{
		Status: resp.Status(),
		Reason: string(resp.Reason()),
		Header: make(http.Header, resp.Len()),
		Head:   append([]byte(nil), buf[:hl]...),
	}
	for i := 0; i < resp.Len(); i++ {
		cr.Header.Add(string(resp.Name(i)), string(resp.Value(i)))
	}
	rest := buf[hl:n]
	if cr.Status/100 == 2 {
		_ = nc.SetDeadline(time.Time{})
		if !stop() {
			// The context ended as the answer came: the deadline may be
			// in the past; the tunnel is not handed out.
			return fail(PhaseTunnel, ctx.Err())
		}
		var pre []byte
		if len(rest) > 0 {
			pre = append([]byte(nil), rest...)
		}
		return NewTunnelConn(nc, pre, nil), cr, false, nil
	}
	clean, err := readRefusalBody(nc, &resp, rest, cr)
	if err != nil {
		cr.BodyTruncated = true
		_ = nc.Close()
		return nil, cr, false, &Error{Phase: PhaseTunnel, Addr: addr, Responded: true,
			Err: fmt.Errorf("%w: %d %s (reading its body: %w)", ErrTunnelRefused, cr.Status, cr.Reason, err)}
	}
	refused := &Error{Phase: PhaseTunnel, Addr: addr, Responded: true,
		Err: fmt.Errorf("%w: %d %s", ErrTunnelRefused, cr.Status, cr.Reason)}
	// The context's end may have moved the deadline into the past (stop
	// reports it): such a connection is not kept.
	if clean && resp.KeepAlive() && stop() {
		_ = nc.SetDeadline(time.Time{})
		return nil, cr, true, refused
	}
	_ = nc.Close()
	return nil, cr, false, refused
}

// ErrBadTarget reports a CONNECT target that is not a plain host:port: it
// would break (or inject into) the request line.
var ErrBadTarget = errors.New("conn: invalid CONNECT target")

// validTarget reports a non-empty host:port without whitespace or control
// bytes.
func validTarget(t string) bool {
	if t == "" || strings.IndexByte(t, ':') < 0 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// ctxErr prefers the context's error when it caused err.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// readRefusalBody reads the body of a refused CONNECT into cr.Body. clean
// reports that the body ended where its framing says, with no byte read
// past it: the connection is then ready for another request.
func readRefusalBody(nc net.Conn, resp *parser.Response, rest []byte, cr *ConnectResponse) (clean bool, err error) {
	add := func(p []byte) {
		if room := MaxRefusalBody - len(cr.Body); room < len(p) {
			p = p[:max(room, 0)]
			cr.BodyTruncated = true
		}
		cr.Body = append(cr.Body, p...)
	}
	fr := resp.Framing()
	left := resp.ContentLength()
	var dec parser.ChunkedDecoder
	buf := make([]byte, 16<<10)
	for {
		switch {
		case fr == parser.FramingNone || fr == parser.FramingTunnel,
			fr == parser.FramingLength && left == 0,
			fr == parser.FramingChunked && dec.Done():
			return fr != parser.FramingTunnel && len(rest) == 0, nil
		case cr.BodyTruncated:
			return false, nil // enough for the caller; the connection is closed anyway
		}
		if len(rest) == 0 {
			m, err := nc.Read(buf)
			if m == 0 {
				if fr == parser.FramingUntilClose && errors.Is(err, io.EOF) {
					return false, nil
				}
				return false, goReadErr(err, ErrReadTimeout)
			}
			rest = buf[:m]
		}
		switch fr {
		case parser.FramingLength:
			k := int(min(int64(len(rest)), left))
			add(rest[:k])
			left -= int64(k)
			rest = rest[k:]
			if left == 0 {
				return len(rest) == 0, nil
			}
		case parser.FramingChunked:
			data, k, err := dec.Next(rest)
			if err != nil {
				return false, fmt.Errorf("chunked body: %w", err)
			}
			add(data)
			rest = rest[k:]
		default:
			add(rest)
			rest = nil
		}
	}
}

// Hijack hands over a connection whose exchange ended in 101 Switching
// Protocols (RFC 9110 §15.2.2): from there on it carries the protocol the
// request asked for, not HTTP/1.1. It returns the connection as a
// TunnelConn on Go net (a netpoll connection leaves the poller first, as
// in a detach), whose first bytes are those the upstream sent after the
// 101's head; onClose (may be nil) runs once after its first Close. c is
// spent: Closed, and its Close no longer touches the returned connection.
// Hijack must be called by the connection's holder, after RoundTrip.
func (c *Conn) Hijack(onClose func()) (*TunnelConn, error) {
	if c.g == nil {
		if err := c.adoptGoNet(); err != nil {
			return nil, fmt.Errorf("hijack %s: %w", c.addr, err)
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.closed = true
	gc := c.gc
	c.gc = nil
	c.mu.Unlock()
	g := c.g
	var pre []byte
	if g.r < g.w {
		pre = append([]byte(nil), g.buf[g.r:g.w]...)
	}
	g.r, g.w = 0, 0
	_ = c.transition(Closing)
	_ = c.transition(Closed)
	return NewTunnelConn(gc, pre, onClose), nil
}
