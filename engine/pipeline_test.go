package engine_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// bodySink keeps a response's status, body and end.
type bodySink struct {
	status int
	body   strings.Builder
	err    error
}

func (s *bodySink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *bodySink) OnBody(p []byte) error           { s.body.Write(p); return nil }
func (s *bodySink) OnDone(err error)                { s.err = err }

// slowHeadSink is a bodySink that takes its time over the head.
type slowHeadSink struct {
	bodySink
	delay time.Duration
}

func (s *slowHeadSink) OnHead(r *parser.Response) error {
	time.Sleep(s.delay)
	return s.bodySink.OnHead(r)
}

// pipeEngine is an engine with one group, "web", of one peer at addr
// that pipelines up to depth requests per connection. Its pipelines never
// count as stalled (PipelineStall): the fakes hold their answers back on
// purpose until all the requests of a test have come.
func pipeEngine(t *testing.T, addr string, depth int) *engine.Engine {
	t.Helper()
	return startEngine(t, engine.Config{PipelineStall: time.Hour, Groups: map[string]engine.GroupConfig{"web": {
		Peers: []engine.Peer{{Name: "o", Addr: addr, Pipeline: depth}},
	}}})
}

// pipeGet sends method path to the group under a context the caller cannot
// cancel (the engine's own then bounds it, as for a proxy's requests: only
// such requests are pipelined).
func pipeGet(t testing.TB, e *engine.Engine, method, path string) (*bodySink, error) {
	return pipeGetFrom(t, e, engine.Upstream{Group: "web"}, method, path)
}

// pipeGetFrom is pipeGet to up.
func pipeGetFrom(t testing.TB, e *engine.Engine, up engine.Upstream, method, path string) (*bodySink, error) {
	h := new(parser.Request)
	raw := method + " " + path + " HTTP/1.1\r\nHost: pipe.test\r\n\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	s := &bodySink{}
	err := e.Exchange(context.Background(), &engine.Request{Upstream: up, Head: h}, s)
	return s, err
}

// answer writes a response whose body is the request's target.
func answer(c net.Conn, target string, extra string) error {
	_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", len(target), extra, target)
	return err
}

// target is the request target of a head's lines.
func target(lines []string) string {
	f := strings.Fields(lines[0])
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// pipelineOrigin answers its first connection's first request at once;
// then it reads n more requests before answering any (a client that does
// not pipeline never gets there), and answers them in order through
// respond, which returns false to close the connection; else it goes on
// answering one request at a time. Other connections are answered one
// request at a time. got receives the targets read on the
// first connection after the first request.
func pipelineOrigin(t *testing.T, n int, respond func(k int, c net.Conn, target string) bool) (o *bench.Origin, got chan []string) {
	got = make(chan []string, 1)
	o = bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		serve := func() {
			for {
				lines, err := bench.ReadHead(br)
				if err != nil {
					return
				}
				if answer(c, target(lines), "") != nil {
					return
				}
			}
		}
		if i > 0 {
			serve()
			return
		}
		lines, err := bench.ReadHead(br)
		if err != nil || answer(c, target(lines), "") != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var targets []string
		for len(targets) < n {
			lines, err := bench.ReadHead(br)
			if err != nil {
				break
			}
			targets = append(targets, target(lines))
		}
		got <- targets
		for k, tg := range targets {
			if !respond(k, c, tg) {
				return
			}
		}
		_ = c.SetReadDeadline(time.Time{})
		serve()
	})
	return o, got
}

// runPipelined sends n GETs of /p0../p(n-1) at once, after one request
// that leaves an idle connection in the pool, and checks that each got
// its own path back.
func runPipelined(t *testing.T, e *engine.Engine, n int) {
	t.Helper()
	runPipelinedTo(t, e, engine.Upstream{Group: "web"}, n)
}

// runPipelinedTo is runPipelined to up.
func runPipelinedTo(t *testing.T, e *engine.Engine, up engine.Upstream, n int) {
	t.Helper()
	if s, err := pipeGetFrom(t, e, up, "GET", "/warm"); err != nil || s.body.String() != "/warm" {
		t.Fatalf("warm-up: %v %q", err, s.body.String())
	}
	var wg sync.WaitGroup
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/p%d", k)
			s, err := pipeGetFrom(t, e, up, "GET", path)
			if err != nil || s.status != 200 || s.body.String() != path {
				t.Errorf("%s: status %d, body %q, err %v", path, s.status, s.body.String(), err)
			}
		}()
	}
	wg.Wait()
}

