package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
)

// maxHeadBuf bounds the client read buffer; the parser's own head limit
// (parser.DefaultMaxHeadBytes) normally rejects a head well before.
const maxHeadBuf = parser.DefaultMaxHeadBytes + 4096

// proxy is the client side of the demo proxy.
//
// Each client connection is served by its own goroutine over a Go net
// listener, which keeps this first version simple and correct. The
// netpoll-sharded client side comes next.
type proxy struct {
	eng       *engine.Engine
	log       *slog.Logger
	accessLog bool
	// group is the engine peer group requests go to (origins in reverse
	// mode, parents in forward mode; see peers.go); empty for direct
	// forwarding. parents marks a group of parent proxies; originHost is
	// the Host of a reverse-proxied request that has none.
	group      string
	parents    bool
	originHost string
	metrics    proxyMetrics // read by the admin server

	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[*clientConn]struct{}
	closing bool
}

// hostPort adds the default port 80 to an authority without one.
func hostPort(auth string) string {
	if _, _, err := net.SplitHostPort(auth); err == nil {
		return auth
	}
	return net.JoinHostPort(auth, "80")
}

// resolve turns host:port into ip:port with net.DefaultResolver.
func resolve(ctx context.Context, hp string) (string, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", err
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %q", host)
	}
	return net.JoinHostPort(ips[0].Unmap().String(), port), nil
}

