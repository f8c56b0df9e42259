package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"golang.org/x/sys/unix"
)

// stallingOrigin answers /ok and /slow (after 300 ms), and stalls on
// /stall (no response) and /stall-body (a head with Content-Length 1000
// and 10 bytes of body), reporting on got when it stalls (a request body
// read whole first) and on closed what its read of the stalled
// connection returned: the proxy's close, or a timeout after 30 s.
func stallingOrigin(t *testing.T) (o *bench.Origin, got chan string, closed chan error) {
	got, closed = make(chan string, 8), make(chan error, 8)
	o = bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			switch req.URL.Path {
			case "/stall", "/stall-body":
				if req.URL.Path == "/stall-body" {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
				}
				got <- req.URL.Path
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := br.ReadByte()
				closed <- err
				return
			case "/slow":
				time.Sleep(300 * time.Millisecond)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	return o, got, closed
}

// TestClientResetAbortsUpstream: a client that resets its connection
// while its request waits for a stalled origin's head, or while the body
// streams and the origin stalls, has the proxy close the upstream
// connection at once (the origin sees it closed within 2 s, with the
// response-header timeout at its 60 s), as nginx does for a client that
// went away (its 499), rather than hold it, and the origin's work, for
// the whole timeout. The access log says the client cut it (status 0
// when no head went out), the engine counts a caller error, not the
// upstream's, nothing is pooled or retried, and the next client is
// served. On netpoll, and on a connection detached for a chunked upload
// (Go net).
func TestClientResetAbortsUpstream(t *testing.T) {
	for _, tc := range []struct {
		name, req, path string
		headFirst       bool   // the client reads the head and 10 body bytes before its reset
		want            string // in the access line
	}{
		{"awaiting head", "GET /stall HTTP/1.1\r\nHost: a\r\n\r\n", "/stall", false, " status=0 bytes=0 "},
		{"mid-body", "GET /stall-body HTTP/1.1\r\nHost: a\r\n\r\n", "/stall-body", true, " status=200 bytes=10 "},
		{"awaiting head, detached", "POST /stall HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			"/stall", false, " status=0 bytes=0 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bench.CheckLeaks(t)
			o, got, closed := stallingOrigin(t)
			var logs syncBuffer
			p, px := startLoggedProxy(t, &logs, "http://"+o.Addr())
			c, br := dialClient(t, px)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the origin got no request")
			}
			if tc.headFirst {
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("%v %v", resp, err)
				}
				if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
					t.Fatal(err)
				}
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			select {
			case err := <-closed:
				if !errors.Is(err, io.EOF) {
					t.Fatalf("the origin's read: %v, want EOF (the proxy's close)", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the upstream connection is still open 2s after the client's reset")
			}
			line := accessLine(t, &logs, tc.path)
			t.Log(line)
			if !strings.Contains(line, tc.want) || !strings.Contains(line, " cut=client ") ||
				!strings.Contains(line, `err="client reset the connection: `) {
				t.Errorf("access line %s: want%s cut=client err=\"client reset the connection: ...\"", line, tc.want)
			}
			s := p.eng.Stats()[o.Addr()]
			if s.CallerErrors != 1 || len(s.Errors) != 0 || s.Canceled != 0 || s.Retries != 0 || s.Pool.Idle != 0 || s.Pool.Dialed != 1 {
				t.Errorf("stats: %d caller errors, errors %v, %d canceled, %d retries, pool %+v; want one caller error, nothing else, no connection kept",
					s.CallerErrors, s.Errors, s.Canceled, s.Retries, s.Pool)
			}
			c2, br2 := dialClient(t, px)
			if _, err := io.WriteString(c2, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br2, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("the next client: %d %q %v", resp.StatusCode, b, err)
			}
		})
	}
}

// TestClientHalfCloseSlowOrigin: a client that shuts down its sending
// side after its request (nc -N) sent a FIN, not a reset: it still gets
// the response of an origin that takes its time, on netpoll and on a
// detached connection.
func TestClientHalfCloseSlowOrigin(t *testing.T) {
	o, _, _ := stallingOrigin(t)
	var logs syncBuffer
	_, px := startLoggedProxy(t, &logs, "http://"+o.Addr())
	for _, req := range []string{
		"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	} {
		c, _ := dialClient(t, px)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || !strings.HasSuffix(string(all), "\r\n\r\nslow") {
			t.Fatalf("%.20q then half-close: %v, got %q", req, err, all)
		}
	}
}

