package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

const (
	// headPeek is how much of the buffered input the head parser looks
	// at first; a head longer than that is looked at again with more.
	headPeek = 4096
	// maxHeadBuf bounds what the head parser is given; the parser's own
	// limit (parser.DefaultMaxHeadBytes) normally rejects a head before.
	maxHeadBuf = parser.DefaultMaxHeadBytes + 4096
	// bodyPeek bounds one look at a chunked request body.
	bodyPeek = 64 << 10
)

// Client connection states. Idle is between requests: the sweeper (idle
// timeout) and Shutdown may close it, and a request may start, whichever
// moves it out of idle first wins. Lingering is a connection whose last
// response went out, and its sending side with it, while the client may
// still be sending the request's body: what arrives is dropped until the
// client closes or lingerTime passes (the sweeper, Shutdown). Parking is
// an idle connection leaving netpoll for the parking lot (park.go),
// parked one waiting there. Joining is a connection netpoll is taking,
// just accepted or given back by the lot for the bytes its client sent,
// until netpoll has registered its fd (onConnect): nothing may close or
// park it meanwhile, since netpoll would then register an fd its close
// had already closed, whose number another connection may have by then.
// Moved is a connection the lot keeps as a record (park.go): its
// clientConn is done with, and a new one is made when it comes back.
const (
	stIdle int32 = iota
	stBusy
	stClosing
	stClosed
	stLinger
	stParking
	stParked
	stJoining
	stMoved
)

// lingerTime bounds how long a lingering connection absorbs what its
// client still sends before it is closed.
const lingerTime = 2 * time.Second

// errClientBody marks a failure to read the request body from the client.
var errClientBody = errors.New("client request body")

var crlf = []byte("\r\n")

// Field values the relay adds to every request or response. Edits keep
// references to the bytes they are given, so a []byte("...") conversion
// at the call would allocate per request; these are never written to.
var (
	chunkedValue   = []byte("chunked")
	closeValue     = []byte("close")
	keepAliveValue = []byte("keep-alive")
	upgradeValue   = []byte("upgrade")
	dateName       = []byte("Date")
	rootPath       = []byte("/")
	asteriskPath   = []byte("*")
)

// inReader is the part of netpoll's Reader the client side reads with:
// netpoll's own on a netpoll connection, a connReader on a detached one.
type inReader interface {
	Len() int
	Peek(n int) ([]byte, error)
	Skip(n int) error
	Release() error
}

// outWriter is the part of netpoll's Writer the client side writes with.
// Every write is followed by a Flush before the bytes written may change.
type outWriter interface {
	WriteBinary(b []byte) (int, error)
	Flush() error
}

// outcome is what serveOne leaves the connection to do.
type outcome int

const (
	served   outcome = iota // keep the connection for the next request
	closeIt                 // close the connection
	lingerIt                // close once the client stops sending (lingerClose)
	detachIt                // serve it off netpoll from this request on
	tunnelIt                // take it off netpoll and relay it to cc.tunnel
)

// clientConn is one client connection. Apart from state and idleSince,
// its fields are used by the goroutine running the connection's OnRequest
// and, while that goroutine waits in engine.Exchange, by the engine's
// exchange worker it handed the request to: never by two at once.
type clientConn struct {
	p  *proxy
	c  net.Conn // the netpoll connection, or the Go net one after a detach
	r  inReader
	w  outWriter
	sh *clientShard
	// pinKey is the connection's own, never 0: once authSeen, every
	// request carries it, so an NTLM or Negotiate handshake pins an
	// upstream connection to this client connection (auth.go).
	pinKey   uint64
	authSeen atomic.Bool
	// pinLost: the engine ended this connection's pinned session; the
	// connection closes after the request being served.
	pinLost atomic.Bool

	state     atomic.Int32
	idleSince atomic.Int64 // unix nanoseconds; when the last request ended
	closer    atomic.Value // closerOf: what closeIfIdle and Shutdown close
	// shutCut: the shutdown's deadline closed the connection with a
	// request in flight (shutdownClose); its access line says so.
	shutCut atomic.Bool

	detaching bool        // Detach was called: the close callback hands over
	detached  atomic.Bool // served by serveDetached on Go net I/O
	// halfClosed: the client shut down its sending side; the response
	// goes out on halfConn, a Go net duplicate of the fd (out).
	halfClosed bool
	halfConn   net.Conn

	// tunnel is a CONNECT tunnel opened for this connection, or the
	// upstream connection of a request that switched protocols (101), to
	// relay once the connection is off netpoll (tunnel.go). tunnelHead is
	// the 101's head for the client, sent then; nil for a CONNECT.
	tunnel       net.Conn
	tunnelTarget string
	tunnelStart  time.Time
	tunnelHead   []byte
	tunnelMethod string

	// rs is the request being served, nil between requests (serveOne).
	rs *reqState

	// abort ends the exchange of the request being served when the
	// client resets its connection (clientGone): every request's
	// (engine.Request.Abort), set up with the connection, at no cost per
	// request.
	abort engine.Abort

	// hupMu orders onDisconnect's look at the socket of hupConn, the
	// netpoll connection, with that connection's close callback, which
	// sets hupConn to nil first: netpoll runs OnDisconnect on a goroutine
	// of its own, which may come after the callback, once the fd is
	// closed (netpoll's, or a detach's, which goes on with a duplicate)
	// and its number maybe another socket's.
	hupMu   sync.Mutex
	hupConn netpoll.Connection

	// watchFd is the socket of a detached connection in the parking
	// lot's set (parkLot.watch), -1 when it is not.
	watchFd int

	// fd and remote are the socket and the client's address while the
	// connection is parked (park.go); c, r and w are nil then.
	fd     int
	remote netip.AddrPort
}

// reqState is what serving one request takes: the parsed head, the
// edits, the engine request, the response sink and the body reader, and
// the buffers they grow. A connection holds one only while it serves a
// request; between requests it is back in the proxy's pool, so an idle
// keep-alive connection costs none of it (about 2 KiB).
type reqState struct {
	req  parser.Request
	head []byte // a copy of the head of a request with a body
	// replay is a copy of a small body that arrived whole with its head,
	// which the engine sends again after answering a challenge.
	replay []byte
	edits  parser.Edits
	ereq   engine.Request
	s      sink
	body   bodyReader
	// addrs are the forward target's other addresses, tried in turn
	// when a connect fails (nextAddr).
	addrs []string
}

func newClientConn(p *proxy, c netpoll.Connection, sh *clientShard) *clientConn {
	cc := &clientConn{p: p, c: c, r: c.Reader(), w: c.Writer(), sh: sh, watchFd: -1}
	cc.state.Store(stJoining)
	cc.idleSince.Store(time.Now().UnixNano())
	cc.closer.Store(closerOf{c})
	return cc
}