// TestPipelineInOrder: GETs sent together go out on one connection before
// any of their responses, and each gets its own response back.
func TestPipelineInOrder(t *testing.T) {
	leakBaseline(t)
	const n = 6
	o, got := pipelineOrigin(t, n, func(_ int, c net.Conn, tg string) bool { return answer(c, tg, "") == nil })
	e := pipeEngine(t, o.Addr(), 8)
	runPipelined(t, e, n)
	if targets := <-got; len(targets) != n {
		t.Fatalf("origin read %d requests on the pipelined connection before answering, want %d: %q", len(targets), n, targets)
	}
	s := logStats(t, e, o.Addr())
	// The warm-up dialed: it was not pipelined.
	if s.Pipelined != n || s.Retries != 0 || s.Unanswered != 0 || s.Pool.Dialed != 1 || len(s.Errors) != 0 {
		t.Errorf("pipelined %d (want %d), retries %d, unanswered %d, dialed %d, errors %v; want no retry, one connection",
			s.Pipelined, n, s.Retries, s.Unanswered, s.Pool.Dialed, s.Errors)
	}
	if s.Pool.Idle != 1 {
		t.Errorf("idle connections after the pipeline: %d, want 1 (back in the pool)", s.Pool.Idle)
	}
}

// TestPipelineByAddress: Upstream.Pipeline pipelines requests to an
// address as Peer.Pipeline does to a peer.
func TestPipelineByAddress(t *testing.T) {
	leakBaseline(t)
	const n = 5
	o, got := pipelineOrigin(t, n, func(_ int, c net.Conn, tg string) bool { return answer(c, tg, "") == nil })
	e := startEngine(t, engine.Config{PipelineStall: time.Hour})
	runPipelinedTo(t, e, engine.Upstream{Addr: o.Addr(), Pipeline: 8}, n)
	if targets := <-got; len(targets) != n {
		t.Fatalf("origin read %d requests on the pipelined connection before answering, want %d", len(targets), n)
	}
	if s := logStats(t, e, o.Addr()); s.Pipelined != n || s.Pool.Dialed != 1 {
		t.Errorf("pipelined %d (want %d), dialed %d (want 1)", s.Pipelined, n, s.Pool.Dialed)
	}
}

// TestPipelineCloseAfterFirst: the origin answers the first of the
// pipelined requests with "Connection: close" and closes: the requests
// behind it were never answered and go again on another connection; the
// callers see no error.
func TestPipelineCloseAfterFirst(t *testing.T) {
	leakBaseline(t)
	const n = 4
	o, got := pipelineOrigin(t, n, func(k int, c net.Conn, tg string) bool {
		_ = answer(c, tg, "Connection: close\r\n")
		return false
	})
	e := pipeEngine(t, o.Addr(), 8)
	runPipelined(t, e, n)
	<-got
	s := logStats(t, e, o.Addr())
	if s.Unanswered != n-1 || s.Retries != n-1 || len(s.Errors) != 0 {
		t.Errorf("unanswered %d, retries %d (want %d each), errors %v", s.Unanswered, s.Retries, n-1, s.Errors)
	}
	if s.Pool.Closed.UpstreamClose != 1 {
		t.Errorf("closes by the upstream: %d, want 1", s.Pool.Closed.UpstreamClose)
	}
}

// TestPipelineResetAfterFirst: the origin answers the first pipelined
// request, then resets the connection: the rest go again, no error.
func TestPipelineResetAfterFirst(t *testing.T) {
	leakBaseline(t)
	const n = 4
	o, got := pipelineOrigin(t, n, func(k int, c net.Conn, tg string) bool {
		_ = answer(c, tg, "")
		time.Sleep(20 * time.Millisecond) // the first response is read whole
		_ = c.(*net.TCPConn).SetLinger(0)
		return false
	})
	e := pipeEngine(t, o.Addr(), 8)
	runPipelined(t, e, n)
	<-got
	s := logStats(t, e, o.Addr())
	if s.Unanswered != n-1 || len(s.Errors) != 0 {
		t.Errorf("unanswered %d (want %d), errors %v", s.Unanswered, n-1, s.Errors)
	}
}

