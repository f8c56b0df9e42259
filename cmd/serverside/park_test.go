package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// startParkProxy serves a reverse proxy to origin with client config ccfg
// and an access log in logs, and returns it and its address.
func startParkProxy(t *testing.T, ccfg clientConfig, logs *syncBuffer, origin string) (*proxy, string) {
	t.Helper()
	w := io.Writer(io.Discard)
	if logs != nil {
		w = logs
	}
	logger := slog.New(slog.NewTextHandler(w, nil))
	p, err := newProxy(logger, []string{origin}, engine.Config{Shards: 2, Logger: logger}, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, serveProxy(t, p)
}

// syncBuffer is a bytes.Buffer for a logger written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// getSmall sends GET /small on rc and checks the 200.
func (rc *rawClient) getSmall(t *testing.T, query string) {
	t.Helper()
	rc.write(t, "GET /small?"+query+" HTTP/1.1\r\nHost: demo\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody || resp.Close {
		t.Fatalf("%s: %d %q close %v, want 200 %q kept alive", query, resp.StatusCode, body, resp.Close, bench.SmallBody)
	}
}

// TestParkAndResume: keep-alive client connections idle for ParkAfter
// leave netpoll for the parking lot, and a request on one (a pipelined
// pair on another) is served as before, with the client's address in the
// access log; then they park again. The origin sees every request once.
func TestParkAndResume(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var logs syncBuffer
	p, px := startParkProxy(t, clientConfig{ParkAfter: 30 * time.Millisecond, AccessLog: true}, &logs, "http://"+ng.Addr())

	const n = 8
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, px)
		clients[i].getSmall(t, fmt.Sprintf("c=%d&n=1", i))
	}
	waitFor(t, "all connections parked", func() bool { return p.parked() == n })
	for i, rc := range clients[:n-1] {
		rc.getSmall(t, fmt.Sprintf("c=%d&n=2", i))
	}
	last := clients[n-1]
	last.write(t, "GET /small?p=1 HTTP/1.1\r\nHost: demo\r\n\r\nGET /small?p=2 HTTP/1.1\r\nHost: demo\r\n\r\n")
	for range 2 {
		if resp, body := last.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
			t.Fatalf("pipelined after parking: %d %q", resp.StatusCode, body)
		}
	}
	waitFor(t, "the connections parked again", func() bool { return p.parked() == n })
	waitFor(t, "nginx's log of every request", func() bool { return len(ng.Requests()) >= 2*n+1 })
	if got := len(ng.Requests()); got != 2*n+1 {
		t.Fatalf("nginx saw %d requests, want %d", got, 2*n+1)
	}
	if open := p.metrics.open.Load(); open != n {
		t.Fatalf("%d client connections open, want %d", open, n)
	}
	// Each connection's requests are logged with its client's address.
	for i, rc := range clients[:n-1] {
		want := "remote=" + rc.c.LocalAddr().String() + " method=GET target=\"/small?c=" + fmt.Sprint(i) + "&n=2\""
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("access log has no %q:\n%s", want, logs.String())
		}
	}
}

// TestParkedClientGoes: a parked connection whose client closes it, one
// whose client sends a last request and its FIN, and one that the idle
// timeout ends, are closed and forgotten, the second after its response;
// a client of the third reads the end of its connection.
func TestParkedClientGoes(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond, IdleTimeout: 400 * time.Millisecond}, nil,
		"http://"+ng.Addr())

	gone, stays, last := dialRaw(t, px), dialRaw(t, px), dialRaw(t, px)
	gone.getSmall(t, "gone")
	stays.getSmall(t, "stays")
	last.getSmall(t, "last")
	waitFor(t, "the connections parked", func() bool { return p.parked() == 3 })
	gone.c.Close()
	// A last request, and the client's FIN right behind it: served.
	last.write(t, "GET /small?last=2 HTTP/1.1\r\nHost: demo\r\n\r\n")
	if err := last.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if resp, body := last.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("request before the FIN: %d %q", resp.StatusCode, body)
	}
	if !last.eof(t) {
		t.Fatal("the half-closed connection stayed open")
	}
	waitFor(t, "the closed connections forgotten", func() bool { return p.metrics.open.Load() == 1 && p.parked() == 1 })
	if !stays.eof(t) {
		t.Fatal("the idle timeout did not close the parked connection")
	}
	waitFor(t, "no connection left", func() bool { return p.metrics.open.Load() == 0 && p.parked() == 0 && p.live() == 0 })
}

