package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// Integration tests against a real nginx origin (the bench fixture). They
// skip when nginx is not installed, and fail under CI=true.

// requestTimeout bounds every request of these tests.
const requestTimeout = 10 * time.Second

// leakBaseline records the goroutine and fd counts; at cleanup (register it
// before the origin and the engine, so that it runs after both are closed)
// it waits, bounded, for both to come back to them.
func leakBaseline(t *testing.T) {
	t.Helper()
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, f := runtime.NumGoroutine(), openFDs(t)
			if g <= g0 && f <= f0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("leak after close: goroutines %d -> %d, fds %d -> %d\n%s",
					g0, g, f0, f, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// startEngine starts an engine closed at cleanup.
func startEngine(t *testing.T, cfg engine.Config) *engine.Engine {
	t.Helper()
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// ngxRequest builds a request for nginx: method and path, with an optional
// body of length cl (-1: unknown, sent chunked).
func ngxRequest(t testing.TB, ngx *bench.Nginx, method, path string, body io.Reader, cl int64) *engine.Request {
	t.Helper()
	h := new(parser.Request)
	raw := method + " " + path + " HTTP/1.1\r\nHost: " + ngx.Addr() + "\r\nUser-Agent: serverside-test\r\n\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return &engine.Request{Upstream: engine.Upstream{Addr: ngx.Addr()}, Head: h, Body: body, ContentLength: cl}
}

// fetch sends req through Do and reads the whole body.
func fetch(e *engine.Engine, req *engine.Request) (*engine.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := e.Do(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// logStats logs the engine's view of one upstream.
func logStats(t *testing.T, e *engine.Engine, addr string) engine.UpstreamStats {
	t.Helper()
	s := e.Stats()[addr]
	c := s.Pool.Closed
	t.Logf("stats %s: requests %d, attempts %d (on reused %d, reuse ratio %.2f), retries %d, races hit %d / retried %d, dialed %d, reused %d, errors %v",
		addr, s.Requests, s.Attempts, s.OnReused, s.ReuseRatio, s.Retries, s.RacesHit, s.RacesRetried,
		s.Pool.Dialed, s.Pool.Reused, s.Errors)
	t.Logf("closes: idle-timeout %d, hint-expired %d, lifetime %d, max-requests %d, dead-on-checkout %d, dead-on-return %d, peer-closed-idle %d, over-cap %d, drained %d, upstream-close %d, owner %d (total %d)",
		c.IdleTimeout, c.HintExpired, c.Lifetime, c.MaxRequests, c.DeadOnCheckout, c.DeadOnReturn,
		c.PeerClosedIdle, c.OverCap, c.Drained, c.UpstreamClose, c.Owner, c.Total())
	return s
}

// TestNginxKeepaliveTimeoutRace spaces requests around nginx's 1s
// keep-alive timeout, so some of them meet a connection nginx is closing
// or has closed. The engine must hide that from the caller: evict the dead
// idle connection or retry the stale-connection race.
func TestNginxKeepaliveTimeoutRace(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{KeepaliveTimeout: "1s"})
	e := startEngine(t, engine.Config{})

	// 30 requests, about 13 s in all; the pattern repeats every 12.
	pause := []time.Duration{
		900 * time.Millisecond, 0, 1000 * time.Millisecond, 200 * time.Millisecond,
		1100 * time.Millisecond, 0, 0, 950 * time.Millisecond,
		0, 1050 * time.Millisecond, 0, 0,
	}
	const n = 30
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(pause[i%len(pause)])
		resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil {
			logStats(t, e, ngx.Addr())
			t.Fatalf("request %d (after %v idle): %v", i, pause[i%len(pause)], err)
		}
		if resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: status %d, body %q", i, resp.Status, body)
		}
	}
	t.Logf("%d requests in %v", n, time.Since(start).Round(time.Millisecond))
	s := logStats(t, e, ngx.Addr())
	reqs := ngx.WaitRequests(n, 5*time.Second)
	t.Logf("nginx: %d requests logged on %d connections", len(reqs), bench.CountConnections(reqs))
	if s.Requests != n {
		t.Errorf("engine counted %d requests, want %d", s.Requests, n)
	}
	if len(s.Errors) != 0 {
		t.Errorf("engine counted failures: %v", s.Errors)
	}
}

// TestNginxKeepaliveRequests: nginx closes a connection after 3 requests
// (it says "Connection: close" on the third reply), so 30 sequential
// requests need exactly 10 connections and no retry.
func TestNginxKeepaliveRequests(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 3})
	e := startEngine(t, engine.Config{})

	const n = 30
	for i := 0; i < n; i++ {
		resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil {
			logStats(t, e, ngx.Addr())
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: status %d, body %q", i, resp.Status, body)
		}
		if want := (i+1)%3 == 0; want != strings.EqualFold(resp.Header.Get("Connection"), "close") {
			t.Errorf("request %d: Connection %q", i, resp.Header.Get("Connection"))
		}
	}
	s := logStats(t, e, ngx.Addr())
	reqs := ngx.WaitRequests(n, 5*time.Second)
	if len(reqs) != n {
		t.Errorf("nginx logged %d requests, want %d", len(reqs), n)
	}
	if got, want := bench.CountConnections(reqs), (n+2)/3; got != want {
		t.Errorf("nginx saw %d connections, want %d", got, want)
	}
	if s.Pool.Dialed != n/3 || s.Retries != 0 || s.RacesHit != 0 {
		t.Errorf("engine dialed %d (want %d), retried %d, hit %d races; want no retries or races",
			s.Pool.Dialed, n/3, s.Retries, s.RacesHit)
	}
}