// serveOne reads and serves one request, with a reqState from the pool.
// It runs with at least one byte buffered: in OnRequest, or on a detached
// connection's goroutine.
func (cc *clientConn) serveOne() outcome {
	rs, _ := cc.p.states.Get().(*reqState)
	if rs == nil {
		rs = new(reqState)
	}
	rs.s.cc, rs.body.cc = cc, cc
	cc.rs = rs
	o := cc.serve()
	cc.rs = nil
	// Nothing may point into the connection, its buffers or the
	// origin's once the state is pooled.
	rs.req.Reset()
	rs.ereq = engine.Request{}
	rs.addrs = nil
	rs.s.cc, rs.s.body, rs.body.cc, rs.body.held, rs.body.err = nil, nil, nil, nil, nil
	// A pooled state stays small: buffers grown past the usual (a held
	// body, a TRACE echo) are dropped rather than kept idle.
	if cap(rs.replay) > replayKeep {
		rs.replay = nil
	}
	if cap(rs.s.bb.B) > bbKeep {
		rs.s.bb.B = nil
	}
	cc.p.states.Put(rs)
	return o
}

// closeIdleQuiet is the sweeper's close of a connection idle past the
// idle timeout: as closeIfIdle, but not while bytes its client sent wait
// for a request to take them (inputWaiting). Those are the client's next
// request, come in just before the close: served, as nginx serves one
// that came in before its keepalive_timeout fired, rather than dropped
// with the connection (its client would get a reset or an end of file
// for a request it sent on an open connection). A lingering connection
// drops what comes, and closes whatever waits.
func (cc *clientConn) closeIdleQuiet() {
	if st := cc.state.Load(); (st == stIdle || st == stParked) && cc.inputWaiting() {
		return
	}
	cc.closeIfIdle()
}

// inputWaiting reports bytes from the client that no request has taken
// yet: in netpoll's buffer (its poller read them, and onRequest is about
// to run) or still in the socket (netpoll's poller, or the parking lot,
// has yet to see them; a parked connection's socket is the lot's to look
// at, its closer having no fd). The fd may be another connection's by now, if
// this one closed meanwhile: a wrong answer only keeps the sweeper from
// closing, until its next tick, a connection that is closed anyway.
func (cc *clientConn) inputWaiting() bool {
	c := cc.closer.Load().(closerOf).c
	if pc, ok := c.(parkedCloser); ok {
		return cc.p.lot.hasInput(pc.cc)
	}
	if nc, ok := c.(netpoll.Connection); ok && nc.Reader().Len() > 0 {
		return true
	}
	fc, ok := c.(interface{ Fd() int })
	if !ok {
		return false
	}
	n, err := unix.IoctlGetInt(fc.Fd(), unix.SIOCINQ)
	return err == nil && n > 0
}

// closeIfIdle closes the connection when no request is running on it
// (idle, lingering, or parked).
func (cc *clientConn) closeIfIdle() {
	if cc.state.CompareAndSwap(stIdle, stClosing) || cc.state.CompareAndSwap(stLinger, stClosing) ||
		cc.state.Load() == stParked {
		cc.close()
	}
}

// close closes the connection from any goroutine.
func (cc *clientConn) close() {
	_ = cc.closer.Load().(closerOf).c.Close()
}

// shutdownClose closes the connection at the shutdown's deadline, marking
// what it cuts short as cut by the shutdown.
func (cc *clientConn) shutdownClose() {
	cc.shutCut.Store(true)
	cc.close()
}

// unregister removes the connection from its shard.
func (cc *clientConn) unregister() {
	if cc.state.Swap(stClosed) != stClosed {
		cc.p.metrics.connClosed()
	}
	cc.sh.mu.Lock()
	delete(cc.sh.conns, cc)
	cc.sh.mu.Unlock()
	if cc.authSeen.Load() {
		cc.p.pins.remove(cc)
	}
}

// serve reads and serves one request (see serveOne).
func (cc *clientConn) serve() outcome {
	buf, hl, ok := cc.readHead()
	if !ok {
		return closeIt
	}
	if !cc.detached.Load() && cc.needsDetach(hl, cc.r.Len()) {
		return detachIt // the head is parsed again once detached
	}
	req := &cc.rs.req
	if req.MethodID() == parser.MethodConnect {
		return cc.serveConnect(hl, time.Now())
	}
	var method, target string
	var start time.Time // read only for the access log: clock reads cost
	if cc.p.cfg.AccessLog {
		start = time.Now()
		method, target = string(req.Method()), string(req.Target())
	}
	if req.Framing() == parser.FramingChunked && !onlyChunked(&req.Header) {
		// The engine frames the forwarded body with chunked alone: other
		// codings (gzip, ...) would reach the origin undeclared, and the
		// proxy does not decode them either (RFC 9112 §6.1: 501).
		cc.writeError(501, "transfer codings other than chunked are not supported")
		cc.logRejected(method, target, start)
		return closeIt
	}
	hasBody := req.Framing() == parser.FramingChunked ||
		req.Framing() == parser.FramingLength && req.ContentLength() > 0
	skip := hl
	if hasBody {
		// The body is read from the same buffer, and reading it moves on
		// from the bytes the head's views point into: give the head a copy
		// of its own. Heads of requests without body (most) stay where
		// netpoll put them.
		cc.rs.head = append(cc.rs.head[:0], buf[:hl]...)
		req.Reset()
		if _, err := req.Parse(cc.rs.head); err != nil {
			cc.writeError(400, "malformed request")
			cc.logRejected(method, target, start)
			return closeIt
		}
		_ = cc.r.Skip(hl)
		_ = cc.r.Release()
		skip = 0
	}
	s := &cc.rs.s
	s.reset(req.Version().AtLeast11(), cc.keepAsked(req))
	keep := cc.exchange(s, hasBody)
	if cc.tunnel != nil {
		// Switched protocols: logged when the relay ends, as a CONNECT.
		// (The head's views are valid until the skip.)
		cc.tunnelTarget, cc.tunnelMethod, cc.tunnelStart = string(req.Target()), string(req.Method()), start
	}
	if skip > 0 {
		_ = cc.r.Skip(skip)
		_ = cc.r.Release()
	}
	cc.p.metrics.served(s.status, s.bytes)
	if cc.tunnel != nil {
		return tunnelIt
	}
	cc.logAccess(s, method, target, start)
	if b := s.body; !keep && b != nil && !b.complete() && b.err == nil {
		// The response went out before the whole request body came in
		// (an early 413, a 401): the client may be sending still, and a
		// close now would have its kernel answered with a reset, which
		// can destroy the response before the client has read it (RFC
		// 9112 §9.6).
		return lingerIt
	}
	if !keep || cc.pinLost.Load() {
		return closeIt
	}
	return served
}