// TestParkShutdown: Shutdown closes parked connections at once, like idle
// ones, and the lot with the listener.
func TestParkShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + ng.Addr()}, engine.Config{Shards: 2, Logger: logger},
		clientConfig{ParkAfter: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr, done := startServe(t, p)
	rc := dialRaw(t, addr)
	rc.getSmall(t, "a")
	waitFor(t, "the connection parked", func() bool { return p.parked() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if !rc.eof(t) {
		t.Fatal("parked connection not closed by shutdown")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after shutdown")
	}
}

// TestParkRace: clients send their next request around the time their
// connection parks (ParkAfter 2 ms, the sweeper's tick 10 ms, pauses of
// 0 to 12 ms), so that some arrive while it leaves netpoll. None is lost
// or answered twice: each gets its own response, and the origin sees each
// request once.
func TestParkRace(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	p, px := startParkProxy(t, clientConfig{ParkAfter: 2 * time.Millisecond}, nil, "http://"+ng.Addr())

	const clients, rounds = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", px)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			rc := &rawClient{c: c, br: bufio.NewReader(c)}
			for r := range rounds {
				time.Sleep(time.Duration((i*7+r*5)%13) * time.Millisecond)
				if _, err := fmt.Fprintf(c, "GET /small?c=%d&r=%d HTTP/1.1\r\nHost: demo\r\n\r\n", i, r); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(rc.br, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: %w", i, r, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || string(body) != bench.SmallBody {
					errs <- fmt.Errorf("client %d round %d: %d %q %v", i, r, resp.StatusCode, body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "nginx's log of every request", func() bool { return len(ng.Requests()) >= clients*rounds })
	reqs := ng.Requests()
	seen := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		if seen[r.URI] {
			t.Fatalf("nginx saw %s twice", r.URI)
		}
		seen[r.URI] = true
	}
	if len(reqs) != clients*rounds {
		t.Fatalf("nginx saw %d requests, want %d", len(reqs), clients*rounds)
	}
	if p.metrics.accepted.Load() != clients {
		t.Fatalf("%d connections accepted, want %d", p.metrics.accepted.Load(), clients)
	}
}

// TestParkAsRequestStarts: the sweeper parks a connection just as
// OnRequest, called for a request's bytes, is about to take it out of
// idle. The request is served (from the buffered bytes, off netpoll), not
// dropped as if its connection had been closed as idle, which left the
// client waiting for an answer on a connection parked without it
// (TestParkRace's lost request).
func TestParkAsRequestStarts(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var armed atomic.Bool
	parked := make(chan bool, 1)
	hook := func(cc *clientConn) {
		if armed.CompareAndSwap(true, false) {
			parked <- cc.park() // what the sweeper does, just then
		}
	}
	_, px := startParkProxy(t, clientConfig{ParkAfter: time.Minute, IdleTimeout: 2 * time.Minute, requestHook: hook}, nil,
		"http://"+ng.Addr())

	rc := dialRaw(t, px)
	rc.getSmall(t, "r=1")
	armed.Store(true)
	rc.getSmall(t, "r=2")
	if !<-parked {
		t.Fatal("the park as the request started did not happen")
	}
	rc.getSmall(t, "r=3")
	waitFor(t, "nginx's log of the three requests", func() bool { return len(ng.Requests()) >= 3 })
	var uris []string
	for _, r := range ng.Requests() {
		uris = append(uris, r.URI)
	}
	if want := []string{"/small?r=1", "/small?r=2", "/small?r=3"}; !slices.Equal(uris, want) {
		t.Fatalf("nginx saw %q, want %q", uris, want)
	}
}

// TestNoParkBeforeRegistered: a sweeper's tick that comes while netpoll
// takes a connection (just accepted, or given back by the lot for the
// bytes its client sent) but has not registered its fd yet does not park
// it. Parked then, its close ran before netpoll's registration: before
// onPrepare's close callback, it closed the fd and left the connection
// parking for good; after it, netpoll registered the fd number it had
// closed, by then maybe a parked connection's, which netpoll's
// registration of that connection when the lot gave it back then failed
// (EEXIST), closing it.
func TestNoParkBeforeRegistered(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var mu sync.Mutex
	var parked []bool
	hook := func(cc *clientConn) {
		// What the sweeper does with a connection idle for ParkAfter.
		ok := cc.park()
		mu.Lock()
		parked = append(parked, ok)
		mu.Unlock()
	}
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond, IdleTimeout: time.Minute, prepareHook: hook}, nil,
		"http://"+ng.Addr())

	rc := dialRaw(t, px)
	rc.getSmall(t, "new")
	waitFor(t, "the connection parked", func() bool { return p.parked() == 1 })
	rc.getSmall(t, "unparked")
	waitFor(t, "the connection parked again", func() bool { return p.parked() == 1 })
	rc.getSmall(t, "again")
	mu.Lock()
	defer mu.Unlock()
	if want := []bool{false, false, false}; !slices.Equal(parked, want) {
		t.Fatalf("parks while netpoll takes the connection: %v, want %v (refused)", parked, want)
	}
	if p.metrics.accepted.Load() != 1 {
		t.Fatalf("%d connections accepted, want 1", p.metrics.accepted.Load())
	}
}

// TestNTLMSessionParks: a client connection whose NTLM login pinned an
// upstream connection parks while idle and keeps its session: its next
// request goes, without credentials, over the pinned connection, which
// Squid serves only because it is the authenticated one.
func TestNTLMSessionParks(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: extra})
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond}, nil, "http://"+sq.Addr())

	rc := dialRaw(t, px)
	rc.handshake(t, "parker")
	waitPinned(t, p, 1)
	waitFor(t, "the connection parked", func() bool { return p.parked() == 1 })
	rc.getSmall(t, "after=park")
	lines := plog.lines(t, 3)
	if len(lines) != 3 || lines[2].port != lines[1].port || lines[2].status != 200 || lines[2].user != `DOM\parker` {
		t.Fatalf("Squid's log: want the request after parking on the login's connection, as parker:\n%+v", lines)
	}
	rc.c.Close()
	waitPinned(t, p, 0)
}

