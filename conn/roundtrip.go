package conn

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/parser"
)

// exchange runs the steps of RoundTrip: head, body (after 100 Continue when
// asked), response head with interim responses, response body.
func (c *Conn) exchange(ex *Exchange, sink Sink) (err error) {
	defer func() { c.handBack(ex, err) }()
	cfg, m := c.begin(ex)
	if c.g == nil {
		_ = c.nc.SetWriteTimeout(cfg.WriteTimeout)
	}

	hasBody := ex.Body != nil && ex.ContentLength != 0 && m != parser.MethodConnect
	expect := hasBody && ex.Head.ExpectContinue()
	inline := hasBody && !expect && ex.ContentLength > 0 && ex.ContentLength <= inlineMax
	if err := c.writeHead(ex, inline); err != nil {
		return err
	}
	bodyDone := !hasBody || inline

	var hl int
	if expect {
		wait := ex.ExpectContinueTimeout
		if wait <= 0 {
			wait = DefaultExpectContinueTimeout
		}
		hl, err = c.awaitContinue(time.Now().Add(wait), sink)
		switch {
		case errors.Is(err, ErrHeaderTimeout): // no answer: send the body anyway
		case err != nil:
			return err
		case hl > 0: // a final status before the body: skip the body
			bodyDone = true
			c.last.BodySkipped = true
		}
	}
	if !bodyDone {
		if werr := c.writeBody(ex); werr == ErrAnswered {
			// The origin refused the body (an error response) before all
			// of it went out: the rest is not sent (RFC 9112 §9.5), and
			// the connection is not used again, its request being cut
			// short.
			if hl, err = c.readFinalHead(time.Now().Add(cfg.ResponseHeaderTimeout), sink); err != nil {
				return err
			}
			c.last.BodySkipped = true
		} else if werr != nil {
			// An origin may answer before reading the whole body and
			// close (a 413, say): its response is the answer, as RFC
			// 9112 §9.5 has clients watch for one while sending.
			if hl = c.earlyFinal(werr, time.Now().Add(cfg.ResponseHeaderTimeout), sink); hl == 0 {
				return werr
			}
			c.last.BodySkipped = true
		}
	}
	return c.receive(ex, sink, cfg, hl, c.requestClose(ex))
}

// begin resets the per-exchange state for ex and returns its settings and
// the method sent, which frames the response.
func (c *Conn) begin(ex *Exchange) (Config, parser.Method) {
	cfg := ex.Config.normalized()
	c.wto, c.hw = cfg.WriteTimeout, cfg.BodyHighWater // c.g may take over (adoptGoNet)
	c.wfail = false
	c.interims = 0
	c.resp.Reset()
	m := ex.Edits.MethodID(ex.Head)
	c.resp.SetRequestMethod(m)
	return cfg, m
}

// receive reads the response to ex (its head already parsed when hl > 0)
// and streams it into sink, then decides whether the connection may carry
// another request. asked reports that the request itself asked to close.
func (c *Conn) receive(ex *Exchange, sink Sink, cfg Config, hl int, asked bool) error {
	resp := &c.resp
	var err error
	if hl == 0 {
		if hl, err = c.readFinalHead(time.Now().Add(cfg.ResponseHeaderTimeout), sink); err != nil {
			return err
		}
	}
	c.dropKept() // answered: the request cannot go again
	if resp.Status() == 101 && !offersUpgrade(ex) {
		// Relaying it would tell the client a switch happened that it
		// never asked for, on a connection that then only closes.
		return c.fail(PhaseProtocol, ErrUnrequestedSwitch)
	}
	if resp.Status() == 101 && !resp.Version().AtLeast11() {
		return c.fail(PhaseProtocol, ErrSwitchHTTP10)
	}
	if resp.Status() == 101 && !switchOffered(ex.Head, resp) {
		return c.fail(PhaseProtocol, ErrUnofferedSwitch)
	}
	c.last.Status = resp.Status()
	switch t, _ := resp.KeepAliveHint(); {
	case t > 0:
		c.last.KeepAliveHint = time.Duration(t) * time.Second
	case t == 0:
		// The upstream may close at any moment (Apache with a
		// KeepAliveTimeout under a second says so): not "no hint".
		c.last.KeepAliveHint = KeepAliveNoIdle
	}
	if !c.wholeSmall(resp, hl) {
		c.startWatch(cfg.BodyHighWater)
		defer c.stopWatch()
		c.stopPollerForLength(resp, hl, cfg.BodyHighWater)
	}
	if c.inHand(resp, hl) {
		c.last.Ended = time.Now()
	}
	c.sinkCall(true)
	herr := sink.OnHead(resp)
	c.sinkCall(false)
	skipped := c.skip(hl) // the head is buffered: Skip does not block
	if herr != nil {
		return c.fail(PhaseAwaitHead, fmt.Errorf("%w: %w", ErrSink, herr))
	}
	if !skipped {
		return c.fail(PhaseAwaitHead, ErrClosed)
	}
	if err := c.readBody(resp, sink, cfg); err != nil {
		return err
	}
	// A close the request asked for is ours, whatever the response says
	// (an upstream answers "Connection: close" to it).
	c.last.CloseAsked = !resp.KeepAlive() && !asked
	c.noReuse = c.last.BodySkipped || !resp.KeepAlive() || asked || c.detached.Load()
	return nil
}