// TestMaxConnRequestsAndLifetime: MaxConnRequests retires a connection
// after its third request, before nginx's own limit of 5 would (30
// requests, 10 connections, no "Connection: close" from nginx, no retry);
// MaxConnLifetime retires one that outlived it, so the next request goes
// on a new connection.
func TestMaxConnRequestsAndLifetime(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 5})
	e := startEngine(t, engine.Config{MaxConnRequests: 3})
	const n = 30
	for i := 0; i < n; i++ {
		resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	s := logStats(t, e, ngx.Addr())
	reqs := ngx.WaitRequests(n, 5*time.Second)
	if got := bench.CountConnections(reqs); len(reqs) != n || got != n/3 {
		t.Errorf("nginx logged %d requests on %d connections, want %d on %d", len(reqs), got, n, n/3)
	}
	if s.Pool.Dialed != n/3 || s.Pool.Closed.MaxRequests != n/3 || s.Retries != 0 {
		t.Errorf("dialed %d, closed for max requests %d, retries %d; want %d, %d, 0",
			s.Pool.Dialed, s.Pool.Closed.MaxRequests, s.Retries, n/3, n/3)
	}

	const life = 300 * time.Millisecond
	ngx2 := bench.StartNginx(t, bench.NginxOptions{})
	e2 := startEngine(t, engine.Config{MaxConnLifetime: life})
	get := func() {
		t.Helper()
		if resp, _, err := fetch(e2, ngxRequest(t, ngx2, "GET", "/small", nil, 0)); err != nil || resp.Status != 200 {
			t.Fatalf("GET: %v", err)
		}
	}
	get()
	time.Sleep(2 * life) // the connection outlives its lifetime, idle
	get()
	s = logStats(t, e2, ngx2.Addr())
	reqs = ngx2.WaitRequests(2, 5*time.Second)
	if got := bench.CountConnections(reqs); len(reqs) != 2 || got != 2 {
		t.Errorf("nginx logged %d requests on %d connections, want 2 on 2", len(reqs), got)
	}
	if s.Pool.Closed.Lifetime != 1 || s.RacesHit != 0 {
		t.Errorf("closed for lifetime %d, races %d; want 1, 0", s.Pool.Closed.Lifetime, s.RacesHit)
	}
}