// TestParkingNeedsNetpollInternals fails when netpoll no longer has what
// quiesce relies on (an upgrade changed its internals): parking would
// then be off without a word.
func TestParkingNeedsNetpollInternals(t *testing.T) {
	ln, err := netpoll.CreateListener("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := netpoll.DialConnection("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !canQuiesce(c) {
		t.Fatal("netpoll's connection operator or its state is not where quiesce looks")
	}
}

// TestQuiesceLeavesPoller: quiesce takes the fd out of netpoll's epoll
// set itself, whether or not netpoll's close did (it does not when a
// Close from another goroutine meets a handler just returning), so a
// parked fd is never left registered there; netpoll's own deregistration
// afterwards is a no-op.
func TestQuiesceLeavesPoller(t *testing.T) {
	ln, err := netpoll.CreateListener("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := netpoll.DialConnection("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fd := c.(interface{ Fd() int }).Fd()
	if !inEpollSet(t, fd) {
		t.Fatalf("fd %d is not in any epoll set before quiesce", fd)
	}
	quiesce(c)
	if inEpollSet(t, fd) {
		t.Fatalf("fd %d is still in an epoll set after quiesce", fd)
	}
}

// inEpollSet reports whether fd is registered in one of this process's
// epoll sets (their /proc fdinfo lists it as a "tfd").
func inEpollSet(t *testing.T, fd int) bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("tfd: %8d ", fd)
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err == nil && strings.Contains(string(info), want) {
			return true
		}
	}
	return false
}

// TestDetachedParks: a connection that left netpoll for a large upload
// (served on Go net I/O since) parks once idle and comes back on netpoll
// with its next request; a chunked upload without "Expect" on it detaches
// it again, and it parks again.
func TestDetachedParks(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	p, px := startParkProxy(t, clientConfig{ParkAfter: 30 * time.Millisecond}, nil, "http://"+ng.Addr())
	body := bench.PatternBody(3 << 20)
	detached := func() int {
		n := 0
		p.each(func(cc *clientConn) {
			if cc.detached.Load() {
				n++
			}
		})
		return n
	}

	rc := dialRaw(t, px)
	rc.write(t, fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: demo\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body)))
	if resp, _ := rc.read(t); resp.StatusCode != 100 {
		t.Fatalf("want 100 Continue, got %d", resp.StatusCode)
	}
	if detached() != 1 {
		t.Fatal("the upload did not detach its connection")
	}
	rc.write(t, string(body))
	if resp, reply := rc.read(t); resp.StatusCode != 200 || reply != fmt.Sprintf("%d\n", len(body)) {
		t.Fatalf("upload: %d %q", resp.StatusCode, reply)
	}
	waitFor(t, "the detached connection parked", func() bool { return p.parked() == 1 && detached() == 0 })
	rc.getSmall(t, "back")
	if detached() != 0 {
		t.Fatal("the connection did not come back on netpoll")
	}
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	rc.write(t, "POST /echo HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n"+chunked)
	if resp, reply := rc.read(t); resp.StatusCode != 200 || reply != fmt.Sprintf("%d\n", len(body)) {
		t.Fatalf("chunked upload: %d %q", resp.StatusCode, reply)
	}
	waitFor(t, "the connection parked again", func() bool { return p.parked() == 1 && detached() == 0 })
	rc.getSmall(t, "again")
	if open := p.metrics.open.Load(); open != 1 {
		t.Fatalf("%d client connections open, want 1", open)
	}
}