// inHand reports a final response (its head of length hl parsed) that is
// read whole already: one without a body, or one whose Content-Length body
// (empty included) is buffered too, by netpoll or by Go net reads. Other
// bodies are found whole in readBody, which an empty one never enters.
func (c *Conn) inHand(resp *parser.Response, hl int) bool {
	switch resp.Framing() {
	case parser.FramingNone:
		return true
	case parser.FramingLength:
		whole := int64(hl) + resp.ContentLength()
		if c.g != nil {
			return int64(c.g.buffered()) >= whole
		}
		return !c.detached.Load() && int64(c.nc.Reader().Len()) >= whole
	}
	return false
}

// wholeSmallMax bounds the responses that are delivered without the sink
// watchdog (see wholeSmall).
const wholeSmallMax = 16 << 10

// wholeSmall reports a response on netpoll that is buffered whole (head
// of length hl and body, no more than wholeSmallMax bytes in all): nothing
// of it is left to arrive while a sink call blocks, so the watchdog has
// nothing to bound, and its timer, lock and clock reads are saved (about
// 2% of the demo proxy's CPU on small responses). Bytes an origin sends
// beyond the response (a protocol error: the connection is not reused)
// are then not bounded during this delivery, whose sink calls write at
// most wholeSmallMax bytes to the client. On a pipelined connection the
// bytes behind are the next responses, as large as they come: the
// watchdog always watches there.
func (c *Conn) wholeSmall(resp *parser.Response, hl int) bool {
	if c.g != nil || c.detached.Load() {
		return false // Go net: the watchdog is off anyway
	}
	if c.pipelined() {
		return false
	}
	var size int64
	switch resp.Framing() {
	case parser.FramingNone:
	case parser.FramingLength:
		size = resp.ContentLength()
	default:
		return false
	}
	size += int64(hl)
	return size <= wholeSmallMax && int64(c.nc.Reader().Len()) >= size
}

// requestClose reports that the forwarded head said "Connection: close":
// the client's field, kept, or one the caller's edits set or add. The
// edits written (c.edits) are the caller's with framing and keep-alive
// added.
func (c *Conn) requestClose(ex *Exchange) bool {
	return c.ownEdits.ConnectionClose(&ex.Head.Header)
}

// switchOffered reports that a 101's Upgrade names at least one protocol,
// and only protocols the request's Upgrade offered (compared without
// regard to case, version included: "websocket", "h2c", "foo/2").
func switchOffered(req *parser.Request, resp *parser.Response) bool {
	named := false
	ok := true
	resp.Each(parser.HdrUpgrade, func(v []byte) bool {
		eachToken(v, func(p []byte) {
			named = true
			if ok && !offered(req, p) {
				ok = false
			}
		})
		return ok
	})
	return named && ok
}

// offered reports that the request's Upgrade lists protocol p.
func offered(req *parser.Request, p []byte) bool {
	found := false
	req.Each(parser.HdrUpgrade, func(v []byte) bool {
		eachToken(v, func(q []byte) {
			found = found || bytes.EqualFold(p, q)
		})
		return !found
	})
	return found
}

// eachToken calls fn with each non-empty element of a comma-separated
// list, optional whitespace trimmed.
func eachToken(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		var e []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			e, v = v, nil
		}
		if e = bytes.Trim(e, " \t"); len(e) > 0 {
			fn(e)
		}
	}
}

// offersUpgrade reports that the forwarded head carries an Upgrade field,
// the only request a 101 may answer.
func offersUpgrade(ex *Exchange) bool {
	if !ex.Head.Has(parser.HdrUpgrade) {
		return false
	}
	e := ex.Edits
	return e == nil || !e.StripHopByHop || e.Keep.Has(parser.HdrUpgrade)
}