// readHead parses one request head out of netpoll's input buffer, in
// place. It returns the buffer the head's views point into and the head
// length, or false when the connection is to be closed. It waits for
// more bytes while the head is incomplete, up to the header timeout.
func (cc *clientConn) readHead() ([]byte, int, bool) {
	r := cc.r
	cc.rs.req.Reset()
	// The header deadline is set when a wait is due (most heads arrive
	// whole: no clock read for them); later waits (request bodies) use
	// the per-wait read timeout instead.
	deadline := false
	defer func() {
		if deadline {
			_ = cc.c.SetReadDeadline(time.Time{})
		}
	}()
	want := min(max(r.Len(), 1), headPeek)
	var waited time.Time // the first wait's start, for the access log
	// rejected answers a head that cannot be served; its method and
	// target are not known (and the raw line may hold credentials).
	rejected := func(status int, msg string) {
		cc.writeError(status, msg)
		if waited.IsZero() && cc.p.cfg.AccessLog {
			waited = time.Now()
		}
		cc.logRejected("-", "-", waited)
	}
	for {
		if !deadline && want > r.Len() {
			now := time.Now()
			_ = cc.c.SetReadDeadline(now.Add(cc.p.cfg.HeaderTimeout))
			deadline, waited = true, now
		}
		buf, err := r.Peek(want)
		if err != nil {
			if isTimeout(err) {
				rejected(408, "request head not complete within "+cc.p.cfg.HeaderTimeout.String())
			}
			return nil, 0, false
		}
		hl, err := cc.rs.req.Parse(buf)
		if err == nil {
			return buf, hl, true
		}
		if err != parser.ErrNeedMore {
			status, msg := 400, "malformed request"
			if rule := parser.Rule(err); rule != nil {
				msg = rule.Msg
				if rule.Status != 0 {
					status = rule.Status
				}
			}
			cc.p.log.Debug("bad request", "remote", cc.c.RemoteAddr().String(), "err", err)
			rejected(status, msg)
			return nil, 0, false
		}
		if len(buf) >= maxHeadBuf {
			rejected(431, "request head too large")
			return nil, 0, false
		}
		// Look at everything buffered, or wait for one more byte; never
		// at more than maxHeadBuf, so that a head over the parser's limit
		// gets the parser's answer (414 for a request line, else 431).
		if n := r.Len(); n > len(buf) {
			want = min(n, max(2*len(buf), headPeek), maxHeadBuf)
		} else {
			want = len(buf) + 1
		}
	}
}

// exchange forwards the parsed request and relays the response; false
// closes the connection.
func (cc *clientConn) exchange(s *sink, hasBody bool) bool {
	req := &cc.rs.req
	ed := &cc.rs.edits
	ed.Reset()
	ed.StripHopByHop = true
	var done, keep bool
	if m := req.MethodID(); m == parser.MethodTrace || m == parser.MethodOptions {
		// Answered here (Max-Forwards 0) also when it came round a loop:
		// it goes no further, and a TRACE is how a loop is traced (RFC
		// 9110 §7.6.2).
		done, keep = cc.maxForwards(s, ed, hasBody)
		if !done && req.Form() == parser.FormAsterisk && cc.p.forward() {
			// "OPTIONS *" asks about the server that receives it (RFC
			// 9112 §3.2.4): to a forward proxy, nothing names another.
			done, keep = cc.answerHere(s, hasBody)
		}
	}
	if !done && viaHas(&req.Header, cc.p.viaName) {
		// The request came round back to this proxy (via.go): sent on,
		// it would come back again, its head longer each time. The
		// connection stays open unless a body came (not read).
		done, keep = true, s.keepAlive && !hasBody
		if !cc.writeText(s, 508, cc.p.loopMsg, keep) {
			keep = false
		}
	}
	if done {
		if hasBody {
			// Answered without reading the body: the close lingers
			// (serve), as after an origin's early answer.
			body := &cc.rs.body
			body.reset(req.Framing() == parser.FramingChunked, req.ContentLength())
			s.body = body
		}
		return keep
	}
	up, ok := cc.route(s, ed)
	if !ok {
		return false
	}
	ed.Add("Via", cc.p.viaFor(req.Version()))
	// A protocol switch (a WebSocket handshake, say) goes on: its Upgrade
	// and a Connection naming it are forwarded, and after a 101 the
	// connection becomes a tunnel to the upstream's. Not with a body: its
	// framing and the switch would have to be interleaved.
	s.upgrade = !hasBody && req.Upgrade()
	if s.upgrade {
		ed.Keep = ed.Keep.With(parser.HdrUpgrade)
		ed.Add("Connection", upgradeValue)
	}

	er := &cc.rs.ereq
	*er = engine.Request{Upstream: up, Head: req, Edits: ed, PinKey: cc.requestPinKey(), Abort: &cc.abort}
	var body *bodyReader
	if hasBody {
		body = &cc.rs.body
		body.reset(req.Framing() == parser.FramingChunked, req.ContentLength())
		er.Body, er.ContentLength = body, req.ContentLength()
		if body.chunked {
			er.ContentLength = -1
		}
		// Expect is forwarded: the engine waits for the origin's 100 (or
		// its timeout) before reading the body, and the first read sends
		// the client its own "100 Continue".
		body.cont = req.ExpectContinue()
	}
	s.body = body
	s.head = req.MethodID() == parser.MethodHead
	if body != nil {
		// Two ways a body fails before anything went upstream: the body
		// to be kept never came whole (the client gets the error a
		// stalled or cut body gets while it streams), or a chunked
		// body's framing is broken in what came with the head (nginx,
		// which reads a body before forwarding it, and Squid, which
		// decodes what it has before it connects, send nothing either;
		// an error in bytes that come later cuts the request already
		// streaming).
		err := cc.keepReplay(er, body)
		if err == nil && body.chunked {
			if ferr := cc.bufferedChunkedErr(); ferr != nil {
				body.err = fmt.Errorf("%w: %w", errClientBody, ferr)
				err = body.err
			}
		}
		if err != nil {
			*er = engine.Request{}
			status, msg := cc.bodyStatus(err)
			s.keepAlive = false
			cc.writeErrorSink(s, status, msg)
			return false
		}
	}
	var err error
	if s.upgrade {
		var nc net.Conn
		nc, err = cc.p.eng.Upgrade(context.Background(), er, s)
		for nc == nil && cc.nextAddr(er, err) {
			nc, err = cc.p.eng.Upgrade(context.Background(), er, s)
		}
		if nc != nil {
			// serve returns tunnelIt: the 101 goes out after the hand-over.
			cc.p.tunnelsLive.Add(1)
			cc.tunnel, cc.tunnelHead = nc, append([]byte(nil), s.bb.B...)
			s.pending = false
		}
		// A 101 not handed over comes with an error: its head is dropped.
	} else {
		err = cc.p.eng.Exchange(context.Background(), er, s)
		for cc.nextAddr(er, err) {
			err = cc.p.eng.Exchange(context.Background(), er, s)
		}
	}
	finishErr := false // a write to the client failed in finish
	if err == nil && cc.tunnel == nil {
		err = s.finish()
		finishErr = err != nil
	}
	if body != nil {
		body.settle()
	}
	*er = engine.Request{}
	bodyDone := body == nil || body.complete()
	if err != nil && errors.Is(err, engine.ErrAborted) {
		// The client reset its connection (clientGone): nobody reads
		// an answer, and none is written.
		s.pending = false
		s.cut, s.cutErr = cutClient, fmt.Errorf("client reset the connection: %w", err)
		if !s.headSent {
			s.status, s.bytes = 0, 0
		}
		return false
	}
	if err != nil {
		if s.headSent {
			cc.p.log.Debug("exchange failed after the head was sent", "addr", up.Addr, "group", up.Group, "err", err)
			s.cut, s.cutErr = cc.cutBy(err, finishErr), err
			if !s.chunked && s.left < 0 {
				// The client's body ends at the close, which would pass
				// this cut one off as complete (RFC 9112 §8): reset.
				cc.resetOnClose()
			}
			return false
		}
		s.pending = false // a head built but not sent is dropped for the error
		status, msg := upstreamStatus(err)
		if cc.p.closing.Load() && errors.Is(err, context.Canceled) {
			// Cut off by the shutdown's deadline, not by the upstream.
			status, msg = 503, "proxy shutting down"
		}
		if body != nil && body.err != nil {
			status, msg = cc.bodyStatus(body.err)
		}
		s.keepAlive = false
		cc.writeErrorSink(s, status, msg)
		return false
	}
	return s.keepAlive && bodyDone
}