// TestParkClientClosesDuringHandOver: a client that closes its idle
// connection just as the sweeper takes it off netpoll (netpoll's poller
// sees the close before the sweeper's call to leave netpoll) has its
// connection closed and forgotten, not left in the lot on a closed fd
// whose number a later connection reuses.
func TestParkClientClosesDuringHandOver(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var (
		once   sync.Once
		target net.Conn
	)
	ready := make(chan struct{})
	hook := func(cc *clientConn) {
		<-ready
		once.Do(func() {
			target.Close()
			// Until netpoll's poller took the close and ran the close
			// callbacks.
			deadline := time.Now().Add(5 * time.Second)
			for cc.state.Load() == stParking && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		})
	}
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond, IdleTimeout: time.Minute, parkHook: hook}, nil,
		"http://"+ng.Addr())

	rc := dialRaw(t, px)
	rc.getSmall(t, "a")
	target = rc.c
	close(ready)
	waitFor(t, "the closed connection forgotten", func() bool {
		return p.metrics.open.Load() == 0 && p.parked() == 0 && p.live() == 0
	})
	// The proxy still serves, and parks, new connections.
	next := dialRaw(t, px)
	next.getSmall(t, "b")
	waitFor(t, "the new connection parked", func() bool { return p.parked() == 1 })
	next.getSmall(t, "c")
}

// TestAcceptOutOfFds: while the process is out of fds, the lot stops
// accepting for a moment and tries again, without netpoll's back-off
// (which from the second time on spins, starting a goroutine per try);
// parked connections are served meanwhile, and the clients waiting in the
// listen queue once fds are free again. Twice in a row.
func TestAcceptOutOfFds(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var nplog syncBuffer
	netpoll.SetLoggerOutput(&nplog)
	t.Cleanup(func() { netpoll.SetLoggerOutput(os.Stderr) })
	var logs syncBuffer
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond}, &logs, "http://"+ng.Addr())

	parked := dialRaw(t, px)
	parked.getSmall(t, "parked=0")
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
	for round := range 2 {
		waitFor(t, "the connection parked", func() bool { return p.parked() == 1 })
		// Take every fd the limit leaves, then free one for a client
		// socket: the proxy's accept finds none.
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		low := lim
		low.Cur = uint64(len(ents) + 16)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
		var hold []int
		for range 64 {
			fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				break
			}
			hold = append(hold, fd)
		}
		syscall.Close(hold[len(hold)-1])
		hold = hold[:len(hold)-1]
		c, err := net.Dial("tcp", px)
		if err != nil {
			t.Fatal(err)
		}
		waiting := &rawClient{c: c, br: bufio.NewReader(c)}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		waitFor(t, "the proxy out of fds", func() bool {
			return strings.Count(logs.String(), "accept client connection") > round || strings.Contains(nplog.String(), "too many open files")
		})
		// A parked connection needs no new fd.
		parked.getSmall(t, fmt.Sprintf("parked=%d", round+1))
		for _, fd := range hold {
			syscall.Close(fd)
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		waiting.getSmall(t, fmt.Sprintf("waiting=%d", round))
		c.Close()
	}
	if strings.Contains(nplog.String(), "accept conn failed") {
		t.Fatalf("netpoll saw accept fail:\n%.2000s", nplog.String())
	}
	if n := strings.Count(logs.String(), `msg="accept client connection; accepting again in a moment" err="too many open files"`); n != 2 {
		t.Fatalf("%d warnings of the accept failures, want one per time:\n%s", n, logs.String())
	}
}

// TestPinLostWhileParking: the engine ends the pinned session of a client
// connection (OnPinnedClosed) just as the connection parks. It is closed
// once parked, as an idle one is, so that its client reconnects and logs
// in again, rather than staying parked to have its next request answered
// with a 502.
func TestPinLostWhileParking(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var once sync.Once
	hook := func(cc *clientConn) {
		if !cc.authSeen.Load() {
			return
		}
		// What OnPinnedClosed does, from start to end, before the
		// connection is in the lot.
		once.Do(func() {
			cc.pinLost.Store(true)
			cc.closeIfIdle()
		})
	}
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond, IdleTimeout: time.Minute, parkHook: hook}, nil,
		"http://"+ng.Addr())

	rc := dialRaw(t, px)
	rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\nAuthorization: Basic dTpw\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if !rc.eof(t) {
		t.Fatal("the connection whose session ended stayed open")
	}
	waitFor(t, "the connection forgotten", func() bool {
		return p.metrics.open.Load() == 0 && p.parked() == 0 && p.live() == 0
	})
}

