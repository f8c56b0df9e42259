package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/engine"
	"golang.org/x/sys/unix"
)

// The proxy fuzz targets run the demo proxy in reverse mode in front of a
// recording origin (fuzzOrigin): FuzzProxyRequests has the client send
// arbitrary bytes and checks what reaches the origin and what comes back
// against a reference reading of the same bytes (refhttp_test.go);
// FuzzProxyResponses has the origin answer with arbitrary bytes and
// checks what the client gets, and that the connection is not reused
// after a protocol error. Plain `go test` runs the seeds.

// fuzzDeadline bounds every wait of one fuzz iteration.
const fuzzDeadline = 3 * time.Second

// fuzzEvent is what the origin read on one of its connections.
type fuzzEvent struct {
	conn    int
	msg     *refMsg // a whole request
	err     error   // the bytes could not be read as a request
	partial []byte  // bytes of an unfinished request at the close
	raw     []byte  // the request's bytes as received
	// early: answered once its head came (fuzzOrigin.early), before
	// its body; cut: that body never came whole.
	early, cut bool
}

// fuzzOrigin is a loopback origin that reads requests with the strict
// reference reader, records each, and answers with what answer returns
// (keep false: then close the connection).
type fuzzOrigin struct {
	ln     net.Listener
	answer func(conn int, m *refMsg) (reply []byte, keep bool)
	mu     sync.Mutex
	events []fuzzEvent
	conns  []net.Conn
	closed map[int]bool // connections closed, by the proxy or on a failed write
	done   map[int]bool // connections whose serve returned
	busy   int          // serve goroutines not waiting in a read
	split  int          // where answers to /r1 are split in two writes
	// early answers a request with a body once its head is in, before
	// the body: 1 with a 200, 2 with a 413.
	early int
	wg    sync.WaitGroup
}

func newFuzzOrigin(tb testing.TB, answer func(conn int, m *refMsg) ([]byte, bool)) *fuzzOrigin {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o := &fuzzOrigin{ln: ln, answer: answer, closed: map[int]bool{}, done: map[int]bool{}}
	o.wg.Add(1)
	go o.accept()
	tb.Cleanup(func() {
		_ = ln.Close()
		o.mu.Lock()
		for _, c := range o.conns {
			_ = c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *fuzzOrigin) accept() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			return
		}
		o.mu.Lock()
		id := len(o.conns)
		o.conns = append(o.conns, c)
		o.busy++ // until serve waits in its first read
		o.mu.Unlock()
		o.wg.Add(1)
		go o.serve(id, c)
	}
}

func (o *fuzzOrigin) record(e fuzzEvent) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

func (o *fuzzOrigin) serve(id int, c net.Conn) {
	defer o.wg.Done()
	defer func() {
		o.mu.Lock()
		o.busy--
		o.done[id] = true
		o.closed[id] = true // by the peer, or by this side (a write failed, keep false)
		o.mu.Unlock()
	}()
	defer c.Close()
	var buf []byte
	sent100 := false
	pending := -1 // the event answered early whose body is still coming
	rb := make([]byte, 32<<10)
	for {
		for len(buf) > 0 {
			m, err := refReadMessage(buf, true, false, false)
			if err == errRefMore {
				if m != nil && pending < 0 && (m.framing == refChunked || m.framing == refLength) {
					if reply := o.earlyReply(m); reply != "" {
						o.mu.Lock()
						pending = len(o.events)
						o.events = append(o.events, fuzzEvent{conn: id, msg: m, early: true, cut: true})
						o.mu.Unlock()
						if _, err := io.WriteString(c, reply); err != nil {
							return
						}
						sent100 = true
					}
				}
				if m != nil && !sent100 && m.hasToken("Expect", "100-continue") {
					sent100 = true
					if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
						return
					}
				}
				break
			}
			if err != nil {
				o.record(fuzzEvent{conn: id, err: err, raw: append([]byte(nil), buf...)})
				return
			}
			raw := append([]byte(nil), buf[:m.n]...)
			buf, sent100 = buf[m.n:], false
			if pending >= 0 {
				// The body of a request answered early: complete now.
				o.mu.Lock()
				o.events[pending].msg, o.events[pending].raw, o.events[pending].cut = m, raw, false
				o.mu.Unlock()
				pending = -1
				continue
			}
			o.record(fuzzEvent{conn: id, msg: m, raw: raw})
			reply, keep := o.answer(id, m)
			if k := o.splitAt(m); k > 0 && k < len(reply) {
				// In two pieces: the proxy acts on the first alone.
				if _, err := c.Write(reply[:k]); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
				reply = reply[k:]
			}
			if len(reply) > 0 {
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
			if !keep {
				return
			}
		}
		o.mu.Lock()
		o.busy--
		o.mu.Unlock()
		n, err := c.Read(rb)
		o.mu.Lock()
		o.busy++
		o.mu.Unlock()
		buf = append(buf, rb[:n]...)
		if err != nil {
			if len(buf) > 0 && pending < 0 {
				o.record(fuzzEvent{conn: id, partial: buf})
			}
			o.mu.Lock()
			o.closed[id] = true
			o.mu.Unlock()
			return
		}
	}
}