// maxReplay bounds the request bodies kept for a resend; a copy buffer
// over replayKeep is not kept in a pooled reqState.
const (
	maxReplay  = 64 << 10
	replayKeep = 4 << 10
	// bbKeep bounds the sink buffer a pooled reqState keeps: a head plus
	// a held last body piece (tailMax) fit.
	bbKeep = tailMax + 4<<10
)

// keepReplay gives er a GetBody when the engine may send the request
// again and the request's body has a known length of at most maxReplay
// bytes: the body is read whole first (waiting for it if need be, under
// the per-wait read timeout), so that the engine can send it again after a
// 401 or 407 (the proxy has credentials for upstreams) instead of handing
// the challenge, which the client cannot answer, to the client; and on a
// new connection after a kept-alive one the upstream closed as the
// request reached it (the stale keep-alive race), instead of failing it
// with a 502 as a request whose body is gone: an idempotent method (PUT,
// DELETE, ...) or one with an Idempotency-Key field always, any other
// (POST) when the upstream never received it (engine Config.StrictResend).
// Larger or streamed bodies are not
// held, nor one whose client waits for "100 Continue" before sending it:
// their challenge is answered only with "Expect: 100-continue", before
// the body goes. The error is the body's (body.err) when it did not come
// whole: the client stalled past the idle timeout, or closed.
func (cc *clientConn) keepReplay(er *engine.Request, body *bodyReader) error {
	n := er.ContentLength
	if !cc.p.replay && !resentAnyway(&cc.rs.req) || n <= 0 || n > maxReplay || cc.rs.req.ExpectContinue() {
		return nil
	}
	// Each wait for more of it is under the idle timeout, as the body's
	// own reads are: a client that trickles it in keeps its request.
	for have := cc.r.Len(); have < int(n); have = cc.r.Len() {
		if err := body.wait(have); err != nil {
			return err
		}
	}
	b, err := cc.r.Peek(int(n))
	if err != nil {
		return nil // not kept: the body streams as any other
	}
	rs := cc.rs
	rs.replay = append(rs.replay[:0], b...)
	er.GetBody = func() (io.Reader, error) { return bytes.NewReader(rs.replay), nil }
	return nil
}

// bufferedChunkedErr decodes the part of a chunked request body that is
// already buffered (up to bodyPeek bytes), without consuming it, and
// returns the framing error found there, if any. Most small uploads come
// whole with their head, and a malformed one is then refused before an
// upstream connection is dialed for it.
func (cc *clientConn) bufferedChunkedErr() error {
	if cc.r.Len() == 0 {
		return nil
	}
	in, err := cc.r.Peek(min(cc.r.Len(), bodyPeek))
	if err != nil {
		return nil // the body's own reads see it
	}
	var dec parser.ChunkedDecoder
	for len(in) > 0 && !dec.Done() {
		_, n, err := dec.Next(in)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		in = in[n:]
	}
	return nil
}

var (
	idempotencyKey  = []byte("Idempotency-Key")
	xIdempotencyKey = []byte("X-Idempotency-Key")
)

// resentAnyway reports a request the engine sends again after the stale
// keep-alive race even under Config.StrictResend: an idempotent method,
// or a head with an Idempotency-Key (or X-Idempotency-Key) field. (The
// engine counts a key only if the forwarded head carries it; keeping the
// body of one it drops costs only memory.)
func resentAnyway(req *parser.Request) bool {
	return req.MethodID().Idempotent() || req.Peek(idempotencyKey) != nil || req.Peek(xIdempotencyKey) != nil
}

// route picks the upstream: the peer group (origins, or parents), or in
// direct forward mode the target's own address, and turns the target into
// what that upstream expects. False means an error was written.
func (cc *clientConn) route(s *sink, ed *parser.Edits) (engine.Upstream, bool) {
	if cc.p.group != "" {
		return cc.routePeers(s, ed)
	}
	req := &cc.rs.req
	if req.Form() != parser.FormAbsolute {
		cc.writeErrorSink(s, 400, "a forward proxy needs an absolute-form target (http://host/path)")
		return engine.Upstream{}, false
	}
	scheme := strings.ToLower(string(req.Scheme())) // case-insensitive (RFC 9110 §4.2.3)
	if scheme != "http" && scheme != "https" {
		cc.writeErrorSink(s, 400, "only http:// and https:// targets are supported")
		return engine.Upstream{}, false
	}
	hp := hostPortScheme(string(req.Authority()), scheme)
	if !validPort(hp) {
		cc.writeErrorSink(s, 400, "invalid port in the target")
		return engine.Upstream{}, false
	}
	cc.setOriginForm(ed)
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := resolveAll(ctx, cc.p.cfg.Lookup, hp)
	if err != nil {
		cc.writeErrorSink(s, 502, "cannot resolve "+hp+": "+err.Error())
		return engine.Upstream{}, false
	}
	up := engine.Upstream{Addr: addrs[0]}
	cc.rs.addrs = addrs[1:]
	if scheme == "https" {
		// The server name is the target's host (the engine takes it from
		// the absolute-form authority).
		up.TLS = cc.p.cfg.ForwardTLS
	}
	return up, true
}

// onlyChunked reports whether every Transfer-Encoding line of h names
// chunked and nothing else.
func onlyChunked(h *parser.Header) bool {
	ok := true
	h.Each(parser.HdrTransferEncoding, func(v []byte) bool {
		for len(v) > 0 {
			c := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				c, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			if c = bytes.TrimSpace(c); len(c) > 0 && !bytes.EqualFold(c, chunkedValue) {
				ok = false
				return false
			}
		}
		return true
	})
	return ok
}