// TestIdleCloseAsRequestArrives: a sweeper's tick that finds a connection
// idle past the idle timeout just as its client's next request came in
// (netpoll has the bytes and is about to serve them) leaves it open, and
// the request is served, as nginx serves one that came in before its
// keepalive_timeout fired; closed, the client lost a request it had sent
// on an open connection, to a reset or an end of file before any byte of
// an answer. A connection idle with nothing come in is still closed.
func TestIdleCloseAsRequestArrives(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var armed atomic.Bool
	hook := func(cc *clientConn) {
		if armed.CompareAndSwap(true, false) {
			cc.closeIdleQuiet() // what the sweeper does past the idle timeout, just then
		}
	}
	p, px := startParkProxy(t, clientConfig{ParkAfter: -1, IdleTimeout: time.Minute, requestHook: hook}, nil,
		"http://"+ng.Addr())

	rc := dialRaw(t, px)
	rc.getSmall(t, "r=1")
	armed.Store(true)
	rc.getSmall(t, "r=2")
	rc.getSmall(t, "r=3")
	waitFor(t, "nginx's log of the three requests", func() bool { return len(ng.Requests()) >= 3 })
	var uris []string
	for _, r := range ng.Requests() {
		uris = append(uris, r.URI)
	}
	if want := []string{"/small?r=1", "/small?r=2", "/small?r=3"}; !slices.Equal(uris, want) {
		t.Fatalf("nginx saw %q, want %q", uris, want)
	}
	// Idle with nothing come in: closed. (The client has the response
	// before the handler marks the connection idle: wait for that.)
	waitFor(t, "the connection idle", func() bool {
		idle := false
		p.each(func(cc *clientConn) { idle = cc.state.Load() == stIdle })
		return idle
	})
	p.each(func(cc *clientConn) { cc.closeIdleQuiet() })
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := rc.br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want it closed", n, err)
	}
}

// TestIdleCloseAsRequestArrivesParked: TestIdleCloseAsRequestArrives for a
// parked connection, the usual state of one idle past the idle timeout
// (parking comes first): its client's next request is in the socket and
// the lot has yet to take it back for it (here the lot does not see the
// fd until the sweeper's tick is over). The tick leaves it parked, and
// the request is served once the lot takes it back. For a connection the
// lot keeps as a record (the sweeper's close is the lot's expire) and for
// one that authenticated, which keeps its clientConn.
func TestIdleCloseAsRequestArrivesParked(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	for _, whole := range []bool{false, true} {
		t.Run(fmt.Sprintf("whole=%v", whole), func(t *testing.T) {
			p, px := startParkProxy(t, clientConfig{ParkAfter: time.Minute, IdleTimeout: time.Minute}, nil, "http://"+ng.Addr())
			rc := dialRaw(t, px)
			creds := ""
			if whole {
				creds = "Authorization: Basic dTpw\r\n"
			}
			rc.write(t, "GET /small?r=1 HTTP/1.1\r\nHost: demo\r\n"+creds+"\r\n")
			if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
				t.Fatalf("r=1: %d %q", resp.StatusCode, body)
			}
			var cc *clientConn
			waitFor(t, "the connection idle", func() bool {
				p.each(func(c *clientConn) { cc = c })
				return cc != nil && cc.state.Load() == stIdle
			})
			if !cc.park() {
				t.Fatal("the idle connection did not park")
			}
			waitFor(t, "the connection parked", func() bool { return p.parked() == 1 })
			l := p.lot
			l.mu.Lock()
			fd := -1
			if whole {
				if cc.state.Load() == stParked {
					fd = cc.fd
				}
			} else {
				for i := range l.recs {
					if l.recs[i].kind == recParked {
						fd = i
					}
				}
			}
			if fd < 0 {
				l.mu.Unlock()
				t.Fatalf("parked connection not found (whole %v, state %v)", whole, cc.state.Load())
			}
			// The lot stops watching the fd, as if its event were still to come.
			err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
			l.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			rc.write(t, "GET /small?r=2 HTTP/1.1\r\nHost: demo\r\n\r\n")
			waitFor(t, "the request in the parked socket", func() bool { return hasData(fd) })
			// The sweeper's tick past the idle timeout, just then.
			if whole {
				cc.closeIdleQuiet()
				if st := cc.state.Load(); st != stParked {
					t.Fatalf("state %v after the idle close, want the connection still parked", st)
				}
			} else {
				l.expire(time.Now().Add(time.Hour).UnixNano())
			}
			if n := p.parked(); n != 1 {
				t.Fatalf("%d parked after the idle close, want the connection still parked", n)
			}
			l.mu.Lock()
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
			err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
			l.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
				t.Fatalf("r=2: %d %q, want 200 %q", resp.StatusCode, body, bench.SmallBody)
			}
			rc.getSmall(t, "r=3")
		})
	}
}