// awaitContinue waits until deadline for the answer to "Expect:
// 100-continue". It returns 0 after a 100 (send the body), or the head
// length of a final response that came first (its head is parsed in
// c.resp). Other interim responses go to the sink (see interim).
func (c *Conn) awaitContinue(deadline time.Time, sink Sink) (int, error) {
	for {
		hl, err := c.readHead(deadline)
		if err != nil {
			return 0, err
		}
		if !c.resp.IsInterim() {
			return hl, nil
		}
		cont := c.resp.Status() == 100
		if err := c.interim(hl, sink); err != nil {
			return 0, err
		}
		if cont {
			return 0, nil
		}
	}
}

// earlyFinal returns the head length of a final response that arrived
// before the body write failed with werr, or 0 when there is none. A
// socket write that failed because the origin closed or reset the
// connection qualifies, and one that timed out, but only for an answer
// already there (timedOutLook): an origin that answered (a 413) and then
// neither read nor closed is answered by its response, not by the
// timeout. After a failure of the body's source (whatever its error) or
// our own close, no answer is to be waited for.
func (c *Conn) earlyFinal(werr error, deadline time.Time, sink Sink) int {
	var ne net.Error
	gone := errors.Is(werr, ErrClosed) || errors.Is(werr, syscall.EPIPE) || errors.Is(werr, syscall.ECONNRESET)
	timedOut := !gone && errors.As(werr, &ne) && ne.Timeout()
	if !c.wfail || !gone && !timedOut || c.isClosed() {
		return 0
	}
	if timedOut {
		deadline = time.Now().Add(timedOutLook)
	}
	hl, err := c.readFinalHead(deadline, sink)
	if err != nil {
		return 0
	}
	return hl
}

// timedOutLook bounds the look for an answer after a body write timed
// out: time to parse what the socket already holds, not to wait for more.
const timedOutLook = 10 * time.Millisecond

// readFinalHead reads heads until a final one, handing interim responses
// to the sink (see interim).
func (c *Conn) readFinalHead(deadline time.Time, sink Sink) (int, error) {
	for {
		hl, err := c.readHead(deadline)
		if err != nil {
			return 0, err
		}
		if !c.resp.IsInterim() {
			return hl, nil
		}
		if err := c.interim(hl, sink); err != nil {
			return 0, err
		}
	}
}

// maxInterim bounds the interim responses before one final response: a
// real server sends a few (100, 102, 103); an endless stream of them is an
// origin gone wrong, not one to follow until the header timeout.
const maxInterim = 64

// interim hands the interim response just parsed (head length hl) to a
// sink that takes them (InterimSink), then skips it.
func (c *Conn) interim(hl int, sink Sink) error {
	if c.interims++; c.interims > maxInterim {
		return c.fail(PhaseProtocol, fmt.Errorf("%w: more than %d", ErrTooManyInterim, maxInterim))
	}
	if is, ok := sink.(InterimSink); ok {
		// The call may block (a client that does not read the relayed
		// 1xx) while the origin sends the final response: the watchdog
		// bounds what netpoll buffers meanwhile, as during OnHead.
		c.startWatch(c.hw)
		c.sinkCall(true)
		err := is.OnInterim(&c.resp)
		c.sinkCall(false)
		c.stopWatch()
		if err != nil {
			return c.fail(PhaseAwaitHead, fmt.Errorf("%w: %w", ErrSink, err))
		}
		if c.g == nil && c.detached.Load() {
			if err := c.adoptGoNet(); err != nil {
				return c.fail(PhaseAwaitHead, fmt.Errorf("detach: %w", err))
			}
		}
	}
	return c.skipInterim(hl)
}

// adoptGoNet moves the rest of the exchange to Go net I/O after the
// watchdog took the fd off the poller during an interim sink call: the
// bytes buffered so far (this interim head first) go to the Go net
// reader's buffer, where head and body reads look, and c.g serves the
// heads, the body and the request body's writes that follow. The
// connection is spent afterwards, as after any detach.
func (c *Conn) adoptGoNet() error {
	gs, err := c.detach(0)
	if err != nil {
		return err
	}
	var b []byte
	if gs.sl != nil {
		if n := gs.sl.Len(); n > 0 {
			p, err := gs.sl.Next(n)
			if err != nil {
				return fmt.Errorf("recover buffered bytes: %w", err)
			}
			b = append(b, p...)
		}
		_ = gs.sl.Release()
		gs.sl = nil
	}
	b = append(b, gs.rest...)
	gs.rest = nil
	if len(b) > len(gs.buf) {
		gs.buf = make([]byte, len(b))
	}
	gs.r, gs.w = 0, copy(gs.buf, b)
	c.mu.Lock()
	c.g = gs
	c.mu.Unlock()
	return nil
}