// TestPipelineDepth: no connection carries more than the peer's Pipeline
// requests at once: with a depth of 2, of four requests sent together no
// third arrives on the connection while two are unanswered.
func TestPipelineDepth(t *testing.T) {
	leakBaseline(t)
	var third atomic.Bool
	o, got := pipelineOrigin(t, 2, func(k int, c net.Conn, tg string) bool {
		if k == 0 {
			// Two are unanswered: does a third come? (The requests over
			// the depth go to new connections meanwhile.)
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _ := c.Read(make([]byte, 1)); n > 0 {
				third.Store(true)
				return false
			}
			_ = c.SetReadDeadline(time.Time{})
		}
		return answer(c, tg, "") == nil
	})
	e := pipeEngine(t, o.Addr(), 2)
	runPipelined(t, e, 4)
	if targets := <-got; len(targets) != 2 {
		t.Errorf("origin read %d requests on the pipelined connection, want 2", len(targets))
	}
	if third.Load() {
		t.Error("a third request came on a connection with two unanswered, over the depth of 2")
	}
	logStats(t, e, o.Addr())
}

// TestPipelineOnlySafeRequests: a POST, a GET with a body, a GET that
// asks to close and a GET whose context the caller can cancel are never
// pipelined.
func TestPipelineOnlySafeRequests(t *testing.T) {
	leakBaseline(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			for _, l := range lines {
				if strings.HasPrefix(strings.ToLower(l), "content-length: ") {
					var n int
					_, _ = fmt.Sscanf(l[len("content-length: "):], "%d", &n)
					_, _ = br.Discard(n)
				}
			}
			if answer(c, target(lines), "") != nil {
				return
			}
		}
	})
	e := pipeEngine(t, o.Addr(), 8)
	send := func(ctx context.Context, raw string, body string) {
		t.Helper()
		h := new(parser.Request)
		if _, err := h.Parse([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		req := &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: h}
		if body != "" {
			req.Body, req.ContentLength = strings.NewReader(body), int64(len(body))
		}
		if err := e.Exchange(ctx, req, &bodySink{}); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	send(context.Background(), "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", "hi")
	send(context.Background(), "GET /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", "hi")
	send(context.Background(), "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "")
	send(context.Background(), "GET /dial HTTP/1.1\r\nHost: x\r\n\r\n", "") // leaves an idle connection
	send(context.Background(), "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n", "") // pipelined
	send(ctx, "GET /cancellable HTTP/1.1\r\nHost: x\r\n\r\n", "")
	if s := logStats(t, e, o.Addr()); s.Pipelined != 1 {
		t.Errorf("pipelined %d requests, want only the plain GET under an uncancellable context", s.Pipelined)
	}
}

// TestNginxPipeline: GETs and HEADs pipelined to a real nginx that closes
// every connection after three requests (keepalive_requests 3, as in
// TestNginxKeepaliveRequests): each caller gets its own, complete
// response, none an error; the requests that met a closing connection
// went again.
func TestNginxPipeline(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 3})
	e := pipeEngine(t, ngx.Addr(), 8)
	const workers, each = 16, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				method := "GET"
				if (w+i)%4 == 0 {
					method = "HEAD" // no body despite its Content-Length
				}
				s, err := pipeGet(t, e, method, "/small")
				want := bench.SmallBody
				if method == "HEAD" {
					want = ""
				}
				if err != nil || s.status != 200 || s.body.String() != want {
					t.Errorf("%s /small: status %d, body %q, err %v", method, s.status, s.body.String(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s := logStats(t, e, ngx.Addr())
	t.Logf("pipelined %d, unanswered %d", s.Pipelined, s.Unanswered)
	if s.Pipelined == 0 || len(s.Errors) != 0 {
		t.Errorf("pipelined %d, errors %v: want pipelined requests and no error", s.Pipelined, s.Errors)
	}
	reqs := ngx.WaitRequests(workers*each, 5*time.Second)
	if conns := bench.CountConnections(reqs); conns >= len(reqs) {
		t.Errorf("nginx saw %d connections for %d requests", conns, len(reqs))
	}
}

// TestNginxPipelineLargeResponses: 1 MiB responses pipelined: each comes
// whole, those that leave netpoll for Go net included (their connection
// is not pipelined any further).
func TestNginxPipelineLargeResponses(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	e := pipeEngine(t, ngx.Addr(), 8)
	if _, err := pipeGet(t, e, "GET", "/small"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				path := "/1m"
				if i%2 == 1 {
					path = "/small"
				}
				s, err := pipeGet(t, e, "GET", path)
				want := 1 << 20
				if path == "/small" {
					want = len(bench.SmallBody)
				}
				if err != nil || s.status != 200 || s.body.Len() != want {
					t.Errorf("GET %s: status %d, %d bytes (want %d), err %v", path, s.status, s.body.Len(), want, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := logStats(t, e, ngx.Addr()); len(s.Errors) != 0 {
		t.Errorf("errors %v", s.Errors)
	}
}

// TestPipelineAvoidsStalledConnection: a request does not join a pipeline
// whose response in front has been outstanding for long (PipelineStall):
// it goes on another connection and is answered before the slow one.
func TestPipelineAvoidsStalledConnection(t *testing.T) {
	leakBaseline(t)
	release := make(chan struct{})
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			if target(lines) == "/slow" {
				<-release
			}
			if answer(c, target(lines), "") != nil {
				return
			}
		}
	})
	e := startEngine(t, engine.Config{})
	up := engine.Upstream{Addr: o.Addr(), Pipeline: 8}
	if _, err := pipeGetFrom(t, e, up, "GET", "/warm"); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		s, err := pipeGetFrom(t, e, up, "GET", "/slow")
		if err == nil && s.body.String() != "/slow" {
			err = fmt.Errorf("body %q", s.body.String())
		}
		slow <- err
	}()
	// Wait until the slow request holds the pooled connection (the pool
	// has none idle then) and its pipeline has stalled.
	var once sync.Once
	defer once.Do(func() { close(release) })
	waitFor(t, "the slow request on the pooled connection", func() bool { return e.Stats()[o.Addr()].Pool.Busy == 1 })
	time.Sleep(3 * conn.DefaultStallAfter)
	fast := make(chan error, 1)
	go func() {
		s, err := pipeGetFrom(t, e, up, "GET", "/fast")
		if err == nil && s.body.String() != "/fast" {
			err = fmt.Errorf("body %q", s.body.String())
		}
		fast <- err
	}()
	select {
	case err := <-fast:
		if err != nil {
			t.Fatalf("/fast: %v", err)
		}
	case <-time.After(5 * time.Second):
		once.Do(func() { close(release) })
		t.Fatalf("/fast waited behind the stalled pipeline: %v", <-fast)
	}
	select {
	case err := <-slow:
		t.Fatalf("/slow finished before it was released: %v", err)
	default:
	}
	once.Do(func() { close(release) })
	if err := <-slow; err != nil {
		t.Fatalf("/slow: %v", err)
	}
	if st := logStats(t, e, o.Addr()); st.Pool.Dialed != 2 {
		t.Errorf("dialed %d connections, want 2: /fast on a new one", st.Pool.Dialed)
	}
}

// TestPipelineHeaderTimeoutNotResent: the origin answers the first of two
// pipelined GETs and never the second: the second fails with the
// response header timeout, as a request that is not pipelined does, and
// is not sent again (the origin got it; only a connection that ended
// makes a pipelined request unanswered).
func TestPipelineHeaderTimeoutNotResent(t *testing.T) {
	leakBaseline(t)
	o, got := pipelineOrigin(t, 2, func(k int, c net.Conn, tg string) bool {
		if k == 0 {
			return answer(c, tg, "") == nil
		}
		// Hold the second request unanswered until the proxy gives up.
		_ = c.SetReadDeadline(time.Time{})
		_, _ = c.Read(make([]byte, 1))
		return false
	})
	e := startEngine(t, engine.Config{
		ResponseHeaderTimeout: 1500 * time.Millisecond, // the first of the two is answered well within it
		PipelineStall:         time.Hour,
		Groups: map[string]engine.GroupConfig{"web": {
			Peers: []engine.Peer{{Name: "o", Addr: o.Addr(), Pipeline: 8}},
		}},
	})
	if s, err := pipeGet(t, e, "GET", "/warm"); err != nil || s.body.String() != "/warm" {
		t.Fatalf("warm-up: %v %q", err, s.body.String())
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[k] = pipeGet(t, e, "GET", fmt.Sprintf("/p%d", k))
		}()
	}
	wg.Wait()
	if targets := <-got; len(targets) != 2 {
		t.Fatalf("origin read %q on the pipelined connection, want two requests", targets)
	}
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if !errors.Is(err, conn.ErrHeaderTimeout) {
				t.Errorf("error %v, want the response header timeout", err)
			}
		}
	}
	s := logStats(t, e, o.Addr())
	if failed != 1 || s.Unanswered != 0 || s.Retries != 0 || s.Pool.Dialed != 1 {
		t.Errorf("%d requests failed (want 1), unanswered %d, retries %d, dialed %d: want the one unanswered to time out, not go again",
			failed, s.Unanswered, s.Retries, s.Pool.Dialed)
	}
}