// TestParkedAsRecordResumes: a connection that never authenticated parks
// as a record, its clientConn dropped, and comes back with a new one that
// has its pin key, its client's address (in the access log) and its
// counters: parked and resumed ten times, with two pipelined requests
// each time, it serves them all in order, and it is still counted as one
// connection open, accepted once.
func TestParkedAsRecordResumes(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var keysMu sync.Mutex
	keys := make(map[string]map[uint64]bool) // client address → pin keys seen
	hook := func(cc *clientConn) {
		keysMu.Lock()
		defer keysMu.Unlock()
		a := cc.c.RemoteAddr().String()
		if keys[a] == nil {
			keys[a] = make(map[uint64]bool)
		}
		keys[a][cc.pinKey] = true
	}
	var logs syncBuffer
	p, px := startParkProxy(t, clientConfig{ParkAfter: 20 * time.Millisecond, IdleTimeout: time.Minute,
		AccessLog: true, requestHook: hook}, &logs, "http://"+ng.Addr())
	const n, rounds = 3, 10
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, px)
		clients[i].getSmall(t, fmt.Sprintf("c=%d&k=0", i))
	}
	inShards := func() int {
		m := 0
		for _, sh := range p.shards {
			sh.mu.Lock()
			m += len(sh.conns)
			sh.mu.Unlock()
		}
		return m
	}
	for k := 1; k <= rounds; k++ {
		waitFor(t, "the connections parked as records", func() bool {
			return p.parked() == n && p.lot.recN.Load() == n && inShards() == 0
		})
		if live := p.live(); live != n {
			t.Fatalf("round %d: %d connections live, want %d", k, live, n)
		}
		for i, rc := range clients {
			rc.write(t, fmt.Sprintf("GET /small?c=%d&k=%d&j=1 HTTP/1.1\r\nHost: demo\r\n\r\n"+
				"GET /small?c=%d&k=%d&j=2 HTTP/1.1\r\nHost: demo\r\n\r\n", i, k, i, k))
			for j := 1; j <= 2; j++ {
				if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody || resp.Close {
					t.Fatalf("round %d, client %d, request %d: %d %q close %v", k, i, j, resp.StatusCode, body, resp.Close)
				}
			}
		}
	}
	if open, acc := p.metrics.open.Load(), p.metrics.accepted.Load(); open != n || acc != n {
		t.Fatalf("%d connections open, %d accepted; want %d and %d", open, acc, n, n)
	}
	if parks := p.parks.Load(); parks < n*rounds {
		t.Fatalf("%d parks, want at least %d", parks, n*rounds)
	}
	keysMu.Lock()
	seen := make(map[uint64]bool)
	for a, ks := range keys {
		if len(ks) != 1 {
			t.Errorf("client %s had pin keys %v, want one", a, ks)
		}
		for k := range ks {
			if seen[k] {
				t.Errorf("pin key %d on two clients", k)
			}
			seen[k] = true
		}
	}
	keysMu.Unlock()
	if len(keys) != n {
		t.Fatalf("requests from %d clients, want %d", len(keys), n)
	}
	// Each request logged once, with its client's address, in the order
	// sent. (A line is logged once the response went out.)
	want := n * (2*rounds + 1)
	waitFor(t, "every request logged", func() bool { return strings.Count(logs.String(), "msg=access") >= want })
	log := logs.String()
	for i, rc := range clients {
		remote := "remote=" + rc.c.LocalAddr().String() + " method=GET target="
		last := -1
		for k := 1; k <= rounds; k++ {
			for j := 1; j <= 2; j++ {
				line := remote + fmt.Sprintf("\"/small?c=%d&k=%d&j=%d\"", i, k, j)
				at := strings.Index(log, line)
				if at < 0 || strings.Count(log, line) != 1 {
					t.Fatalf("access log has %d of %q:\n%s", strings.Count(log, line), line, log)
				}
				if at < last {
					t.Fatalf("%q logged out of order:\n%s", line, log)
				}
				last = at
			}
		}
	}
	if got := len(ng.Requests()); got != want {
		waitFor(t, "nginx's log of every request", func() bool { return len(ng.Requests()) >= want })
		if got = len(ng.Requests()); got != want {
			t.Fatalf("nginx saw %d requests, want %d", got, want)
		}
	}
}