// earlyReply is the answer to a request whose body is still coming, or
// "" to wait for the body.
func (o *fuzzOrigin) earlyReply(m *refMsg) string {
	o.mu.Lock()
	early := o.early
	o.mu.Unlock()
	switch early {
	case 1:
		return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Echo: " + earlyEcho(m) + "\r\n\r\n"
	case 2:
		return "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nX-Echo: " + earlyEcho(m) + "\r\n\r\n"
	}
	return ""
}

func earlyEcho(m *refMsg) string { return m.method + " " + m.target + " early" }

func (o *fuzzOrigin) splitAt(m *refMsg) int {
	if m.target != "/r1" {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.split
}

// mark is where the events of an iteration start.
func (o *fuzzOrigin) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.events)
}

func (o *fuzzOrigin) since(mark int) []fuzzEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fuzzEvent(nil), o.events[mark:]...)
}

func (o *fuzzOrigin) isClosed(id int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed[id]
}

// startFuzzProxy serves a reverse proxy in front of origin, with short
// timeouts so that a request or response left unfinished ends within an
// iteration's deadline.
// fuzzProxy is a proxy served on addr.
type fuzzProxy struct {
	*proxy
	addr string
}

func startFuzzProxy(tb testing.TB, origin string) *fuzzProxy {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := engine.Config{
		Shards: 2, Logger: logger,
		ResponseHeaderTimeout: 200 * time.Millisecond,
		ExpectContinueTimeout: 100 * time.Millisecond,
		ConnectTimeout:        2 * time.Second,
	}
	ccfg := clientConfig{ViaName: testViaName, IdleTimeout: 500 * time.Millisecond, HeaderTimeout: 300 * time.Millisecond}
	p, err := newProxy(logger, []string{"http://" + origin}, cfg, ccfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return &fuzzProxy{p, ln.Addr().String()}
}

// settle waits until the proxy holds no client connection and the origin
// has stopped receiving: what the proxy sends for an iteration has all
// arrived.
func settle(t *testing.T, p *fuzzProxy, o *fuzzOrigin) {
	t.Helper()
	end := time.Now().Add(fuzzDeadline)
	for p.live() > 0 {
		if time.Now().After(end) {
			t.Fatalf("a client connection still open %v after its client closed", fuzzDeadline)
		}
		time.Sleep(time.Millisecond)
	}
	// Then until every origin connection waits in a read with nothing
	// unread in its socket, twice in a row.
	for quiet := 0; quiet < 2; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the origin still receiving %v after the client closed", fuzzDeadline)
		}
		if o.quiet() {
			quiet++
		} else {
			quiet = 0
		}
	}
}

// quiet reports every serve goroutine waiting in a read, and no byte
// unread in the sockets of the connections still open.
func (o *fuzzOrigin) quiet() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.busy > 0 {
		return false
	}
	for id, c := range o.conns {
		if o.done[id] {
			continue
		}
		sc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			continue
		}
		n := 0
		_ = sc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if n > 0 {
			return false
		}
	}
	return true
}

// readResponses reads final responses from c (skipping interim ones)
// with the strict reference reader, until stop says so, the proxy closes,
// or the deadline. head(i) says whether the i-th answers a HEAD,
// http10(i) whether it answers an HTTP/1.0 request (which gets no
// interim response).
func readResponses(t *testing.T, c net.Conn, http10, head func(i int) bool, stop func(n int) bool) (resps []*refMsg, partial *refMsg, rest []byte, closed bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(fuzzDeadline))
	var buf []byte
	rb := make([]byte, 32<<10)
	for {
		for len(buf) > 0 {
			m, err := refReadResponse(buf, head(len(resps)), closed)
			if err == errRefMore {
				partial = m
				break
			}
			if err != nil {
				t.Fatalf("the proxy sent a response the reference reader refuses: %v\n%q", err, buf)
			}
			partial = nil
			buf = buf[m.n:]
			if m.status >= 100 && m.status < 200 && m.status != 101 {
				if http10(len(resps)) {
					// RFC 9110 §15.2: not to an HTTP/1.0 client.
					t.Fatalf("an HTTP/1.0 client got a %d", m.status)
				}
				continue
			}
			resps = append(resps, m)
		}
		if closed || stop(len(resps)) && len(buf) == 0 {
			return resps, partial, buf, closed
		}
		n, err := c.Read(rb)
		buf = append(buf, rb[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return resps, partial, buf, false
			}
			if err != io.EOF {
				// A reset ends no close-delimited body: read what
				// came, as cut.
				for len(buf) > 0 {
					m, err := refReadResponse(buf, head(len(resps)), false)
					if err != nil {
						partial = m
						break
					}
					buf = buf[m.n:]
					if m.status >= 200 || m.status == 101 {
						resps = append(resps, m)
					}
				}
				return resps, partial, buf, true
			}
			closed = true
		}
	}
}