// TestClientResetMidDownloadFromNginx: a client that resets its
// connection in the middle of a large download from a real nginx, one
// that has stopped sending (limit_rate 1 past the first MiB: a slow
// report, a stalled response), has the proxy close its connection to
// nginx at once, not pool it, and count a caller error; the next client
// is served on a new connection.
func TestClientResetMidDownloadFromNginx(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /files/stalls {
            sendfile off;
            limit_rate_after 1m;
            limit_rate 1;
        }`})
	const size = 4 << 20
	writeRandomFile(t, filepath.Join(ng.Dir(), "html", "files", "stalls"), size)
	var logs syncBuffer
	p, px := startLoggedProxy(t, &logs, "http://"+ng.Addr())
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "GET /files/stalls HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("%v %v", resp, err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
	reset := time.Now()
	up := ng.Addr()
	for s := p.eng.Stats()[up]; s.Pool.Busy != 0 || s.Pool.Closed.Owner != 1; s = p.eng.Stats()[up] {
		if time.Since(reset) > 2*time.Second {
			t.Fatalf("pool %+v 2s after the client's reset: want the connection closed by the proxy", s.Pool)
		}
		time.Sleep(5 * time.Millisecond)
	}
	line := accessLine(t, &logs, "/files/stalls")
	if !strings.Contains(line, " status=200 ") || !strings.Contains(line, " cut=client ") {
		t.Errorf("access line %s: want status=200 cut=client", line)
	}
	if s := p.eng.Stats()[up]; s.CallerErrors != 1 || len(s.Errors) != 0 || s.Pool.Idle != 0 {
		t.Errorf("stats: %d caller errors, errors %v, %d idle; want one caller error, no connection kept", s.CallerErrors, s.Errors, s.Pool.Idle)
	}
	if out, _ := curl(t, "http://"+px+"/small"); out != bench.SmallBody {
		t.Fatalf("the next client: %q", out)
	}
	if s := p.eng.Stats()[up]; s.Pool.Dialed != 2 {
		t.Errorf("%d dials, want 2: the next request on a new connection", s.Pool.Dialed)
	}
}

// TestClientFINNotTakenForResetOnReusedFd: netpoll runs OnDisconnect on
// a goroutine of its own, after its poller let go of the fd, and a
// request served meanwhile may take the connection off netpoll (a
// chunked upload detaches it), which closes that fd: the connection goes
// on with a duplicate, and the fd's number may be another socket's, a
// reset one, by the time OnDisconnect looks at it. A client that sent a
// chunked POST and then its FIN still gets its answer: OnDisconnect looks
// at its own socket, or not at all. Hooks order it: the request waits
// for OnDisconnect (the client's FIN), which waits until the connection
// is detached and a reset socket of the test's has its old fd number.
func TestClientFINNotTakenForResetOnReusedFd(t *testing.T) {
	bench.CheckLeaks(t)
	o, _, _ := stallingOrigin(t)
	var (
		armed        atomic.Bool
		victim       atomic.Pointer[clientConn]
		victimFd     atomic.Int32
		disconnected = make(chan struct{})
		reused       = make(chan struct{})
		hookTimeout  atomic.Bool
	)
	wait := func(ch chan struct{}) {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			hookTimeout.Store(true)
		}
	}
	ccfg := clientConfig{AccessLog: true, ViaName: testViaName,
		prepareHook: func(cc *clientConn) {
			if armed.Load() {
				victimFd.Store(int32(cc.c.(interface{ Fd() int }).Fd()))
				victim.Store(cc)
			}
		},
		requestHook: func(cc *clientConn) {
			if cc == victim.Load() {
				wait(disconnected)
			}
		},
		disconnectHook: func(cc *clientConn) {
			if cc == victim.Load() {
				close(disconnected)
				wait(reused)
			}
		},
	}
	px := startProxyClient(t, engine.Config{}, ccfg, "http://"+o.Addr())
	ln, err := net.Listen("tcp", "127.0.0.1:0") // before the fd number is free
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A keep-alive upstream connection for the upload's request, so that
	// no dial takes the fd number the detach frees.
	w, wbr := dialClient(t, px)
	if _, err := io.WriteString(w, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(wbr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm-up: %v %v", resp, err)
	}
	armed.Store(true)

	c, _ := dialClient(t, px)
	// The request comes once OnConnect is done: netpoll would otherwise
	// run OnDisconnect after it, before the request's hook.
	waitFor(t, "the connection idle", func() bool {
		cc := victim.Load()
		return cc != nil && cc.state.Load() == stIdle
	})
	if _, err := io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnDisconnect for the client's FIN")
	}
	waitFor(t, "the connection detached", func() bool { return victim.Load().detached.Load() })
	n := int(victimFd.Load())
	rc := resetSocketAt(t, ln, n)
	defer rc.Close()
	close(reused)
	all, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || !strings.HasSuffix(string(all), "\r\n\r\nslow") {
		t.Fatalf("the half-closed client's POST: %v, got %q", err, all)
	}
	if hookTimeout.Load() {
		t.Fatal("a hook timed out")
	}
}

// resetSocketAt returns a connection to ln whose socket has fd number n,
// free, and which ln's side has reset (TCP_CLOSE).
func resetSocketAt(t *testing.T, ln net.Listener, n int) net.Conn {
	t.Helper()
	var holes []int
	defer func() {
		for _, fd := range holes {
			syscall.Close(fd)
		}
	}()
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd >= n {
			syscall.Close(fd)
			break
		}
		holes = append(holes, fd)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	_ = s.(*net.TCPConn).SetLinger(0)
	s.Close()
	fd := -1
	if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
		_ = rc.Control(func(f uintptr) { fd = int(f) })
	}
	var state uint8
	for range 100 {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			state = ti.State
		}
		if state == tcpClose {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fd != n || state != tcpClose {
		c.Close()
		t.Fatalf("the reset socket has fd %d (want %d), state %d (want %d)", fd, n, state, tcpClose)
	}
	return c
}