// TestNginxDefault runs the ordinary traffic of a proxy against nginx's
// default keep-alive settings: concurrency, static bodies, request bodies,
// HEAD, error statuses, and an origin that closes without replying.
func TestNginxDefault(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	e := startEngine(t, engine.Config{})
	addr := ngx.Addr()

	t.Run("concurrent", func(t *testing.T) {
		const callers, perCaller = 8, 25
		logged := len(ngx.Requests())
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for c := 0; c < callers; c++ {
			tmpl := ngxRequest(t, ngx, "GET", "/small", nil, 0) // one head per caller
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perCaller; i++ {
					req := *tmpl
					resp, body, err := fetch(e, &req)
					if err == nil && (resp.Status != 200 || string(body) != bench.SmallBody) {
						err = fmt.Errorf("status %d, body %q", resp.Status, body)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		reqs := ngx.WaitRequests(logged+callers*perCaller, 5*time.Second)
		got := bench.CountConnections(reqs[logged:])
		t.Logf("%d callers, %d requests: %d connections", callers, len(reqs)-logged, got)
		if got > callers {
			t.Errorf("%d concurrent callers used %d connections, want at most %d", callers, got, callers)
		}
	})

	t.Run("static", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			size int
		}{{"/16k", bench.Size16K}, {"/1m", bench.Size1M}} {
			resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", tc.path, nil, 0))
			if err != nil {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			if resp.Status != 200 || resp.ContentLength != int64(tc.size) {
				t.Errorf("GET %s: status %d, ContentLength %d", tc.path, resp.Status, resp.ContentLength)
			}
			if !bytes.Equal(body, bench.PatternBody(tc.size)) {
				t.Errorf("GET %s: %d body bytes differ from the file's %d", tc.path, len(body), tc.size)
			}
		}
	})

	t.Run("post", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for _, tc := range []struct {
			name string
			size int
			cl   int64 // -1: chunked
		}{
			{"content-length", 100_000, 100_000},
			{"chunked", 300_000, -1},
			{"chunked-small", 10, -1},
		} {
			payload := make([]byte, tc.size)
			rng.Read(payload)
			req := ngxRequest(t, ngx, "POST", "/echo", bytes.NewReader(payload), tc.cl)
			req.GetBody = func() (io.Reader, error) { return bytes.NewReader(payload), nil }
			resp, body, err := fetch(e, req)
			if err != nil {
				t.Fatalf("%s: POST /echo: %v", tc.name, err)
			}
			if want := strconv.Itoa(tc.size) + "\n"; resp.Status != 200 || string(body) != want {
				t.Errorf("%s: POST /echo with %d bytes: status %d, body %q; want 200, %q",
					tc.name, tc.size, resp.Status, body, want)
			}
		}
	})

	// ContentLength is what is read from Body, never a byte more: the rest
	// stays in the reader (a client connection's next request, say), and 0
	// sends no body. A Body that ends early is ErrBodyLength.
	t.Run("post-length", func(t *testing.T) {
		for _, tc := range []struct {
			cl         int64
			want, rest string
		}{{5, "5\n", " world"}, {0, "0\n", "hello world"}} {
			body := strings.NewReader("hello world")
			resp, got, err := fetch(e, ngxRequest(t, ngx, "POST", "/echo", body, tc.cl))
			if err != nil || resp.Status != 200 || string(got) != tc.want {
				t.Fatalf("ContentLength %d: %v, %q; want 200, %q", tc.cl, err, got, tc.want)
			}
			if rest, _ := io.ReadAll(body); string(rest) != tc.rest {
				t.Errorf("ContentLength %d: %q left in the body, want %q", tc.cl, rest, tc.rest)
			}
		}
		_, _, err := fetch(e, ngxRequest(t, ngx, "POST", "/echo", strings.NewReader("hello"), 10))
		if !errors.Is(err, conn.ErrBodyLength) {
			t.Errorf("a body short of its ContentLength: %v, want ErrBodyLength", err)
		}
	})

	t.Run("head", func(t *testing.T) {
		resp, body, err := fetch(e, ngxRequest(t, ngx, "HEAD", "/1m", nil, 0))
		if err != nil {
			t.Fatalf("HEAD /1m: %v", err)
		}
		if resp.Status != 200 || len(body) != 0 {
			t.Errorf("HEAD /1m: status %d, %d body bytes; want 200 and none", resp.Status, len(body))
		}
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(bench.Size1M) {
			t.Errorf("HEAD /1m: Content-Length %q, want %d", got, bench.Size1M)
		}
		if resp.ContentLength != int64(bench.Size1M) {
			t.Errorf("HEAD /1m: Response.ContentLength %d, want %d as announced", resp.ContentLength, bench.Size1M)
		}
		// The connection must still be in step: the next reply is whole.
		resp, body, err = fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Errorf("GET /small after HEAD: %v", err)
		}
	})

	t.Run("status", func(t *testing.T) {
		for _, code := range []int{404, 503} {
			resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/status/"+strconv.Itoa(code), nil, 0))
			if err != nil {
				t.Fatalf("GET /status/%d: %v", code, err)
			}
			if resp.Status != code || !bytes.Contains(body, []byte(strconv.Itoa(code))) {
				t.Errorf("GET /status/%d: status %d, body %q", code, resp.Status, body)
			}
		}
	})

	t.Run("close-without-reply", func(t *testing.T) {
		before := e.Stats()[addr]
		logged := len(ngx.Requests())
		_, _, err := fetch(e, ngxRequest(t, ngx, "GET", "/status/444", nil, 0))
		if err == nil {
			t.Fatal("GET /status/444: no error")
		}
		var ce *conn.Error
		if !errors.As(err, &ce) {
			t.Fatalf("GET /status/444: error %T %v, want a *conn.Error", err, err)
		}
		closed := errors.Is(err, conn.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
		if ce.Phase != conn.PhaseAwaitHead || ce.Responded || !closed {
			t.Errorf("GET /status/444: phase %v, responded %v, err %v; want await-head, no response byte, closed by the peer",
				ce.Phase, ce.Responded, err)
		}
		t.Logf("GET /status/444: %v (reused %v, written %v)", err, ce.Reused, ce.Written)
		after := logStats(t, e, addr)
		// At most one retry (the attempt on a reused connection looks like
		// the stale keep-alive race; the retry runs on a fresh one).
		if n := after.Attempts - before.Attempts; n > 2 {
			t.Errorf("GET /status/444 took %d attempts, want at most 2", n)
		}
		// nginx logs 444 as the request's status.
		time.Sleep(100 * time.Millisecond)
		var seen int
		for _, r := range ngx.Requests()[logged:] {
			if r.URI == "/status/444" {
				seen++
			}
		}
		t.Logf("nginx saw /status/444 %d times", seen)
		if seen < 1 || seen > 2 {
			t.Errorf("nginx saw /status/444 %d times, want 1 or 2", seen)
		}
		// The engine carries on.
		resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Errorf("GET /small after 444: %v", err)
		}
	})
}