// transferCodings joins the Transfer-Encoding lines of h into one list.
func transferCodings(dst []byte, h *parser.Header) []byte {
	dst = dst[:0]
	h.Each(parser.HdrTransferEncoding, func(v []byte) bool {
		if v = bytes.TrimSpace(v); len(v) > 0 {
			if len(dst) > 0 {
				dst = append(dst, ", "...)
			}
			dst = append(dst, v...)
		}
		return true
	})
	return dst
}

// bodyStatus picks the status for a request body that did not come
// whole: clientBodyStatus's, unless the shutdown's deadline closed the
// connection under the wait for it (netpoll closes its connections then),
// which is not the client's doing: it gets the 503 of a request still
// waiting for its upstream.
func (cc *clientConn) bodyStatus(err error) (int, string) {
	if cc.p.closing.Load() && errors.Is(err, netpoll.ErrConnClosed) {
		return 503, "proxy shutting down"
	}
	return clientBodyStatus(err)
}

// clientBodyStatus picks the status for a request body the client failed
// to send.
func clientBodyStatus(err error) (int, string) {
	switch {
	case isTimeout(err):
		return 408, "request body stalled: " + err.Error()
	case parser.Rule(err) != nil:
		return 400, "malformed request body: " + parser.Rule(err).Msg
	}
	return 400, "request body incomplete: " + err.Error()
}

// resetOnClose makes the connection's close a reset (SO_LINGER 0).
func (cc *clientConn) resetOnClose() {
	switch c := cc.c.(type) {
	case *net.TCPConn: // detached
		_ = c.SetLinger(0)
	case interface{ Fd() int }:
		_ = syscall.SetsockoptLinger(c.Fd(), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
	}
}

// isTimeout reports a read timeout, from netpoll or from Go net.
func isTimeout(err error) bool {
	return errors.Is(err, netpoll.ErrReadTimeout) || errors.Is(err, os.ErrDeadlineExceeded)
}

// setOriginForm turns an absolute-form request into origin-form with the
// Host field from the target's authority (RFC 9112 §3.2.2).
func (cc *clientConn) setOriginForm(ed *parser.Edits) {
	path := cc.rs.req.Path()
	switch {
	case len(path) == 0 && cc.rs.req.MethodID() == parser.MethodOptions:
		path = asteriskPath // §3.2.4: "OPTIONS http://h" asks about the server
	case len(path) == 0:
		path = rootPath
	case path[0] != '/':
		// A query without path ("http://h?q"): the origin-form path
		// must not be empty (§3.2.1), so "?q" becomes "/?q".
		path = append(append(make([]byte, 0, len(path)+1), '/'), path...)
	}
	ed.Target = path
	ed.Set("Host", cc.rs.req.Authority())
}

// logRejected logs the access line of a request that writeError answered
// (its status and bytes are in the connection's sink).
func (cc *clientConn) logRejected(method, target string, start time.Time) {
	cc.logAccess(&cc.rs.s, method, target, start)
}

// logAccess logs the access line of the request whose response s carried:
// its status (0 when no response went out) and the body bytes handed to
// the client, and for a response cut short (or one that could not be
// sent) who cut it, "upstream", "client" or "shutdown", and the error.
func (cc *clientConn) logAccess(s *sink, method, target string, start time.Time) {
	if !cc.p.cfg.AccessLog {
		return
	}
	if s.cut == "" {
		cc.p.log.Info("access", "remote", cc.c.RemoteAddr().String(), "method", method, "target", target,
			"status", s.status, "bytes", s.bytes, "duration", time.Since(start))
		return
	}
	cc.p.log.Info("access", "remote", cc.c.RemoteAddr().String(), "method", method, "target", target,
		"status", s.status, "bytes", s.bytes, "duration", time.Since(start), "cut", s.cut, "err", s.cutErr)
}

// cutBy names who cut short a response (or kept an error response from
// the client) that failed with err: the shutdown, when its deadline closed
// the connection or aborted the exchange; the client, when a write to it
// failed (clientWrite, or the engine reporting its sink's error), its
// request body broke off or it reset the connection (clientGone); else
// the upstream.
func (cc *clientConn) cutBy(err error, clientWrite bool) string {
	switch {
	case cc.shutCut.Load() || cc.p.closing.Load() && (errors.Is(err, context.Canceled) || errors.Is(err, engine.ErrClosed)):
		return cutShutdown
	case clientWrite || errors.Is(err, conn.ErrSink) || errors.Is(err, conn.ErrRequestBody) || errors.Is(err, conn.ErrAborted):
		return cutClient
	}
	return cutUpstream
}

// The values of the access log's cut attribute.
const (
	cutUpstream = "upstream"
	cutClient   = "client"
	cutShutdown = "shutdown"
)

func (cc *clientConn) writeError(status int, msg string) {
	s := &cc.rs.s
	s.reset(true, false)
	cc.writeErrorSink(s, status, msg)
	cc.p.metrics.served(s.status, s.bytes) // a request rejected before its exchange
}

// writeErrorSink writes a short text/plain error response that closes the
// connection. A response to HEAD has the head alone (RFC 9110 §9.3.2).
func (cc *clientConn) writeErrorSink(s *sink, status int, msg string) {
	cc.writeText(s, status, msg, false)
}

// writeText writes a short text/plain response of the proxy's own, msg
// and a newline, with "Connection: close" unless keep. It reports
// whether the response reached the client.
func (cc *clientConn) writeText(s *sink, status int, msg string, keep bool) bool {
	body := msg + "\n"
	conn := "Connection: close\r\n"
	switch {
	case !keep:
	case s.http11:
		conn = ""
	default:
		conn = "Connection: keep-alive\r\n"
	}
	// The proxy is the origin of this response: it carries a Date (RFC
	// 9110 §6.6.1).
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + reason(status) + "\r\n" +
		"Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		cc.p.viaLine + conn + "\r\n"
	if cc.rs.req.MethodID() == parser.MethodHead {
		body = ""
	}
	s.bb.Reset()
	s.bb.B = append(append(s.bb.B, head...), body...)
	if err := cc.send(s.bb.B); err != nil {
		// Nothing reached the client (gone, or closed by the shutdown):
		// no status is counted or logged as sent.
		s.status, s.bytes = 0, 0
		s.cut, s.cutErr = cc.cutBy(err, true), fmt.Errorf("%d (%s) not sent: %w", status, msg, err)
		return false
	}
	s.status, s.bytes = status, int64(len(body))
	return true
}

// send writes p to the client and flushes. Writes happen only while this
// connection's OnRequest runs, when netpoll cannot free the connection's
// buffers (it defers a close's callbacks until the handler returns), so
// netpoll v0.7.2's writer panics after close cannot happen; the recover
// is a second line.
func (cc *clientConn) send(p []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write to client panicked: %v", r)
		}
	}()
	return cc.writeAll(p)
}