// TestPipelineMaxConnRequests: a connection carries no more requests than
// MaxConnRequests, pipelined or not: requests sent together join its
// pipeline only up to the limit, and the rest go on other connections.
// The origin waits for four pipelined requests (or a pause) before it
// answers any, and counts the requests of each connection.
func TestPipelineMaxConnRequests(t *testing.T) {
	leakBaseline(t)
	const limit = 3
	var mu sync.Mutex
	most := 0
	o := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		n := 0
		for {
			_ = c.SetReadDeadline(time.Time{})
			lines, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			targets := []string{target(lines)}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for len(targets) < 4 {
				lines, err := bench.ReadHead(br)
				if err != nil {
					break
				}
				targets = append(targets, target(lines))
			}
			n += len(targets)
			mu.Lock()
			most = max(most, n)
			mu.Unlock()
			for _, tg := range targets {
				if answer(c, tg, "") != nil {
					return
				}
			}
		}
	})
	e := startEngine(t, engine.Config{
		MaxConnRequests: limit,
		PipelineStall:   time.Hour,
		Groups: map[string]engine.GroupConfig{"web": {
			Peers: []engine.Peer{{Name: "o", Addr: o.Addr(), Pipeline: 8}},
		}},
	})
	runPipelined(t, e, 4)
	s := logStats(t, e, o.Addr())
	mu.Lock()
	defer mu.Unlock()
	if most > limit {
		t.Errorf("a connection carried %d requests, want at most MaxConnRequests (%d)", most, limit)
	}
	// The requests the pipeline took are answered on it: none is sent
	// again.
	if s.Pipelined == 0 || s.Unanswered != 0 || s.Retries != 0 || len(s.Errors) != 0 {
		t.Errorf("pipelined %d, unanswered %d, retries %d, errors %v; want pipelined requests, none sent again, no error",
			s.Pipelined, s.Unanswered, s.Retries, s.Errors)
	}
}