// refReadResponse reads a response of the proxy's, strictly; one to a
// HEAD has no body, whatever its fields say (RFC 9112 §6.3 rule 1: the
// proxy relays a HEAD response's Transfer-Encoding as it came).
func refReadResponse(b []byte, head, closed bool) (*refMsg, error) {
	if !head {
		return refReadMessage(b, false, false, closed)
	}
	m, err := refReadHead(b, false, false)
	if err != nil {
		return nil, err
	}
	m.framing, m.n, m.keepAlive = refNoBody, m.headLen, refKeep(m, m.minor >= 1)
	return m, nil
}

// fuzzEcho names a request by what the origin got: the origin sends it
// back in X-Echo, so that the client can tell which request a response
// answers.
func fuzzEcho(m *refMsg) string {
	sum := sha256.Sum256(m.body)
	return m.method + " " + m.target + " " + strconv.Itoa(len(m.body)) + " " + hex.EncodeToString(sum[:6])
}

// forwardedTarget is the target a reverse proxy sends for t: an
// absolute-form target in origin form (RFC 9112 §3.2.2).
func forwardedTarget(method, t string) string {
	i := strings.Index(t, "://")
	if t == "*" || strings.HasPrefix(t, "/") || i <= 0 {
		return t
	}
	rest := t[i+3:]
	path := ""
	if j := strings.IndexAny(rest, "/?"); j >= 0 {
		path = rest[j:]
	}
	switch {
	case path == "" && method == "OPTIONS":
		return "*"
	case path == "":
		return "/"
	case path[0] == '?':
		return "/" + path
	}
	return path
}

// fuzzHopByHop are the fields a proxy may drop, add or rewrite.
var fuzzHopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true,
	"transfer-encoding": true, "content-length": true, "upgrade": true, "trailer": true,
	"via": true, "max-forwards": true, "host": true, "proxy-authorization": true,
	"proxy-authenticate": true, "expect": true,
}

// refRequests reads the pipelined requests in b as the proxy's client
// sent them, leniently as a server may (bare LF, empty lines first),
// until the bytes end, a request cannot be read, or one asks to close.
func refRequests(b []byte) (reqs []*refMsg, end error) {
	for len(b) > 0 {
		m, err := refReadMessage(b, true, true, false)
		if err != nil {
			return reqs, err
		}
		reqs = append(reqs, m)
		b = b[m.n:]
		if !m.keepAlive {
			return reqs, nil
		}
	}
	return reqs, nil
}