// writeAll writes the pieces to the client and flushes. Between out's look
// at the connection and the flush, netpoll may take the client's
// half-close for a close and refuse the flush; nothing has left then (its
// Flush checks the state before it submits anything: all of the pieces
// are still unsubmitted), so they go out again on the Go net duplicate
// that out now returns.
func (cc *clientConn) writeAll(pieces ...[]byte) error {
	w := cc.out()
	n, err := writePieces(w, pieces)
	if err == nil {
		return nil
	}
	nc, ok := w.(netpoll.Writer)
	if !ok || cc.halfClosed || cc.detached.Load() || nc.MallocLen() != n {
		return err
	}
	if c, ok := cc.c.(netpoll.Connection); !ok || c.IsActive() {
		return err
	}
	if w2 := cc.out(); w2 != w {
		_, err = writePieces(w2, pieces)
	}
	return err
}

// writePieces writes the pieces to w and flushes; n is the bytes written
// before the flush.
func writePieces(w outWriter, pieces [][]byte) (n int, err error) {
	for _, p := range pieces {
		if len(p) == 0 {
			continue
		}
		if _, err := w.WriteBinary(p); err != nil {
			return n, err
		}
		n += len(p)
	}
	return n, w.Flush()
}

// out is the writer to the client. A client that shut down its sending
// side after the request still reads, but netpoll takes the half-close
// for a close and refuses writes; its poller has already let go of the fd,
// which stays open until this handler returns. So the response goes out
// on a duplicate of the fd through Go net instead, and the connection
// closes after it.
func (cc *clientConn) out() outWriter {
	if cc.detached.Load() || cc.halfClosed {
		return cc.w
	}
	nc, ok := cc.c.(netpoll.Connection)
	if !ok || nc.IsActive() {
		return cc.w
	}
	fc, ok := nc.(interface{ Fd() int })
	if !ok {
		return cc.w
	}
	fd, err := syscall.Dup(fc.Fd())
	if err != nil {
		return cc.w
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "client")
	gc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return cc.w
	}
	_ = gc.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	cc.halfClosed, cc.halfConn = true, gc
	cc.w = &connWriter{c: gc}
	return cc.w
}

// bodyReader streams a request body out of netpoll's input buffer:
// exactly remaining bytes, or a chunked body decoded with
// parser.ChunkedDecoder. Waits for bytes use the connection's read
// timeout (the idle timeout) per wait.
type bodyReader struct {
	cc        *clientConn
	remaining int64
	chunked   bool
	dec       parser.ChunkedDecoder
	held      []byte // decoded data not yet returned: a view into the last Peek
	skip      int    // bytes of the last Peek consumed, not yet skipped
	cont      bool   // "100 Continue" still to send
	err       error
	// answered, while the engine sends the body, reports an early final
	// response from the upstream (conn.AnswerWatcher): waits for client
	// bytes look at it between slices, so that the answer reaches a
	// client that paused its upload.
	answered func() bool
}

// WatchAnswer is conn.AnswerWatcher's.
func (b *bodyReader) WatchAnswer(answered func() bool) { b.answered = answered }

// A wait for request body bytes while the engine watches for an early
// answer goes in slices, from answerSliceMin doubling up to
// answerSliceMax: an answer that comes at once (most do, to the head) is
// seen at once, and a client that pauses long costs a look every
// answerSliceMax.
const (
	answerSliceMin = 5 * time.Millisecond
	answerSliceMax = 500 * time.Millisecond
)

// errAnsweredWait ends a wait for client bytes cut short by the
// upstream's early answer; it is not the body's error (b.err): the body
// stays unfinished, and the connection lingers after the answer.
var errAnsweredWait = fmt.Errorf("%w: %w", errClientBody, conn.ErrAnswered)

// sliceDeadline sets the read deadline of the next slice of a watched
// wait that began at start (see answerSliceMin), and returns the slice
// after it, or 0 when this one ends at the idle timeout: the last.
func (b *bodyReader) sliceDeadline(start time.Time, slice time.Duration) time.Duration {
	end := start.Add(b.cc.p.cfg.IdleTimeout)
	next := time.Now().Add(slice)
	if !next.Before(end) {
		_ = b.cc.c.SetReadDeadline(end)
		return 0
	}
	_ = b.cc.c.SetReadDeadline(next)
	return min(2*slice, answerSliceMax)
}

// endWatch clears the deadline of a watched wait: on netpoll, the
// connection's read timeout applies again; off it, each wait sets its own.
func (b *bodyReader) endWatch() { _ = b.cc.c.SetReadDeadline(time.Time{}) }

// peek is a wait for n bytes buffered: Peek under the idle timeout, in
// slices with a look at the upstream between them when it is watched.
func (b *bodyReader) peek(n int) error {
	if b.answered == nil {
		b.deadline()
		_, err := b.cc.r.Peek(n)
		return err
	}
	defer b.endWatch()
	start := time.Now()
	for slice := answerSliceMin; ; {
		slice = b.sliceDeadline(start, slice)
		_, err := b.cc.r.Peek(n)
		if err == nil || slice == 0 || !isTimeout(err) {
			return err
		}
		if b.answered() {
			return errAnsweredWait
		}
	}
}

// readInto reads body bytes straight into p off netpoll, under the idle
// timeout, in slices with a look at the upstream between them when it is
// watched.
func (b *bodyReader) readInto(cr *connReader, p []byte) (int, error) {
	if b.answered == nil {
		b.deadline()
		return cr.readInto(p)
	}
	defer b.endWatch()
	start := time.Now()
	for slice := answerSliceMin; ; {
		slice = b.sliceDeadline(start, slice)
		n, err := cr.readInto(p)
		if n > 0 || err == nil || slice == 0 || !isTimeout(err) {
			return n, err
		}
		if b.answered() {
			return 0, errAnsweredWait
		}
	}
}

func (b *bodyReader) reset(chunked bool, length int64) {
	b.chunked, b.remaining = chunked, length
	b.dec.Reset()
	b.held, b.skip, b.cont, b.err = nil, 0, false, nil
}

func (b *bodyReader) complete() bool {
	if b.chunked {
		return b.dec.Done() && len(b.held) == 0 && b.skip == 0
	}
	return b.remaining == 0
}

// settle skips what the decoder consumed, once nothing refers to it.
func (b *bodyReader) settle() {
	if len(b.held) == 0 && b.skip > 0 {
		_ = b.cc.r.Skip(b.skip)
		_ = b.cc.r.Release()
		b.skip = 0
	}
}