// TestRecOf: which connections park as records, and the client address a
// record gives back.
func TestRecOf(t *testing.T) {
	// The size docs/architecture.md and docs/demo.md give.
	if sz := unsafe.Sizeof(parkRec{}); sz != 40 {
		t.Errorf("a record is %d bytes, want 40", sz)
	}
	for _, tc := range []struct {
		addr   string
		auth   bool
		ok     bool
		remote string
	}{
		{addr: "192.0.2.7:40000", ok: true, remote: "192.0.2.7:40000"},
		{addr: "[::ffff:192.0.2.7]:40001", ok: true, remote: "192.0.2.7:40001"},
		{addr: "[2001:db8::1]:443", ok: true, remote: "[2001:db8::1]:443"},
		{addr: "[fe80::1%eth0]:80"},
		{addr: "192.0.2.7:40000", auth: true},
		{addr: ""},
	} {
		cc := &clientConn{pinKey: 7}
		if tc.addr != "" {
			cc.remote = netip.MustParseAddrPort(tc.addr)
		}
		cc.authSeen.Store(tc.auth)
		cc.idleSince.Store(42)
		rec, ok := recOf(cc)
		if ok != tc.ok {
			t.Errorf("%q auth %v: record %v, want %v", tc.addr, tc.auth, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if got := rec.remote().String(); got != tc.remote || rec.serial != 7 || rec.idleSince != 42 || rec.kind != recParked {
			t.Errorf("%q: record %+v, address %s; want %s, serial 7, idle since 42, parked", tc.addr, rec, got, tc.remote)
		}
	}
}

// TestShardMapShrinks: once most of a burst of connections has parked as
// records, the shard's map of connections, which a Go map never shrinks,
// is made anew, and the connections are served as before.
func TestShardMapShrinks(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	// Long enough for every connection to be open before the first parks.
	const parkAfter = 4 * time.Second
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + ng.Addr()}, engine.Config{Shards: 1, Logger: logger},
		clientConfig{ParkAfter: parkAfter, IdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	n := shrinkConnsAt + 76
	start := time.Now()
	clients := make([]*rawClient, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				c, err := net.Dial("tcp", px)
				if err != nil {
					errs <- err
					return
				}
				rc := &rawClient{c: c, br: bufio.NewReader(c)}
				clients[i] = rc
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(c, "GET /small HTTP/1.1\r\nHost: demo\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(rc.br, nil)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || string(b) != bench.SmallBody {
					errs <- fmt.Errorf("connection %d: %d %q %v", i, resp.StatusCode, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, rc := range clients {
			if rc != nil {
				rc.c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sh := p.shards[0]
	peak := func() int {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.peak
	}
	if pk := peak(); pk < shrinkConnsAt && time.Since(start) < parkAfter {
		t.Fatalf("peak %d before the connections parked, want at least %d", pk, shrinkConnsAt)
	}
	// The last connection parks up to parkAfter and a tick after it was
	// opened, and the map is made anew a tick later.
	for deadline := time.Now().Add(parkAfter + 20*time.Second); p.parked() != int64(n) || peak() >= shrinkConnsAt/4; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections parked, shard map peak %d, want it made anew", p.parked(), n, peak())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		clients[i].getSmall(t, fmt.Sprint(i))
	}
	if live := p.live(); live != n {
		t.Fatalf("%d connections live, want %d", live, n)
	}
}

// TestFreshConnectionNotTakenForClosed: a connection the lot accepts
// while netpoll's poller works through a batch of events that holds one
// for the socket that had the same fd number, closed since, is not taken
// for that socket. netpoll's race build looks a connection's events up by
// fd number: that event, the hang-up of the old socket's client, went to
// the new connection, which netpoll then either closed with its client's
// request unread (no answer, no access line; TestProxySoak lost fresh
// pipelining connections that way) or, finding nothing to read, waited
// for in a loop on its poller, which served no other connection until
// that client sent. Its normal build carries the connection's operator
// in the event, and skips one it freed, so the test is for race builds.
// It lines the events up on the poller: a hook in the lot's Accept holds
// the poller while client B connects and client A, idle, closes; then,
// with the next batch (the lot's event, then A's hang-up), the hook
// closes A's connection just before the lot accepts B's, on A's fd
// number. Client C, connected before, is answered while B sends nothing,
// and then B is.
func TestFreshConnectionNotTakenForClosed(t *testing.T) {
	if !raceEnabled {
		t.Skip("netpoll's normal build skips the events of a closed connection")
	}
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	type conn struct {
		cc     *clientConn
		fd     int
		remote string
	}
	var (
		calls           atomic.Int32
		entered         = make(chan struct{})
		release         = make(chan struct{})
		prepared        = make(chan conn, 4)
		victim          atomic.Pointer[conn]
		placeholders    []int
		placeholdersErr error
	)
	acceptHook := func() {
		switch calls.Add(1) {
		case 3: // X's: the poller waits while the events line up
			close(entered)
			<-release
		case 4: // B's: A's connection closes, its fd number the lowest free
			a := victim.Load()
			for {
				fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
				if err != nil {
					placeholdersErr = err
					break
				}
				if fd > a.fd {
					syscall.Close(fd)
					break
				}
				placeholders = append(placeholders, fd)
			}
			a.cc.closeIfIdle()
		}
	}
	prepareHook := func(cc *clientConn) {
		prepared <- conn{cc, cc.c.(interface{ Fd() int }).Fd(), cc.c.RemoteAddr().String()}
	}
	_, px := startParkProxy(t, clientConfig{ParkAfter: -1, IdleTimeout: time.Minute,
		acceptHook: acceptHook, prepareHook: prepareHook}, nil, "http://"+ng.Addr())
	next := func(who string) conn {
		t.Helper()
		select {
		case c := <-prepared:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("the proxy did not take %s's connection", who)
		}
		return conn{}
	}

	a := dialRaw(t, px)
	ac := next("A")
	victim.Store(&ac)
	c := dialRaw(t, px)
	cc := next("C")
	waitFor(t, "A's and C's connections idle", func() bool {
		return ac.cc.state.Load() == stIdle && cc.cc.state.Load() == stIdle
	})
	dialRaw(t, px) // X
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy accepted nothing after A")
	}
	b := dialRaw(t, px)
	a.c.Close()
	close(release)
	bc := next("X")
	if bc.remote != b.c.LocalAddr().String() {
		bc = next("B")
	}
	for _, p := range placeholders {
		syscall.Close(p)
	}
	if placeholdersErr != nil || bc.fd != ac.fd {
		t.Fatalf("B's connection has fd %d, A's had %d (%v): the events did not line up", bc.fd, ac.fd, placeholdersErr)
	}
	for _, rc := range []struct {
		who string
		*rawClient
	}{{"C, while B sends nothing", c}, {"B, on A's fd number", b}} {
		_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
		rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			t.Fatalf("the request of %s: %v", rc.who, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(body) != bench.SmallBody {
			t.Fatalf("the request of %s: %d %q %v", rc.who, resp.StatusCode, body, err)
		}
	}
}

// TestReleaseMemoryAfterBurst: the memory parked connections held goes
// back to the system once their burst is over (a sweep that parked none),
// not while parking goes on, also the first time; and not again until
// enough more connections parked.
func TestReleaseMemoryAfterBurst(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 1, Logger: logger}, clientConfig{ParkAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	now := time.Now()
	p.parks.Store(300)
	p.releaseMemory(now, 300) // the burst parks
	if rel := p.parksRel.Load(); rel != 0 {
		t.Fatalf("released with %d parks while parking went on", rel)
	}
	p.parks.Store(1000)
	p.releaseMemory(now.Add(500*time.Millisecond), 700)
	if rel := p.parksRel.Load(); rel != 0 {
		t.Fatalf("released with %d parks while parking went on", rel)
	}
	p.releaseMemory(now.Add(time.Second), 0) // the burst is over
	if rel := p.parksRel.Load(); rel != 1000 {
		t.Fatalf("released with %d parks counted after the burst, want 1000", rel)
	}
	p.parks.Store(1000 + releaseAfterParked - 1)
	p.releaseMemory(now.Add(3*time.Second), 0)
	if rel := p.parksRel.Load(); rel != 1000 {
		t.Fatalf("released again with %d parks, want no release for %d more", rel, releaseAfterParked-1)
	}
	// Parking that goes on without a pause: a release once releaseEvery
	// has passed since the parks began.
	p.parks.Store(1000 + releaseAfterParked)
	p.releaseMemory(now.Add(4*time.Second), 1)
	p.releaseMemory(now.Add(4*time.Second+releaseEvery/2), 1)
	if rel := p.parksRel.Load(); rel != 1000 {
		t.Fatalf("released with %d parks, want no release before releaseEvery", rel)
	}
	p.releaseMemory(now.Add(3*time.Second+releaseEvery), 1)
	if rel := p.parksRel.Load(); rel != 1000+releaseAfterParked {
		t.Fatalf("released with %d parks counted, want %d after releaseEvery", rel, 1000+releaseAfterParked)
	}
}