// Serve accepts client connections until the listener is closed.
func (p *proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	p.ln = ln
	if p.conns == nil {
		p.conns = make(map[*clientConn]struct{})
	}
	p.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		cc := &clientConn{p: p, c: c, idle: true}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[cc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		p.metrics.connOpened()
		go func() {
			defer p.wg.Done()
			cc.serve()
			p.metrics.connClosed()
			p.mu.Lock()
			delete(p.conns, cc)
			p.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, closes idle client connections, lets requests
// in flight finish until ctx ends, then drains and closes the engine.
func (p *proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	if p.ln != nil {
		p.ln.Close()
	}
	for cc := range p.conns {
		cc.closeIfIdleLocked()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		for cc := range p.conns {
			cc.c.Close()
		}
		p.mu.Unlock()
		<-done
	}
	if derr := p.eng.Drain(ctx); err == nil {
		err = derr
	}
	return err
}

func (p *proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// clientConn is one client connection.
type clientConn struct {
	p    *proxy
	c    net.Conn
	idle bool // guarded by p.mu: waiting for the first byte of a request

	buf  []byte // head bytes; buf[:n] read so far
	n    int
	body []byte // body bytes read ahead; body[br:bw] not consumed yet
	br   int
	bw   int

	req   parser.Request
	edits parser.Edits
	bb    bytebufferpool.ByteBuffer
}

func (cc *clientConn) closeIfIdleLocked() {
	if cc.idle {
		cc.c.Close()
	}
}

func (cc *clientConn) setIdle(idle bool) bool {
	cc.p.mu.Lock()
	defer cc.p.mu.Unlock()
	cc.idle = idle
	return !cc.p.closing
}

func (cc *clientConn) serve() {
	defer cc.c.Close()
	cc.buf = make([]byte, 4096)
	cc.body = make([]byte, 32<<10)
	for {
		if !cc.setIdle(cc.n == 0) {
			return
		}
		if !cc.serveOne() {
			return
		}
	}
}

// readHead reads and parses one request head. It returns the head length,
// or false when the connection is to be closed.
func (cc *clientConn) readHead() (int, bool) {
	cc.req.Reset()
	for i := 0; i < 1<<20; i++ {
		if cc.n > 0 {
			hl, err := cc.req.Parse(cc.buf[:cc.n])
			if err == nil {
				return hl, true
			}
			if err != parser.ErrNeedMore {
				msg := "malformed request"
				status := 400
				if r := parser.Rule(err); r != nil {
					msg = r.Msg
					if r.Status != 0 {
						status = r.Status
					}
				}
				cc.p.log.Debug("bad request", "remote", cc.c.RemoteAddr().String(), "err", err)
				cc.writeError(status, msg)
				return 0, false
			}
		}
		if cc.n == len(cc.buf) {
			if len(cc.buf) >= maxHeadBuf {
				cc.writeError(431, "request head too large")
				return 0, false
			}
			nb := make([]byte, min(2*len(cc.buf), maxHeadBuf))
			copy(nb, cc.buf[:cc.n])
			cc.buf = nb
		}
		m, err := cc.c.Read(cc.buf[cc.n:])
		if m > 0 && cc.n == 0 {
			cc.setIdle(false)
		}
		cc.n += m
		if err != nil {
			if m > 0 {
				continue // parse what arrived with the error first
			}
			return 0, false
		}
	}
	return 0, false
}

// serveOne serves one request; false closes the connection.
func (cc *clientConn) serveOne() bool {
	hl, ok := cc.readHead()
	if !ok {
		return false
	}
	start := time.Now()
	req := &cc.req
	method, target := string(req.Method()), string(req.Target())

	// Move what follows the head into the body buffer.
	rest := cc.buf[hl:cc.n]
	if len(rest) > len(cc.body) {
		cc.body = make([]byte, len(rest))
	}
	cc.br, cc.bw = 0, copy(cc.body, rest)
	cc.n = 0

	s := &sink{c: cc.c, http11: req.Version().AtLeast11(), keepAlive: req.KeepAlive() && !cc.p.isClosing()}
	keep := cc.exchange(s, start)
	// Whatever was read ahead starts the next request.
	left := cc.body[cc.br:cc.bw]
	if len(left) > len(cc.buf) {
		cc.buf = make([]byte, max(len(left), 4096))
	}
	cc.n = copy(cc.buf, left)
	cc.br, cc.bw = 0, 0
	cc.p.metrics.served(s.status, s.bytes)
	if cc.p.accessLog {
		cc.p.log.Info("access", "remote", cc.c.RemoteAddr().String(), "method", method, "target", target,
			"status", s.status, "bytes", s.bytes, "duration", time.Since(start))
	}
	return keep
}

// exchange forwards the parsed request and relays the response; false
// closes the connection.
func (cc *clientConn) exchange(s *sink, start time.Time) bool {
	req := &cc.req
	if req.MethodID() == parser.MethodConnect {
		s.keepAlive = false
		cc.writeErrorSink(s, 501, "CONNECT is not yet supported")
		return false
	}
	ed := &cc.edits
	ed.Reset()
	ed.StripHopByHop = true
	if cc.p.group != "" {
		return cc.exchangePeers(s, ed)
	}
	if req.Form() != parser.FormAbsolute {
		cc.writeErrorSink(s, 400, "a forward proxy needs an absolute-form target (http://host/path)")
		return false
	}
	if string(req.Scheme()) != "http" {
		cc.writeErrorSink(s, 400, "only http:// targets are supported")
		return false
	}
	hp := hostPort(string(req.Authority()))
	cc.setOriginForm(ed)
	if !req.Has(parser.HdrHost) && ed.Target == nil {
		ed.Set("Host", []byte(hp)) // an HTTP/1.0 request without Host; HTTP/1.1 requires one
	}
	ed.Add("Via", []byte("1.1 serverside"))

	ctx := context.Background()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	addr, err := resolve(rctx, hp)
	cancel()
	if err != nil {
		cc.writeErrorSink(s, 502, "cannot resolve "+hp+": "+err.Error())
		return false
	}
	return cc.send(s, engine.Upstream{Addr: addr}, ed)
}

// send forwards the request, with its body, to up and relays the
// response; false closes the connection.
func (cc *clientConn) send(s *sink, up engine.Upstream, ed *parser.Edits) bool {
	req := &cc.req
	ctx := context.Background()
	er := &engine.Request{Upstream: up, Head: req, Edits: ed}
	var body *bodyReader
	switch req.Framing() {
	case parser.FramingLength:
		if req.ContentLength() > 0 {
			body = &bodyReader{cc: cc, remaining: req.ContentLength()}
			er.Body, er.ContentLength = body, req.ContentLength()
		}
	case parser.FramingChunked:
		body = &bodyReader{cc: cc, chunked: true}
		er.Body, er.ContentLength = body, -1
	}
	if body != nil && req.ExpectContinue() {
		// Expect is forwarded: the engine waits for the origin's 100 (or
		// its timeout) before reading the body, and the first read sends
		// the client its own "100 Continue".
		body.cont = true
	}
	s.head = req.MethodID() == parser.MethodHead
	err := cc.p.eng.Exchange(ctx, er, s)
	if err == nil && s.chunked {
		_, err = cc.c.Write([]byte("0\r\n\r\n"))
	}
	bodyDone := body == nil || body.complete()
	if err != nil {
		if s.headSent {
			cc.p.log.Debug("upstream failed after the head was sent", "addr", up.Addr, "group", up.Group, "err", err)
			return false
		}
		status, msg := upstreamStatus(err)
		s.keepAlive = false
		cc.writeErrorSink(s, status, msg)
		return false
	}
	return s.keepAlive && bodyDone
}

// setOriginForm turns an absolute-form request into origin-form with the
// Host field from the target's authority (RFC 9112 §3.2.2).
func (cc *clientConn) setOriginForm(ed *parser.Edits) {
	path := cc.req.Path()
	if len(path) == 0 {
		path = []byte("/")
	}
	ed.Target = path
	ed.Set("Host", cc.req.Authority())
}

// upstreamStatus picks the status and text for an upstream failure.
func upstreamStatus(err error) (int, string) {
	switch {
	case errors.Is(err, conn.ErrHeaderTimeout), errors.Is(err, conn.ErrReadTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return 504, "upstream timed out: " + err.Error()
	case errors.Is(err, engine.ErrOverloaded):
		return 503, "proxy overloaded: " + err.Error()
	case errors.Is(err, engine.ErrClosed):
		return 503, "proxy shutting down"
	case errors.Is(err, engine.ErrNoPeer):
		return 503, "no upstream available: " + err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 504, "upstream timed out: " + err.Error()
	}
	return 502, "upstream error: " + err.Error()
}

func (cc *clientConn) writeError(status int, msg string) {
	s := &sink{c: cc.c}
	cc.writeErrorSink(s, status, msg)
	cc.p.metrics.served(s.status, s.bytes) // a request rejected before serveOne
}

// writeErrorSink writes a short text/plain error response that closes the
// connection.
func (cc *clientConn) writeErrorSink(s *sink, status int, msg string) {
	body := msg + "\n"
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + reason(status) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Via: 1.1 serverside\r\nConnection: close\r\n\r\n"
	s.status, s.bytes = status, int64(len(body))
	_ = cc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(cc.c, head+body)
	_ = cc.c.SetWriteDeadline(time.Time{})
}

func reason(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return "Error"
}

// bodyReader streams a request body from the client connection: exactly
// remaining bytes, or a chunked body decoded with parser.ChunkedDecoder.
type bodyReader struct {
	cc        *clientConn
	remaining int64
	chunked   bool
	dec       parser.ChunkedDecoder
	held      []byte // decoded data not yet returned, inside cc.body
	cont      bool   // "100 Continue" still to send
	err       error
}

func (b *bodyReader) complete() bool {
	if b.chunked {
		return b.dec.Done() && len(b.held) == 0
	}
	return b.remaining == 0
}

// fill reads more client bytes into cc.body once everything in it is used.
func (b *bodyReader) fill() error {
	cc := b.cc
	if cc.br == cc.bw {
		cc.br, cc.bw = 0, 0
	}
	if cc.bw == len(cc.body) {
		return errors.New("body buffer full") // cannot happen: fill runs only when body is used up
	}
	n, err := cc.c.Read(cc.body[cc.bw:])
	cc.bw += n
	if n > 0 {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.cont {
		b.cont = false
		if _, err := io.WriteString(b.cc.c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			b.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	cc := b.cc
	if !b.chunked {
		if b.remaining == 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		if cc.br < cc.bw {
			n := copy(p, cc.body[cc.br:cc.bw])
			cc.br += n
			b.remaining -= int64(n)
			return n, nil
		}
		n, err := cc.c.Read(p)
		b.remaining -= int64(n)
		if n > 0 {
			return n, nil
		}
		if err == io.EOF || err == nil {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return 0, err
	}
	// Each pass consumes bytes or reads more: bounded by the body size.
	for {
		if len(b.held) > 0 {
			n := copy(p, b.held)
			b.held = b.held[n:]
			return n, nil
		}
		if b.dec.Done() {
			return 0, io.EOF
		}
		if cc.br < cc.bw {
			data, n, err := b.dec.Next(cc.body[cc.br:cc.bw])
			cc.br += n
			if err != nil {
				b.err = err
				return 0, err
			}
			if len(data) > 0 {
				b.held = data
				continue
			}
			if n > 0 || b.dec.Done() {
				continue
			}
		}
		if err := b.fill(); err != nil {
			b.err = err
			return 0, err
		}
	}
}

// sink writes the response to the client: the head with hop-by-hop fields
// stripped and Via added, the body re-framed for the client.
type sink struct {
	c         net.Conn
	http11    bool // the client speaks HTTP/1.1
	keepAlive bool // the connection stays open after this response
	head      bool // a HEAD request: no body follows the head
	chunked   bool // the body is chunk-encoded to the client
	headSent  bool
	status    int
	bytes     int64
	edits     parser.Edits
	bb        bytebufferpool.ByteBuffer
	scratch   []byte
}

func (s *sink) OnHead(resp *parser.Response) error {
	if resp.IsInterim() {
		return nil
	}
	s.status = resp.Status()
	ed := &s.edits
	ed.Reset()
	ed.StripHopByHop = true
	switch resp.Framing() {
	case parser.FramingChunked, parser.FramingUntilClose:
		if s.head {
			break
		}
		if s.http11 {
			s.chunked = true
			ed.Set("Transfer-Encoding", []byte("chunked"))
		} else {
			ed.Remove("Transfer-Encoding")
			s.keepAlive = false
		}
	case parser.FramingTunnel:
		s.keepAlive = false
	}
	ed.Add("Via", []byte("1.1 serverside"))
	switch {
	case !s.keepAlive:
		ed.Add("Connection", []byte("close"))
	case !s.http11:
		ed.Add("Connection", []byte("keep-alive"))
	}
	s.bb.Reset()
	if err := parser.WriteResponseHead(&s.bb, resp, ed); err != nil {
		return err
	}
	s.headSent = true
	_, err := s.c.Write(s.bb.B)
	return err
}

func (s *sink) OnBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	s.bytes += int64(len(p))
	if !s.chunked {
		_, err := s.c.Write(p)
		return err
	}
	s.scratch = strconv.AppendInt(s.scratch[:0], int64(len(p)), 16)
	s.scratch = append(s.scratch, "\r\n"...)
	bufs := net.Buffers{s.scratch, p, []byte("\r\n")}
	_, err := bufs.WriteTo(s.c)
	return err
}

func (s *sink) OnDone(error) {}