// wait blocks until more than have bytes are buffered. On netpoll the
// connection's read timeout bounds each wait; on Go net a deadline does.
func (b *bodyReader) wait(have int) error {
	if err := b.peek(have + 1); err != nil {
		if err == errAnsweredWait {
			return err
		}
		if errors.Is(err, netpoll.ErrEOF) || errors.Is(err, netpoll.ErrConnClosed) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w", io.ErrUnexpectedEOF, err)
		}
		b.err = fmt.Errorf("%w: %w", errClientBody, err)
		return b.err
	}
	return nil
}

func (b *bodyReader) deadline() {
	if b.cc.detached.Load() {
		_ = b.cc.c.SetReadDeadline(time.Now().Add(b.cc.p.cfg.IdleTimeout))
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.cont {
		b.cont = false
		if err := b.cc.send([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
			b.err = fmt.Errorf("%w: send 100 Continue: %w", errClientBody, err)
			return 0, b.err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	r := b.cc.r
	if !b.chunked {
		if b.remaining == 0 {
			return 0, io.EOF
		}
		if cr, ok := r.(*connReader); ok && r.Len() == 0 {
			n, err := b.readInto(cr, p[:min(int64(len(p)), b.remaining)])
			b.remaining -= int64(n)
			if n > 0 {
				return n, nil
			}
			if err == errAnsweredWait {
				return 0, err
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			b.err = fmt.Errorf("%w: %w", errClientBody, err)
			return 0, b.err
		}
		if r.Len() == 0 {
			if err := b.wait(0); err != nil {
				return 0, err
			}
		}
		n := int(min(int64(len(p)), int64(r.Len()), b.remaining))
		src, err := r.Peek(n)
		if err != nil {
			b.err = fmt.Errorf("%w: %w", errClientBody, err)
			return 0, b.err
		}
		copy(p, src)
		_ = r.Skip(n)
		_ = r.Release()
		b.remaining -= int64(n)
		return n, nil
	}
	// Each pass returns data, consumes bytes or waits for more: bounded
	// by the body size. The data of every chunk already buffered goes
	// into p, not just one chunk's: the engine forwards each Read as a
	// chunk, and a body of tiny chunks would cost a write per chunk. It
	// waits only with nothing in p; an error found with data in p comes
	// with the next Read.
	got := 0
	for {
		if len(b.held) > 0 {
			n := copy(p[got:], b.held)
			b.held = b.held[n:]
			if got += n; got == len(p) {
				return got, nil
			}
		}
		b.settle()
		if b.dec.Done() {
			if got > 0 {
				return got, nil
			}
			return 0, io.EOF
		}
		if r.Len() == 0 {
			if got > 0 {
				return got, nil
			}
			if err := b.wait(0); err != nil {
				return 0, err
			}
		}
		in, err := r.Peek(min(r.Len(), bodyPeek))
		if err == nil {
			var data []byte
			var n int
			if data, n, err = b.dec.Next(in); err == nil {
				b.held, b.skip = data, n
			}
		}
		if err != nil {
			b.err = fmt.Errorf("%w: %w", errClientBody, err)
			if got > 0 {
				return got, nil
			}
			return 0, b.err
		}
		if len(b.held) == 0 && b.skip == 0 && !b.dec.Done() {
			if got > 0 {
				return got, nil
			}
			if err := b.wait(len(in)); err != nil {
				return 0, err
			}
		}
	}
}

// sink writes the response to the client through netpoll's writer: the
// head with hop-by-hop fields stripped and Via added, the body re-framed
// for the client. Each body piece (at most 64 KiB from the engine) is
// flushed before OnBody returns, and a flush returns only once the kernel
// took every byte (or the write timeout hit), so a slow client holds the
// exchange instead of growing our memory. Body pieces go out zero-copy:
// netpoll's writer refers to pieces over 4 KiB, which is safe because
// nothing is left in the writer after the flush.
type sink struct {
	cc        *clientConn
	http11    bool            // the client speaks HTTP/1.1
	keepAlive bool            // the connection stays open after this response
	head      bool            // a HEAD request: no body follows the head
	upgrade   bool            // the request asks to switch protocols (engine.Upgrade)
	switching bool            // bb holds a 101's head, for the client after the hand-over
	chunked   bool            // the body is chunk-encoded to the client
	pending   bool            // bb holds a head not yet handed to the writer
	headSent  bool            // response bytes went to the writer
	onPinned  bool            // the exchange runs on the client's pinned connection (OnPinnedConn)
	auth      engine.AuthNote // whose credentials the request carried (OnAuth)
	body      *bodyReader
	status    int
	bytes     int64
	left      int64 // body bytes still to come of a known length; -1 otherwise
	edits     parser.Edits
	bb        bytebufferpool.ByteBuffer
	scratch   []byte
	te        []byte // the Transfer-Encoding value relayed, when not just chunked
	// cut names who cut the response short after its head went out, or
	// kept an error response from the client (cutBy); cutErr is why.
	cut    string
	cutErr error
}

// keepAsked reports that the client connection may stay open after the
// response to req, as far as req and the proxy's state go. A forward
// proxy keeps no persistent connection with an HTTP/1.0 client (RFC 9112
// §9.3), whatever keep-alive it asks for: the field may have come through
// an HTTP/1.0 proxy that passed it on without keeping its own connection.
// A reverse proxy is the origin to its clients, and honours it, as
// origins do.
func (cc *clientConn) keepAsked(req *parser.Request) bool {
	return req.KeepAlive() && (req.Version().AtLeast11() || !cc.p.forward()) && !cc.p.closing.Load()
}

func (s *sink) reset(http11, keepAlive bool) {
	s.http11, s.keepAlive = http11, keepAlive
	s.head, s.chunked, s.pending, s.headSent = false, false, false, false
	s.upgrade, s.switching, s.onPinned = false, false, false
	s.auth = engine.AuthNote{}
	s.body, s.status, s.bytes, s.left = nil, 0, 0, -1
	s.cut, s.cutErr = "", nil
}

// OnPinnedConn is engine.SessionSink's: the response comes on the
// connection pinned to this client connection.
func (s *sink) OnPinnedConn() { s.onPinned = true }

// OnAuth is engine.AuthSink's: whose credentials the request carried,
// which says which authentication fields of the response the client gets
// (authFields).
func (s *sink) OnAuth(n engine.AuthNote) { s.auth = n }

var (
	_ engine.SessionSink = (*sink)(nil)
	_ engine.AuthSink    = (*sink)(nil)
)

func (s *sink) OnHead(resp *parser.Response) error {
	if resp.IsInterim() {
		return nil
	}
	s.status = resp.Status()
	if s.body != nil && !s.body.complete() {
		// A final response before the whole request body was read (an
		// early reply to "Expect: 100-continue", say): what the client
		// sends next can no longer be framed, so the connection closes.
		s.keepAlive = false
	}
	if s.keepAlive && s.cc.p.closing.Load() {
		// Shutting down: the connection closes after this response, and
		// the client is told so, even if its request came before.
		s.keepAlive = false
	}
	ed := &s.edits
	ed.Reset()
	ed.StripHopByHop = true
	s.challenge(ed, resp)
	s.authFields(ed, resp)
	flushNow := false
	s.left = -1
	if resp.Framing() == parser.FramingLength && !s.head {
		s.left = resp.ContentLength()
	}
	if s.head && s.http11 && resp.Has(parser.HdrTransferEncoding) {
		// The codings a GET's response would have had (RFC 9110
		// §9.3.2); no body follows a HEAD's whatever they say. An
		// HTTP/1.0 client cannot be told them (RFC 9112 §6.1).
		s.te = transferCodings(s.te, &resp.Header)
		ed.Set("Transfer-Encoding", s.te)
	}
	switch resp.Framing() {
	case parser.FramingChunked, parser.FramingUntilClose:
		if s.head {
			break
		}
		flushNow = true // a streamed body: the head must not wait for it
		switch {
		case s.http11 && resp.Framing() == parser.FramingChunked && !onlyChunked(&resp.Header):
			// Codings under chunked (gzip, chunked) apply to the bytes
			// relayed as they are, re-chunked: the client must be told.
			s.chunked = true
			s.te = transferCodings(s.te, &resp.Header)
			ed.Set("Transfer-Encoding", s.te)
		case s.http11 && resp.Has(parser.HdrTransferEncoding) && resp.Framing() == parser.FramingUntilClose:
			// Codings that do not end in chunked: the body ends at the
			// close (RFC 9112 §6.3), for the client too, which is told
			// the codings.
			s.te = transferCodings(s.te, &resp.Header)
			ed.Set("Transfer-Encoding", s.te)
			s.keepAlive = false
		case s.http11:
			s.chunked = true
			ed.Set("Transfer-Encoding", chunkedValue)
		case resp.Has(parser.HdrTransferEncoding) && !onlyChunked(&resp.Header):
			// An HTTP/1.0 client cannot be told the codings (RFC 9112
			// §6.1), and the proxy does not undo them: relayed, coded
			// bytes would pass for the body.
			return &codingsError{codings: string(transferCodings(s.te, &resp.Header))}
		default:
			ed.Remove("Transfer-Encoding")
			s.keepAlive = false
		}
	case parser.FramingTunnel:
		// A 101: the engine hands the upstream connection over only
		// after a request that asked (s.upgrade), or fails the exchange.
		s.keepAlive = false
		if s.upgrade {
			ed.Keep = ed.Keep.With(parser.HdrUpgrade)
			s.switching = true
		} else {
			flushNow = true
		}
	}
	if s.status == 204 {
		// No server may send it (RFC 9110 §8.6); a client that took it
		// for a length would eat the next response's bytes.
		ed.Remove("Content-Length")
	}
	if s.keepAlive && !resp.KeepAlive() {
		if s.onPinned {
			// The upstream connection this client authenticated on
			// (NTLM, Negotiate) closes after this response. The client
			// can only authenticate again on a new connection, so this
			// one closes with it, rather than fail the next request
			// with a 502.
			s.keepAlive = false
		}
	}
	if resp.Peek(dateName) == nil {
		// A recipient with a clock adds the Date a response came without
		// (RFC 9110 §6.6.1): an HTTP/1.0 origin, a small embedded server.
		s.scratch = time.Now().UTC().AppendFormat(s.scratch[:0], http.TimeFormat)
		ed.Add("Date", s.scratch)
	}
	ed.Add("Via", s.cc.p.viaFor(resp.Version()))
	switch {
	case s.switching:
		ed.Add("Connection", upgradeValue)
	case !s.keepAlive:
		ed.Add("Connection", closeValue)
	case !s.http11:
		ed.Add("Connection", keepAliveValue)
	}
	s.bb.Reset()
	if err := parser.WriteResponseHead(&s.bb, resp, ed); err != nil {
		return err
	}
	// A head with a body of known length waits for the first piece, so
	// that a small response leaves in one send.
	s.pending = true
	if flushNow {
		return s.flushHead()
	}
	return nil
}

func (s *sink) flushHead() error {
	s.pending, s.headSent = false, true
	return s.cc.writeAll(s.bb.B)
}

func (s *sink) OnBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if s.left >= 0 {
		s.left -= int64(len(p))
		if s.left == 0 && !s.chunked && len(p) <= tailMax {
			// The last piece of a body of known length waits, copied,
			// for finish: it leaves after the exchange has put the
			// upstream connection back in the pool, so a client that
			// sends its next request (on this connection or another)
			// the moment it has the response finds that connection idle.
			if !s.pending {
				s.bb.Reset()
				s.pending = true
			}
			s.bb.B = append(s.bb.B, p...)
			s.bytes += int64(len(p))
			return nil
		}
	}
	var head []byte
	if s.pending {
		s.pending, s.headSent = false, true
		head = s.bb.B
	}
	s.bytes += int64(len(p))
	if s.chunked {
		s.scratch = strconv.AppendInt(s.scratch[:0], int64(len(p)), 16)
		s.scratch = append(s.scratch, "\r\n"...)
		return s.cc.writeAll(head, s.scratch, p, crlf)
	}
	return s.cc.writeAll(head, p)
}

// codingsError refuses a response whose body has transfer codings other
// than chunked for an HTTP/1.0 client: a 502 (upstreamStatus).
type codingsError struct{ codings string }

func (e *codingsError) Error() string {
	return "upstream response has transfer codings (" + e.codings + ") an HTTP/1.0 client cannot take"
}

// tailMax bounds the last body piece that waits for finish (OnBody).
const tailMax = 16 << 10

func (s *sink) OnDone(error) {}

// finish ends a response whose exchange succeeded: a head still pending
// (no body, or an empty one) and the last chunk go out.
func (s *sink) finish() error {
	var tail []byte
	if s.pending {
		tail = s.bb.B
	}
	if s.chunked {
		tail = append(tail, "0\r\n\r\n"...)
	}
	if s.pending || s.chunked {
		s.pending, s.headSent = false, true
		return s.cc.send(tail)
	}
	return nil
}

// clientGone aborts the exchange of the request being served if the
// client's socket fd was reset (or failed otherwise): nobody will read
// the answer, and the upstream connection, with the origin's work on it,
// is let go at once (closed, as nginx's proxy_ignore_client_abort off
// and Squid do), not at the response-header timeout. A FIN alone is not
// enough: a client that shut down its sending side after its request
// still reads the response (out), and one that closed its socket with
// nothing unread sent the same FIN; the first response bytes written to
// that one meet its reset, which ends the exchange as a failed write.
// The kernel has taken a reset socket to TCP_CLOSE, while a FIN leaves it
// in CLOSE_WAIT. Called when the fd is seen closing (netpoll's
// OnDisconnect); the TCP_INFO look costs a system call only then.
func (cc *clientConn) clientGone(fd int) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil || ti.State != tcpClose {
		return
	}
	cc.abort.Abort()
}

// tcpClose is TCP_CLOSE, the kernel's state of a reset socket.
const tcpClose = 7