// TestStatsBoundedOverManyUpstreams: a forward proxy meets a new upstream
// with every host. Past a few thousand, the counters of those that have
// no pool state left and went unused are dropped from Stats, added up
// under RetiredKey: the entries stay bounded, and the requests counted
// over all entries are every request made.
func TestStatsBoundedOverManyUpstreams(t *testing.T) {
	leakBaseline(t)
	e := startEngine(t, engine.Config{IdleTimeout: time.Millisecond})
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	const n = 3 * 4096
	for i := range n {
		// Nothing listens on port 9 of these loopback addresses: each
		// request is one refused connect.
		addr := fmt.Sprintf("127.1.%d.%d:9", i/250, i%250+1)
		req := &engine.Request{Upstream: engine.Upstream{Addr: addr}, Head: h}
		if _, _, err := fetch(e, req); err == nil {
			t.Fatalf("request to %s succeeded", addr)
		}
		if i%1000 == 999 {
			time.Sleep(5 * time.Millisecond) // the pool retires the emptied keys
		}
	}
	st := e.Stats()
	var sum uint64
	for _, s := range st {
		sum += s.Requests
	}
	// Sweeps run as the entries double from 4,096: about twice that many
	// at most (and the retired entry), whatever n.
	const bound = 2*4096 + 8
	if len(st) > bound || st[engine.RetiredKey].Requests == 0 || sum != n {
		t.Fatalf("%d entries, %d requests retired, %d counted; want at most %d entries, some retired, %d counted",
			len(st), st[engine.RetiredKey].Requests, sum, bound, n)
	}
}

// TestNginxRequestCloseIsOwner: a request that asks to close ("Connection:
// close" in the head it forwards, or net/http's Request.Close through
// Transport) gets nginx's "Connection: close" back, and its connection
// closes at the engine's own request: counted under Owner, not under
// UpstreamClose, which is for an upstream that asked to close by itself.
func TestNginxRequestCloseIsOwner(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	e := startEngine(t, engine.Config{})

	h := new(parser.Request)
	raw := "GET /small HTTP/1.1\r\nHost: " + ngx.Addr() + "\r\nConnection: close\r\n\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, body, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: ngx.Addr()}, Head: h})
	if err != nil || resp.Status != 200 || string(body) != bench.SmallBody || !strings.EqualFold(resp.Header.Get("Connection"), "close") {
		t.Fatalf("Exchange: %v, %+v %q", err, resp, body)
	}

	hr, err := http.NewRequest("GET", "http://"+ngx.Addr()+"/small", nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Close = true
	hresp, err := e.Transport().RoundTrip(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if err != nil || string(b) != bench.SmallBody || !hresp.Close {
		t.Fatalf("Transport: %v, %q, Close %v", err, b, hresp.Close)
	}

	if c := logStats(t, e, ngx.Addr()).Pool.Closed; c.Owner != 2 || c.UpstreamClose != 0 || c.Total() != 2 {
		t.Errorf("closes %+v, want 2 Owner, no UpstreamClose", c)
	}
}

// TestNginxTransportNonASCIIQuery: net/http leaves a query's bytes as
// they are (a client's raw UTF-8 reaches httputil.ReverseProxy so from
// net/http's server), but a request target is ASCII and the parser
// refuses any other byte. Transport sends such a byte percent-encoded,
// as a browser does (RFC 3987 §3.1), instead of failing the request.
func TestNginxTransportNonASCIIQuery(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	e := startEngine(t, engine.Config{})
	hr, err := http.NewRequest("GET", ngx.URL("/small?q=caf\xc3\xa9&x=%41"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.Transport().RoundTrip(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != bench.SmallBody {
		t.Fatalf("%d %q %v", resp.StatusCode, b, err)
	}
	if reqs := ngx.WaitRequests(1, 5*time.Second); len(reqs) != 1 || reqs[0].URI != "/small?q=caf%C3%A9&x=%41" {
		t.Errorf("nginx logged %+v, want the target /small?q=caf%%C3%%A9&x=%%41", reqs)
	}
}