// checkRequests runs one FuzzProxyRequests iteration.
func checkRequests(t *testing.T, p *fuzzProxy, o *fuzzOrigin, in []byte, split uint16, early uint8) {
	ref, end := refRequests(in)
	var endErr *refError
	errors.As(end, &endErr)
	o.mu.Lock()
	o.early = int(early % 3)
	o.mu.Unlock()
	mark := o.mark()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(fuzzDeadline))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if split > 0 && int(split) < len(in) {
			// In two pieces: the proxy reads the second after it has
			// acted on the first (a body streams, a head waits).
			if _, err := c.Write(in[:split]); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
			_, _ = c.Write(in[split:])
			return
		}
		_, _ = c.Write(in)
	}()
	// Read until the proxy closes, or, when the client sent nothing that
	// closes, once every whole request has its answer.
	lastKeeps := len(ref) == 0 || ref[len(ref)-1].keepAlive
	waitClose := endErr != nil || !lastKeeps
	// The answer to a request that could not be read is to a HEAD when
	// its method was read as HEAD: its head alone (RFC 9110 §9.3.2).
	off := 0
	for _, r := range ref {
		off += r.n
	}
	errHead := bytes.HasPrefix(bytes.TrimLeft(in[off:], "\r\n"), []byte("HEAD "))
	resps, partial, rest, closed := readResponses(t, c,
		func(i int) bool { return i < len(ref) && ref[i].minor == 0 },
		func(i int) bool { return i < len(ref) && ref[i].method == "HEAD" || i == len(ref) && errHead },
		func(n int) bool { return !waitClose && n >= len(ref) })
	_ = c.Close()
	<-wrote
	settle(t, p, o)
	events := o.since(mark)
	fail := func(format string, args ...any) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, format, args...)
		fmt.Fprintf(&b, "\nclient sent %q (split at %d, early %d)\nreference: %d requests, end %v", in, split, early%3, len(ref), end)
		for i, r := range resps {
			x, _ := r.get("X-Echo")
			fmt.Fprintf(&b, "\nresponse %d: %d X-Echo %q body %q", i, r.status, x, r.body)
		}
		if partial != nil || len(rest) > 0 {
			fmt.Fprintf(&b, "\nunfinished response bytes %q", rest)
		}
		for _, e := range events {
			fmt.Fprintf(&b, "\norigin conn %d: err %v partial %q raw %q early %v cut %v", e.conn, e.err, e.partial, e.raw, e.early, e.cut)
		}
		t.Fatal(b.String())
	}
	if !closed && waitClose && len(resps) <= len(ref) && len(resps) > 0 && resps[len(resps)-1].keepAlive {
		fail("no answer within %v", fuzzDeadline)
	}
	if !closed && !waitClose && len(resps) < len(ref) {
		fail("%d responses within %v, want %d", len(resps), fuzzDeadline, len(ref))
	}
	j := 0 // the next origin event
	for i, r := range resps {
		if i > 0 && !resps[i-1].keepAlive {
			fail("response %d after a response that closes", i)
		}
		echo, fromOrigin := r.get("X-Echo")
		if !fromOrigin {
			// The proxy's own answer: to request i (refused, or answered
			// here), or the error that ends the connection.
			if i == len(ref) {
				if endErr == nil {
					// The bytes after the last whole request may be
					// refused before they are complete (a method that
					// is not a token), or time out.
					if end == nil || r.status < 400 || r.keepAlive {
						fail("response %d answers no request", i)
					}
					continue
				}
				if endErr.framing && r.status != 400 {
					fail("framing error %q answered %d, want 400", endErr.msg, r.status)
				}
				if r.status < 400 || r.keepAlive {
					fail("error %q answered %d keep-alive %v", endErr.msg, r.status, r.keepAlive)
				}
			}
			continue
		}
		for j < len(events) && events[j].partial != nil {
			j++
		}
		if j == len(events) {
			fail("response %d carries X-Echo %q, the origin got no request for it", i, echo)
		}
		e := events[j]
		j++
		if e.err != nil {
			fail("the origin could not read the forwarded request: %v", e.err)
		}
		wantEcho := fuzzEcho(e.msg)
		if e.early {
			wantEcho = earlyEcho(e.msg)
		}
		if echo != wantEcho {
			fail("response %d echoes %q, the origin's request was %q", i, echo, wantEcho)
		}
		if e.cut {
			// Answered before its body, which then stopped: only after
			// an answer of 300 or more (RFC 9112 §9.5), a final answer
			// to an "Expect: 100-continue" (RFC 9110 §10.1.1), or when
			// the client's body broke off. That upstream connection
			// is closed; the client's stays only if its body was read
			// whole (and dropped).
			if i >= len(ref) && i < len(resps)-1 {
				fail("response %d after a request whose body broke off", i+1)
			}
			if i < len(ref) && r.status < 300 && !ref[i].hasToken("Expect", "100-continue") {
				fail("the body of %q was cut after a %d", wantEcho, r.status)
			}
			for k := j; k < len(events); k++ {
				if events[k].conn == e.conn {
					fail("the upstream connection of %q, cut mid-body, was used again", wantEcho)
				}
			}
			for end := time.Now().Add(fuzzDeadline); !o.isClosed(e.conn); time.Sleep(2 * time.Millisecond) {
				if time.Now().After(end) {
					fail("the upstream connection of %q, cut mid-body, stays open", wantEcho)
				}
			}
			if i >= len(ref) && end == nil {
				fail("the origin got request %d, beyond what the client sent (%q)", i, wantEcho)
			}
			if i < len(ref) && (e.msg.method != ref[i].method || e.msg.target != forwardedTarget(ref[i].method, ref[i].target)) {
				fail("%q answered early is not %s %s", wantEcho, ref[i].method, ref[i].target)
			}
			continue
		}
		if i >= len(ref) {
			fail("the origin got request %d, beyond what the client sent (%q)", i, fuzzEcho(e.msg))
		}
		checkForwarded(fail, ref[i], e.msg)
	}
	for ; j < len(events); j++ {
		e := events[j]
		switch {
		case e.err != nil:
			fail("the origin could not read forwarded bytes: %v", e.err)
		case e.cut && end != nil && j == len(events)-1:
			// Answered early, then the client's body broke off: the
			// client gets the proxy's 400 rather than an answer to a
			// request that was never whole.
		case e.msg != nil:
			fail("the origin got %q, whose answer never reached the client", fuzzEcho(e.msg))
		}
	}
	if endErr != nil && len(resps) == len(ref) && (len(ref) == 0 || ref[len(ref)-1].keepAlive) && lastAnsweredKeeps(resps) {
		fail("the framing error %q got no answer", endErr.msg)
	}
}