// TestPipelineCloseDuringBlockedFlush: an origin that stops reading while
// heads are pipelined to it (large ones, more than the socket buffers
// hold) leaves a batch's write waiting for room. Closing the engine then
// closes the connection at once, which ends that write: it does not wait
// for the write timeout (60s).
func TestPipelineCloseDuringBlockedFlush(t *testing.T) {
	leakBaseline(t)
	stop := make(chan struct{})
	o := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		lines, err := bench.ReadHead(br)
		if err != nil || answer(c, target(lines), "") != nil {
			return
		}
		if i == 0 {
			<-stop // reads no more
		}
	})
	defer close(stop)
	e, err := engine.New(engine.Config{PipelineStall: time.Hour, Groups: map[string]engine.GroupConfig{"web": {
		Peers: []engine.Peer{{Name: "o", Addr: o.Addr(), Pipeline: 64}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := pipeGet(t, e, "GET", "/warm"); err != nil || s.body.String() != "/warm" {
		t.Fatalf("warm-up: %v %q", err, s.body.String())
	}
	raw := "GET /big HTTP/1.1\r\nHost: pipe.test\r\nX-Big: " + strings.Repeat("x", 60<<10) + "\r\n\r\n"
	const n = 64
	errs := make(chan error, n)
	for range n {
		go func() {
			h := new(parser.Request)
			if _, err := h.Parse([]byte(raw)); err != nil {
				errs <- err
				return
			}
			errs <- e.Exchange(context.Background(), &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: h}, &bodySink{})
		}()
	}
	// Wait until the pipeline holds many of them: its write is blocked.
	for i := 0; e.Stats()[o.Addr()].Pipelined < n/2; i++ {
		if i == 500 {
			t.Fatalf("pipelined %d requests, want %d or more", e.Stats()[o.Addr()].Pipelined, n/2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		_ = e.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Engine.Close still waiting after 20s: the pipelined write holds the connection's lock until its timeout")
	}
	for range n {
		if err := <-errs; err == nil {
			t.Error("a request to an origin that reads nothing succeeded")
		}
	}
}

// TestPipelineOffAfterLargeResponse: a response large enough to take its
// connection off netpoll ends the pipeline (the requests behind it would
// go again); the key's next requests for a while are not pipelined.
func TestPipelineOffAfterLargeResponse(t *testing.T) {
	leakBaseline(t)
	big := strings.Repeat("b", 1<<20)
	var conns atomic.Int32
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			lines, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			switch target(lines) {
			case "/hold": // until two connections are open
				for i := 0; conns.Load() < 2 && i < 500; i++ {
					time.Sleep(10 * time.Millisecond)
				}
			case "/big":
				if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big); err != nil {
					return
				}
				continue
			}
			if answer(c, target(lines), "") != nil {
				return
			}
		}
	})
	e := startEngine(t, engine.Config{BodyHighWater: 64 << 10})
	up := engine.Upstream{Addr: o.Addr(), Pipeline: 8}
	// Two idle connections, from requests that are not pipelined (their
	// context can be cancelled).
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := new(parser.Request)
			_, _ = h.Parse([]byte("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"))
			if err := e.Exchange(ctx, &engine.Request{Upstream: engine.Upstream{Addr: o.Addr()}, Head: h}, &bodySink{}); err != nil {
				t.Errorf("/hold: %v", err)
			}
		}()
	}
	wg.Wait()
	// Its sink is slow to take the head: whether the body is still coming
	// (the fd leaves the poller before OnHead) or all buffered already
	// (the watchdog takes it off while OnHead blocks), the connection
	// leaves netpoll.
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	bs := &slowHeadSink{delay: 200 * time.Millisecond}
	if err := e.Exchange(context.Background(), &engine.Request{Upstream: up, Head: h}, bs); err != nil || bs.body.Len() != len(big) {
		t.Fatalf("/big: %d bytes, %v", bs.body.Len(), err)
	}
	st := e.Stats()[o.Addr()]
	if st.Pipelined != 1 || st.Detached != 1 {
		t.Fatalf("pipelined %d, detached %d: want /big pipelined and detached", st.Pipelined, st.Detached)
	}
	if s, err := pipeGetFrom(t, e, up, "GET", "/small"); err != nil || s.body.String() != "/small" {
		t.Fatalf("/small: %q, %v", s.body.String(), err)
	}
	if st := logStats(t, e, o.Addr()); st.Pipelined != 1 || st.OnReused != 2 {
		t.Errorf("pipelined %d, on reused %d: want /small not pipelined, on the other idle connection", st.Pipelined, st.OnReused)
	}
}