func (c *Conn) skipInterim(hl int) error {
	if !c.skip(hl) {
		return c.fail(PhaseAwaitHead, ErrClosed)
	}
	c.resp.ResetInterim()
	return nil
}

// readHead parses one response head into c.resp and returns its length.
// The head stays in netpoll's buffer (the views point into it) until the
// caller skips it. It blocks in Peek for more bytes, at most until
// deadline. A head that takes several reads is parsed incrementally: each
// Peek returns the bytes so far, possibly a fresh copy when they span
// buffer nodes, and the parser resumes on it (re-applying its obs-fold
// rewrites to the new buffer).
func (c *Conn) readHead(deadline time.Time) (int, error) {
	if c.g != nil {
		return c.goReadHead(deadline)
	}
	r := c.nc.Reader()
	n := r.Len()
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, c.fail(PhaseAwaitHead, ErrHeaderTimeout)
		}
		_ = c.nc.SetReadTimeout(left)
		buf, err := r.Peek(max(n, 1))
		if err != nil {
			return 0, c.readErr(PhaseAwaitHead, err, ErrHeaderTimeout)
		}
		c.last.Responded = true
		if err := notHTTP1(buf); err != nil {
			return 0, c.fail(PhaseProtocol, err)
		}
		hl, perr := c.resp.Parse(buf)
		if perr == nil {
			return hl, nil
		}
		if perr != parser.ErrNeedMore {
			return 0, c.fail(PhaseProtocol, fmt.Errorf("response head: %w", perr))
		}
		n = max(r.Len(), len(buf)+1)
	}
}

// http2Settings is the start of an HTTP/2 SETTINGS frame on stream 0
// (RFC 9113 §6.5), after its 3-byte length: type 0x4, no flags or ACK.
const http2Settings = 0x4

// notHTTP1 returns an ErrNotHTTP1 error when the first bytes of a
// response head, b, cannot begin an HTTP/1.x status line, which starts
// with "HTTP/" (RFC 9112 §4); nil when they can, or when they are too few
// yet to tell an HTTP/2 frame. An HTTP/2 SETTINGS frame is named as such:
// an origin that speaks only HTTP/2 answers so.
func notHTTP1(b []byte) error {
	const prefix = "HTTP/"
	n := min(len(b), len(prefix))
	if string(b[:n]) == prefix[:n] {
		return nil
	}
	if settingsFrame(b) {
		if len(b) < http2FrameHeader {
			return nil // wait for the rest of the frame header
		}
		return fmt.Errorf("%w: it sent an HTTP/2 SETTINGS frame; the upstream speaks HTTP/2 only", ErrNotHTTP1)
	}
	return fmt.Errorf("%w: it begins %q", ErrNotHTTP1, b[:min(len(b), 16)])
}

// http2FrameHeader is the length of an HTTP/2 frame header: length (3
// bytes), type, flags, stream identifier (4 bytes) (RFC 9113 §4.1).
const http2FrameHeader = 9

// settingsFrame reports bytes that begin, or may yet begin, the header of
// an HTTP/2 SETTINGS frame on stream 0, with no flag but ACK.
func settingsFrame(b []byte) bool {
	for i, c := range b[:min(len(b), http2FrameHeader)] {
		switch {
		case i < 3: // length: any
		case i == 3 && c != http2Settings,
			i == 4 && c&^1 != 0,
			i == 5 && c&0x7f != 0,
			i > 5 && c != 0:
			return false
		}
	}
	return true
}

// readErr maps a netpoll read error.
func (c *Conn) readErr(p Phase, err, timeout error) *Error {
	switch {
	case errors.Is(err, netpoll.ErrReadTimeout):
		return c.fail(p, fmt.Errorf("%w: %w", timeout, err))
	case c.isClosed():
		return c.fail(p, fmt.Errorf("%w: %w", ErrClosed, err))
	case errors.Is(err, netpoll.ErrEOF) || errors.Is(err, netpoll.ErrConnClosed):
		return c.fail(p, fmt.Errorf("%w: %w", ErrUnexpectedEOF, err))
	}
	return c.fail(p, err)
}