func lastAnsweredKeeps(resps []*refMsg) bool {
	return len(resps) == 0 || resps[len(resps)-1].keepAlive
}

// checkForwarded compares a request the origin got with the one the
// client sent.
func checkForwarded(fail func(string, ...any), sent, got *refMsg) {
	if got.method != sent.method {
		fail("method %q forwarded as %q", sent.method, got.method)
	}
	if want := forwardedTarget(sent.method, sent.target); got.target != want {
		fail("target %q forwarded as %q, want %q", sent.target, got.target, want)
	}
	if !bytes.Equal(got.body, sent.body) {
		fail("body %q forwarded as %q", sent.body, got.body)
	}
	if got.clCount > 1 || got.teCount > 1 || got.clCount+got.teCount > 1 {
		fail("forwarded with %d Content-Length and %d Transfer-Encoding lines", got.clCount, got.teCount)
	}
	if te, ok := got.get("Transfer-Encoding"); ok && !strings.EqualFold(te, "chunked") {
		fail("forwarded with Transfer-Encoding %q", te)
	}
	if len(got.body) > 0 && got.framing != refLength && got.framing != refChunked {
		fail("body forwarded without framing")
	}
	named := map[string]bool{}
	for _, o := range sent.list("Connection") {
		named[strings.ToLower(o)] = true
	}
	for _, f := range sent.fields {
		n := strings.ToLower(f.name)
		if fuzzHopByHop[n] || named[n] {
			continue
		}
		found := false
		for _, g := range got.fields {
			if strings.EqualFold(g.name, f.name) && g.value == f.value {
				found = true
				break
			}
		}
		if !found {
			fail("field %q: %q not forwarded", f.name, f.value)
		}
	}
	// Host: the client's, or the absolute-form target's authority
	// (RFC 9112 §3.2.2), which a reverse proxy forwards in origin form.
	wantHost, _ := sent.get("Host")
	if i := strings.Index(sent.target, "://"); i > 0 && !strings.HasPrefix(sent.target, "/") {
		wantHost = sent.target[i+3:]
		if j := strings.IndexAny(wantHost, "/?"); j >= 0 {
			wantHost = wantHost[:j]
		}
	}
	// (One without, or empty, gets the origin's.)
	if h, _ := got.get("Host"); wantHost != "" && h != wantHost || len(got.list("Host")) > 1 {
		fail("Host %q forwarded as %q, want %q", sent.target, h, wantHost)
	}
	// Nothing the client did not send, but for what a proxy sets.
	for _, g := range got.fields {
		switch strings.ToLower(g.name) {
		case "via", "connection", "host", "content-length", "transfer-encoding", "upgrade", "max-forwards":
			continue
		}
		found := false
		for _, f := range sent.fields {
			if strings.EqualFold(g.name, f.name) && g.value == f.value {
				found = true
				break
			}
		}
		if !found {
			fail("field %q: %q forwarded, not sent", g.name, g.value)
		}
	}
}