// gateSink blocks in OnHead until open is closed, after saying so on in.
type gateSink struct {
	bodySink
	in   chan struct{}
	open chan struct{}
}

func (s *gateSink) OnHead(r *parser.Response) error {
	close(s.in)
	<-s.open
	return s.bodySink.OnHead(r)
}

// TestPipelineEvictsWaitersBehindSlowSink: a request pipelined behind one
// whose sink does not take its response (a client that stopped reading)
// does not wait for that client: after conn.EvictAfter it goes again on
// another connection.
func TestPipelineEvictsWaitersBehindSlowSink(t *testing.T) {
	leakBaseline(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := bench.ReadHead(br)
			if err != nil || answer(c, target(lines), "") != nil {
				return
			}
		}
	})
	e := startEngine(t, engine.Config{PipelineStall: time.Hour})
	up := engine.Upstream{Addr: o.Addr(), Pipeline: 8}
	if _, err := pipeGetFrom(t, e, up, "GET", "/warm"); err != nil {
		t.Fatal(err)
	}
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	gs := &gateSink{in: make(chan struct{}), open: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(gs.open) }) }
	defer release()
	stuck := make(chan error, 1)
	go func() { stuck <- e.Exchange(context.Background(), &engine.Request{Upstream: up, Head: h}, gs) }()
	<-gs.in // its response is in the sink, which holds it
	behind := make(chan error, 1)
	go func() {
		s, err := pipeGetFrom(t, e, up, "GET", "/behind")
		if err == nil && s.body.String() != "/behind" {
			err = fmt.Errorf("body %q", s.body.String())
		}
		behind <- err
	}()
	select {
	case err := <-behind:
		if err != nil {
			t.Fatalf("/behind: %v", err)
		}
	case <-time.After(10 * conn.EvictAfter):
		release()
		t.Fatalf("/behind still waiting behind the held response after %v: %v", 10*conn.EvictAfter, <-behind)
	}
	release()
	if err := <-stuck; err != nil || gs.body.String() != "/stuck" {
		t.Fatalf("/stuck: %q, %v", gs.body.String(), err)
	}
	if s := logStats(t, e, o.Addr()); s.Pipelined != 2 || s.Unanswered != 1 || len(s.Errors) != 0 {
		t.Errorf("pipelined %d (want 2), unanswered %d (want 1: /behind sent away), errors %v", s.Pipelined, s.Unanswered, s.Errors)
	}
}