// fuzzRequestSeeds are hostile request streams.
var fuzzRequestSeeds = []string{
	"GET /a HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\nHEAD /c HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	// CL and TE together: the classic smuggling pair, both orders.
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\nHost: o\r\n\r\n0\r\n\r\n",
	// Duplicate and conflicting Content-Length.
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5, 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: +5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 0x5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: o\r\nContent-Length: 005\r\n\r\nworld",
	// Transfer-Encoding not ending in chunked, or obfuscated.
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.0\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	// Bad chunk sizes and extensions.
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\\\"e\"\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\nGET /smuggled HTTP/1.1\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	// Bare LF, bare CR, obs-fold, NUL and other controls, space before
	// the colon.
	"GET /a HTTP/1.1\nHost: o\n\nGET /b HTTP/1.1\nHost: o\n\n",
	"GET /a HTTP/1.1\r\nHost: o\rX: y\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nX: a\r\n b\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nX: a\x00b\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nX: a\x7fb\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nX: \x80\xff\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost : o\r\n\r\n",
	"GET /a HTTP/1.1\r\n Host: o\r\n\r\n",
	"GET /a\x00 HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET  /a HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.1 \r\nHost: o\r\n\r\n",
	"\r\n\r\nGET /a HTTP/1.1\r\nHost: o\r\n\r\n",
	"HEAD \n\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nX: " + strings.Repeat("v", 9000) + "\r\n\r\n",
	"GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: o\r\n\r\n",
	// Hosts and target forms.
	"GET http://other/p?q HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET http://o HTTP/1.1\r\nHost: o\r\n\r\n",
	"OPTIONS http://o HTTP/1.1\r\nHost: o\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nHost: p\r\n\r\n",
	"GET /a HTTP/1.1\r\n\r\n",
	"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
	"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/2.0\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.2\r\nHost: o\r\n\r\n",
	// Expect, Upgrade, CONNECT, TRACE, hop-by-hop tricks.
	"POST /a HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.0\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"CONNECT o:443 HTTP/1.1\r\nHost: o:443\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"TRACE /a HTTP/1.1\r\nHost: o\r\nMax-Forwards: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\n\r\nx",
	"GET /a HTTP/1.1\r\nHost: o\r\nVia: 1.1 " + testViaName + "\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 10\r\n\r\nhello",
	"GET /a HTTP/1.1\r\nHost: o\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nConnection: Host, X-A\r\nX-A: 1\r\nX-B: 2\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.0\r\nContent-Length: 5\r\n\r\nworld",
	"POST /a HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"HEAD /a HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"TRACE /a HTTP/1.1\r\nHost: o\r\nMax-Forwards: 1\r\n\r\n",
	"GET https://o/x HTTP/1.1\r\nHost: o\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: o\r\nProxy-Connection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: o\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\nPOST /b HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1\r\nx\r\n", 40) + "0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
}

// FuzzProxyRequests sends arbitrary bytes to the proxy as a client's
// requests, and checks that the origin gets only requests the client
// sent, whole, in order and plainly framed, that nothing after a framing
// error reaches it, and that each response the client gets answers its
// request.
func FuzzProxyRequests(f *testing.F) {
	for i, s := range fuzzRequestSeeds {
		f.Add([]byte(s), uint16(0), uint8(0))
		if i%2 == 0 {
			f.Add([]byte(s), uint16(len(s)*2/3), uint8(i/2%3))
		}
	}
	// Bodies over what the proxy looks at before it connects (64 KiB),
	// broken after it, written in two pieces, answered early.
	big := strings.Repeat("z", 70000)
	chunk := fmt.Sprintf("%x\r\n%s\r\n", len(big), big)
	next := "GET /b HTTP/1.1\r\nHost: o\r\n\r\n"
	for i, s := range []string{
		"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "0\r\n\r\n" + next,
		"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "zz\r\n\r\n" + next,
		"POST /a HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "0\r\nX: y\n\r\n" + next,
		"POST /a HTTP/1.1\r\nHost: o\r\nContent-Length: 70000\r\n\r\n" + big + next,
		"POST /a HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 70000\r\n\r\n" + big + next,
		"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 70000\r\n\r\n" + big + next,
	} {
		f.Add([]byte(s), uint16(60000), uint8(i%3))
		f.Add([]byte(s), uint16(100), uint8((i+1)%3))
	}
	o := newFuzzOrigin(f, func(_ int, m *refMsg) ([]byte, bool) {
		return []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Echo: " + fuzzEcho(m) + "\r\n\r\n"), true
	})
	p := startFuzzProxy(f, o.ln.Addr().String())
	f.Fuzz(func(t *testing.T, in []byte, split uint16, early uint8) {
		if len(in) == 0 || len(in) > 64<<10 {
			return
		}
		checkRequests(t, p, o, in, split, early)
	})
}

// fuzzR2 is the origin's answer to the second request of a
// FuzzProxyResponses iteration.
const fuzzR2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Id: r2\r\n\r\nok"

// respOrigin answers /r1 with the current iteration's bytes.
type respOrigin struct {
	mu   sync.Mutex
	resp []byte
	keep bool
}

// checkResponses runs one FuzzProxyResponses iteration: the origin
// answers "GET /r1" with resp, then closes unless keep; then "GET /r2"
// goes through the proxy.
func checkResponses(t *testing.T, p *fuzzProxy, o *fuzzOrigin, ro *respOrigin, resp []byte, keep, http10, head bool, split uint16) {
	ro.mu.Lock()
	ro.resp, ro.keep = resp, keep
	ro.mu.Unlock()
	o.mu.Lock()
	o.split = int(split)
	o.mu.Unlock()
	mark := o.mark()

	// What the origin sent, read as a client would: interim responses,
	// then the final one, its body, and what follows it.
	var want *refMsg
	wantErr := error(nil)
	b := resp
	for {
		if head {
			// A response to HEAD ends with its head whatever its
			// fields say (RFC 9112 §6.3 rule 1, before the rules on
			// Transfer-Encoding and Content-Length).
			want, wantErr = refReadHead(b, false, true)
			if wantErr == nil {
				want.framing, want.n, want.keepAlive = refNoBody, want.headLen, refKeep(want, want.minor >= 1)
			}
		} else {
			want, wantErr = refReadMessage(b, false, true, !keep)
		}
		if wantErr != nil || want.status >= 200 || want.status == 101 {
			break
		}
		b = b[want.n:]
	}
	var extra []byte
	if wantErr == nil {
		extra = b[want.n:]
	}
	valid := wantErr == nil && want.status != 101
	clean := valid && keep && want.keepAlive && len(extra) == 0
	// Bytes after the response that come in a write of their own, when
	// the next request may already be on its way: nobody can tell them
	// from its response (RFC 9112 §9.3.2), so the next request may get
	// anything.
	late := len(extra) > 0 && split > 0 && int(split) == len(resp)-len(extra)
	// An HTTP/1.0 client cannot be told a transfer coding (RFC 9112
	// §6.1): such a response is a 502 to it.
	codings10 := false
	if want != nil && http10 {
		for _, c := range want.list("Transfer-Encoding") {
			codings10 = codings10 || !strings.EqualFold(c, "chunked")
		}
	}

	c1, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	// An HTTP/1.0 client gets a chunked body close-delimited, and a cut
	// one ended with a reset.
	r1 := "GET /r1 HTTP/1.1\r\nHost: fuzz\r\n\r\n"
	if http10 {
		r1 = "GET /r1 HTTP/1.0\r\nHost: fuzz\r\n\r\n"
	}
	if head {
		r1 = "HEAD" + r1[3:]
	}
	if _, err := io.WriteString(c1, r1); err != nil {
		t.Fatal(err)
	}
	resps, partial, rest, closed := readResponses(t, c1, func(int) bool { return http10 }, func(int) bool { return head }, func(n int) bool { return n >= 1 })
	failed := false
	fail := func(format string, args ...any) {
		t.Helper()
		if failed {
			return
		}
		failed = true
		var sb strings.Builder
		fmt.Fprintf(&sb, format, args...)
		fmt.Fprintf(&sb, "\norigin sent %q keep %v split %d, client HTTP/1.0 %v HEAD %v\nreference: err %v", resp, keep, split, http10, head, wantErr)
		if want != nil {
			fmt.Fprintf(&sb, " status %d body %q extra %q", want.status, want.body, extra)
		}
		for i, r := range resps {
			fmt.Fprintf(&sb, "\nclient response %d: %d body %q", i, r.status, r.body)
		}
		if partial != nil {
			fmt.Fprintf(&sb, "\nclient partial: %d body %q", partial.status, partial.body)
		}
		fmt.Fprintf(&sb, "\nclient unread %q closed %v", rest, closed)
		for _, e := range o.since(mark) {
			fmt.Fprintf(&sb, "\norigin conn %d: err %v raw %q", e.conn, e.err, e.raw)
		}
		t.Fatal(sb.String())
	}
	reuse := false
	switch {
	case len(resps) > 1:
		fail("%d responses to one request", len(resps))
	case len(resps) == 1:
		r := resps[0]
		_, own := r.get("X-Id")
		switch {
		case valid && r.status == want.status && bytes.Equal(r.body, want.body):
		case codings10 && r.status == 502 && !own:
		case !valid && (r.status == 502 || r.status == 504) && !own:
			// The documented error, when nothing went to the client.
		case !valid && want != nil && errors.Is(wantErr, errRefMore) && !keep && want.framing == refClose:
			fail("close-delimited body not relayed")
		default:
			fail("client got %d %q", r.status, r.body)
		}
		reuse = r.keepAlive && !closed
	case partial != nil:
		// Cut mid-body: only when the origin's body did not come whole,
		// and with a prefix of it.
		if valid {
			fail("a whole response was cut")
		}
		if want == nil || partial.status != want.status || !bytes.HasPrefix(want.body, partial.body) {
			fail("cut response %d %q is not a prefix of what the origin sent", partial.status, partial.body)
		}
		if !closed {
			fail("a cut response left its connection open")
		}
	default:
		if !closed {
			fail("no response within %v", fuzzDeadline)
		}
		fail("connection closed without a response")
	}

	// The second request: on the same connection if it stays open.
	c2 := c1
	if !reuse {
		_ = c1.Close()
		if c2, err = net.Dial("tcp", p.addr); err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
	}
	if _, err := io.WriteString(c2, "GET /r2 HTTP/1.1\r\nHost: fuzz\r\n\r\n"); err != nil {
		fail("second request: %v", err)
	}
	resps2, _, _, _ := readResponses(t, c2, func(int) bool { return false }, func(int) bool { return false }, func(n int) bool { return n >= 1 })
	if !late {
		if len(resps2) != 1 {
			fail("second request: %d responses", len(resps2))
		}
		if id, _ := resps2[0].get("X-Id"); resps2[0].status != 200 || string(resps2[0].body) != "ok" || id != "r2" {
			fail("second request answered %d %q X-Id %q", resps2[0].status, resps2[0].body, id)
		}
	}
	_ = c2.Close()
	_ = c1.Close()
	settle(t, p, o)

	// Where the requests went.
	r1conn, r2conn, r2n := -1, -1, 0
	for _, e := range o.since(mark) {
		switch {
		case e.err != nil:
			fail("the origin could not read a forwarded request: %v", e.err)
		case e.partial != nil:
			fail("the origin got part of a request: %q", e.partial)
		case e.msg.target == "/r1":
			r1conn = e.conn
		case e.msg.target == "/r2":
			r2conn, r2n = e.conn, r2n+1
		}
	}
	if late {
		return
	}
	if r1conn < 0 || r2n != 1 {
		fail("the origin got /r1 on %d, /r2 %d times", r1conn, r2n)
	}
	if !clean && r2conn == r1conn {
		fail("/r2 went on the connection of /r1, which ended in a protocol error or a close")
	}
	if !clean && keep {
		// The proxy closes that connection.
		for end := time.Now().Add(fuzzDeadline); !o.isClosed(r1conn); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(end) {
				fail("the connection of /r1 stays open after a protocol error")
			}
		}
	}
}

// fuzzResponseSeeds are hostile responses to "GET /r1".
var fuzzResponseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
	"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
	// Extra bytes after the response: a second response nobody asked for.
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Id: r2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello",
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Id: r2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Id: r2\r\n\r\nok",
	// Short bodies.
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
	"",
	// Conflicting framing.
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	// Broken chunks.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
	// Heads the proxy must refuse or normalize.
	"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
	"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
	"garbage\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	// Interim responses.
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"v\"\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\r\n",
	"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("b", 70000),
}

// FuzzProxyResponses has the origin answer one request with arbitrary
// bytes, and checks that the client gets that response with the body the
// origin framed, or the documented 502, or a connection closed mid-body;
// that the next request gets its own answer; and that an upstream
// connection that saw a protocol error is not used again.
func FuzzProxyResponses(f *testing.F) {
	for i, s := range fuzzResponseSeeds {
		f.Add([]byte(s), true, false, false, uint16(0))
		f.Add([]byte(s), false, false, false, uint16(0))
		if i%2 == 0 {
			f.Add([]byte(s), i%4 == 0, false, i%3 == 0, uint16(len(s)/2))
		} else {
			f.Add([]byte(s), i%4 == 1, true, i%3 == 0, uint16(i%3*len(s)/3))
		}
	}
	// Bodies of more than one read, cut, followed by bytes nobody asked
	// for, to HEAD and HTTP/1.0 requests too.
	big := strings.Repeat("z", 70000)
	chunk := fmt.Sprintf("%x\r\n%s\r\n", len(big), big)
	for i, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + big,
		"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + big[:50000],
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "zz\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "0\r\n\r\n" + fuzzR2,
		"HTTP/1.1 200 OK\r\n\r\n" + big,
	} {
		f.Add([]byte(s), true, i%2 == 1, i%3 == 0, uint16(60000))
		f.Add([]byte(s), i%2 == 0, false, i%3 == 1, uint16(38))
	}
	ro := &respOrigin{}
	o := newFuzzOrigin(f, func(_ int, m *refMsg) ([]byte, bool) {
		if m.target == "/r1" {
			ro.mu.Lock()
			defer ro.mu.Unlock()
			return ro.resp, ro.keep
		}
		return []byte(fuzzR2), true
	})
	p := startFuzzProxy(f, o.ln.Addr().String())
	f.Fuzz(func(t *testing.T, resp []byte, keep, http10, head bool, split uint16) {
		if len(resp) > 128<<10 {
			return
		}
		checkResponses(t, p, o, ro, resp, keep, http10, head, split)
	})
}
