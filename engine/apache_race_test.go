package engine_test

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// Keep-alive races against a real Apache. Apache (mpm_event) closes a
// kept-alive connection exactly KeepAliveTimeout after its last response,
// and closes by lingering: it shuts its side and reads what still comes
// for a while, so a request that crosses its FIN is acknowledged by its
// TCP, and then dropped unanswered. It sends its "Keep-Alive: timeout=N"
// hint only to a request that says "Connection: keep-alive", as every
// request the engine forwards does unless its head carries a Connection
// field of its own; with the hint the pool retires a connection before
// Apache closes it (TestApacheKeepAliveHint). The race tests send heads
// with a Connection field of their own (noHint), so that Apache sends no
// hint and the pool cannot know when it will close: the race is met.

// noHint is a Connection field naming no option Apache knows: the engine
// forwards it instead of its own "Connection: keep-alive", so Apache
// announces no timeout.
const noHint = "Connection: no-hint"

// apacheLine is one line of the fixture's access log.
type apacheLine struct {
	Status  int
	Request string // the request line, "GET /small HTTP/1.1"
	Port    int    // the client's (the engine's) source port
}

// apacheLog waits, bounded, for n lines in a's access log (Apache logs a
// request after answering it) and parses them.
func apacheLog(t *testing.T, a *bench.Apache, n int) []apacheLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		raw := a.AccessLog()
		if len(raw) >= n || time.Now().After(deadline) {
			out := make([]apacheLine, 0, len(raw))
			for _, l := range raw {
				q1, q2 := strings.IndexByte(l, '"'), strings.LastIndexByte(l, '"')
				fs := strings.Fields(l[q2+1:])
				if q1 < 0 || q2 <= q1 || len(fs) != 2 {
					t.Fatalf("apache log line %q", l)
				}
				st, _ := strconv.Atoi(strings.TrimSpace(l[:q1]))
				port, _ := strconv.Atoi(fs[1])
				out = append(out, apacheLine{Status: st, Request: l[q1+1 : q2], Port: port})
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// apachePorts counts the connections in lines (their client ports).
func apachePorts(lines []apacheLine) int {
	seen := map[int]bool{}
	for _, l := range lines {
		seen[l.Port] = true
	}
	return len(seen)
}

// apacheRequest builds a request for Apache at addr, with body (sent with
// its length) when body is not "", and extra header lines.
func apacheRequest(t *testing.T, addr, method, target, body string, extra ...string) *engine.Request {
	t.Helper()
	raw := method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: serverside-test\r\n"
	for _, x := range extra {
		raw += x + "\r\n"
	}
	req := &engine.Request{Upstream: engine.Upstream{Addr: addr}, Head: new(parser.Request)}
	if body != "" {
		raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
		req.Body, req.ContentLength = strings.NewReader(body), int64(len(body))
	}
	raw += "\r\n"
	if _, err := req.Head.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return req
}

// raceRounds runs one round of len(reqs) concurrent requests (reqs[i]
// builds the i-th) after each pause, pausing first, and returns each
// request's error by round. Every caller's request of a round takes one of
// the connections the round before left idle, all idle for about the
// pause: pauses about Apache's KeepAliveTimeout make some of them cross
// its close.
func raceRounds(t *testing.T, e *engine.Engine, pauses []time.Duration, reqs []func() *engine.Request) [][]error {
	t.Helper()
	errs := make([][]error, len(pauses))
	for r, p := range pauses {
		time.Sleep(p)
		errs[r] = make([]error, len(reqs))
		var wg sync.WaitGroup
		for i, mk := range reqs {
			req := mk()
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _, err := fetch(e, req)
				if err == nil && resp.Status >= 500 {
					err = errors.New("status " + strconv.Itoa(resp.Status))
				}
				errs[r][i] = err
			}()
		}
		wg.Wait()
	}
	return errs
}

// aboutASecond are the pauses of the Apache race tests: rounds after a
// pause of about Apache's KeepAliveTimeout 1 (999 to 1003 ms: Apache's
// timer starts as it writes the last response, a little before the
// engine's caller has read it), each followed by one after a shorter
// pause, on which the round's connections are all still open.
var aboutASecond = []time.Duration{
	0, 1000 * time.Millisecond, 300 * time.Millisecond, 1001 * time.Millisecond, 0,
	999 * time.Millisecond, 600 * time.Millisecond, 1002 * time.Millisecond, 200 * time.Millisecond,
	1000 * time.Millisecond, 100 * time.Millisecond, 1003 * time.Millisecond,
}

// longPauses counts the pauses of a second or more.
func longPauses(ps []time.Duration) int {
	n := 0
	for _, p := range ps {
		if p >= 900*time.Millisecond {
			n++
		}
	}
	return n
}

// TestApacheKeepAliveTimeoutRace: rounds of 4 concurrent GETs, paused
// about Apache's KeepAliveTimeout 1 apart, so that some of them are
// written on a connection Apache is closing (its TCP acknowledges the
// request, Apache drops it). The engine hides every such race: no error
// reaches a caller, Apache answers each GET once, and the connections
// still open after a short pause are all reused.
func TestApacheKeepAliveTimeoutRace(t *testing.T) {
	leakBaseline(t)
	a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"KeepAliveTimeout 1"}})
	e := startEngine(t, engine.Config{})
	const callers = 4
	mk := make([]func() *engine.Request, callers)
	for i := range mk {
		mk[i] = func() *engine.Request { return apacheRequest(t, a.Addr(), "GET", "/small", "", noHint) }
	}
	start := time.Now()
	errs := raceRounds(t, e, aboutASecond, mk)
	n := len(aboutASecond) * callers
	t.Logf("%d requests in %v", n, time.Since(start).Round(time.Millisecond))
	for r, es := range errs {
		for i, err := range es {
			if err != nil {
				t.Errorf("round %d (after %v idle), caller %d: %v", r, aboutASecond[r], i, err)
			}
		}
	}
	s := logStats(t, e, a.Addr())
	lines := apacheLog(t, a, n)
	conns := apachePorts(lines)
	t.Logf("apache: %d requests on %d connections", len(lines), conns)
	if len(lines) != n {
		t.Errorf("apache logged %d requests, want %d (each GET answered once)", len(lines), n)
	}
	for _, l := range lines {
		if l.Status != 200 || l.Request != "GET /small HTTP/1.1" {
			t.Errorf("apache logged %d %q", l.Status, l.Request)
		}
	}
	if s.Requests != uint64(n) || len(s.Errors) != 0 || s.RacesRetried != s.RacesHit {
		t.Errorf("engine: %d requests, errors %v, races hit %d, retried %d; want %d, none, all retried",
			s.Requests, s.Errors, s.RacesHit, s.RacesRetried, n)
	}
	// Every connection dialed carried at least one answered request; and
	// only a round after a long pause dials (its callers' connections may
	// have closed), never one after a short pause.
	if max := callers * (1 + longPauses(aboutASecond)); conns != int(s.Pool.Dialed) || conns > max {
		t.Errorf("apache saw %d connections, engine dialed %d; want the same, at most %d", conns, s.Pool.Dialed, max)
	}
}

// TestApacheMaxKeepAliveRequests: with MaxKeepAliveRequests 3 Apache
// keeps a connection for 3 requests after the first (it counts the
// requests kept alive for), saying "Connection: close" on the fourth
// response, so 30 sequential GETs take exactly 8 connections and no
// retry.
func TestApacheMaxKeepAliveRequests(t *testing.T) {
	leakBaseline(t)
	a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"MaxKeepAliveRequests 3"}})
	e := startEngine(t, engine.Config{})
	const n, per = 30, 4
	for i := 0; i < n; i++ {
		resp, body, err := fetch(e, apacheRequest(t, a.Addr(), "GET", "/small", ""))
		if err != nil {
			logStats(t, e, a.Addr())
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: status %d, body %q", i, resp.Status, body)
		}
		if want := (i+1)%per == 0; want != strings.EqualFold(resp.Header.Get("Connection"), "close") {
			t.Errorf("request %d: Connection %q", i, resp.Header.Get("Connection"))
		}
	}
	s := logStats(t, e, a.Addr())
	lines := apacheLog(t, a, n)
	conns := (n + per - 1) / per
	if got := apachePorts(lines); len(lines) != n || got != conns {
		t.Errorf("apache logged %d requests on %d connections, want %d on %d", len(lines), got, n, conns)
	}
	if s.Pool.Dialed != uint64(conns) || s.Retries != 0 || s.RacesHit != 0 {
		t.Errorf("engine dialed %d (want %d), retried %d, hit %d races; want no retries or races",
			s.Pool.Dialed, conns, s.Retries, s.RacesHit)
	}
}

// TestApacheKeepAliveTimeoutRaceBodies: the same rounds, of four kinds of
// request with a small body each. A PUT whose body can be had again
// (GetBody), and a POST with an Idempotency-Key and GetBody, are sent
// again after the race: no error. A POST without that key is not, with
// GetBody or without, once Apache's TCP acknowledged it before the close
// (for all the engine can tell Apache received it): its caller gets the
// error (a *conn.Error, reused, written, delivered, nothing answered), and
// Apache answers every POST at most once. A POST without GetBody whose
// small body went out with its head goes again when it was not delivered
// (Apache had closed for good, and its TCP reset the connection): the
// engine kept the bytes sent.
func TestApacheKeepAliveTimeoutRaceBodies(t *testing.T) {
	leakBaseline(t)
	a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"KeepAliveTimeout 1"}})
	e := startEngine(t, engine.Config{})
	const body = "hello"
	replay := func(r *engine.Request) *engine.Request {
		r.GetBody = func() (io.Reader, error) { return strings.NewReader(body), nil }
		return r
	}
	kinds := []struct {
		name  string
		line  string // the request line Apache logs
		mk    func() *engine.Request
		retry bool // sent again after the race
		// replay: a body that can be had again (GetBody); without it,
		// the engine keeps the small body sent with the head, so that
		// either way only a request delivered fails
		replay bool
	}{
		{"PUT with GetBody", "PUT /small?put HTTP/1.1", func() *engine.Request {
			return replay(apacheRequest(t, a.Addr(), "PUT", "/small?put", body, noHint))
		}, true, true},
		{"POST with Idempotency-Key", "POST /small?key HTTP/1.1", func() *engine.Request {
			return replay(apacheRequest(t, a.Addr(), "POST", "/small?key", body, `Idempotency-Key: "k1"`, noHint))
		}, true, true},
		{"POST with GetBody", "POST /small?replayable HTTP/1.1", func() *engine.Request {
			return replay(apacheRequest(t, a.Addr(), "POST", "/small?replayable", body, noHint))
		}, false, true},
		{"POST", "POST /small?once HTTP/1.1", func() *engine.Request {
			return apacheRequest(t, a.Addr(), "POST", "/small?once", body, noHint)
		}, false, false},
	}
	mk := make([]func() *engine.Request, len(kinds))
	for i, k := range kinds {
		mk[i] = k.mk
	}
	errs := raceRounds(t, e, aboutASecond, mk)
	s := logStats(t, e, a.Addr())

	failed := make([]int, len(kinds))
	for r, es := range errs {
		for i, err := range es {
			if err == nil {
				continue
			}
			failed[i]++
			k := kinds[i]
			ce := conn.AsError(err)
			if k.retry || ce == nil || !ce.Reused || !ce.Written || !ce.Delivered || ce.Responded || ce.Phase != conn.PhaseAwaitHead {
				t.Errorf("round %d (after %v idle), %s: %v (%+v)", r, aboutASecond[r], k.name, err, ce)
			}
		}
	}
	lines := apacheLog(t, a, len(aboutASecond)*len(kinds)-sum(failed))
	t.Logf("apache: %d requests on %d connections", len(lines), apachePorts(lines))
	for i, k := range kinds {
		logged := 0
		for _, l := range lines {
			if l.Request == k.line {
				logged++
			}
		}
		t.Logf("%s: %d sent, %d failed, %d answered by apache", k.name, len(aboutASecond), failed[i], logged)
		if want := len(aboutASecond) - failed[i]; logged != want {
			t.Errorf("%s: apache answered %d, want %d (each request that succeeded, once)", k.name, logged, want)
		}
	}
	if want := s.RacesRetried + uint64(sum(failed)); s.RacesHit != want || s.Errors["await-head"] != uint64(sum(failed)) {
		t.Errorf("engine: races hit %d, retried %d, errors %v; want every race retried but the %d failed POSTs",
			s.RacesHit, s.RacesRetried, s.Errors, sum(failed))
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestApacheKeepAliveZeroHint: Apache with a KeepAliveTimeout under a
// second answers a request that says "Connection: keep-alive" with
// "Keep-Alive: timeout=0" (its timeout in whole seconds, rounded down):
// it may close the connection any moment after the response. The pool
// keeps no such connection idle (it could only go straight to a waiter),
// so sequential POSTs, which are not sent again after the race, never
// meet Apache's close: each takes a new connection, and none fails.
func TestApacheKeepAliveZeroHint(t *testing.T) {
	leakBaseline(t)
	a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"KeepAliveTimeout 300ms"}})
	e := startEngine(t, engine.Config{})
	const n = 6
	for i := 0; i < n; i++ {
		if i > 0 {
			time.Sleep(300 * time.Millisecond) // about Apache's timeout
		}
		resp, body, err := fetch(e, apacheRequest(t, a.Addr(), "POST", "/small", "hello", "Connection: keep-alive"))
		if err != nil {
			logStats(t, e, a.Addr())
			t.Fatalf("POST %d: %v", i, err)
		}
		if resp.Status != 200 || string(body) != bench.SmallBody || resp.Header.Get("Keep-Alive") != "timeout=0, max=1000" {
			t.Fatalf("POST %d: %d %q, Keep-Alive %q", i, resp.Status, body, resp.Header.Get("Keep-Alive"))
		}
	}
	s := logStats(t, e, a.Addr())
	lines := apacheLog(t, a, n)
	if got := apachePorts(lines); len(lines) != n || got != n {
		t.Errorf("apache logged %d requests on %d connections, want %d on %d", len(lines), got, n, n)
	}
	if s.Pool.Dialed != n || s.Pool.Closed.HintExpired != n || s.RacesHit != 0 {
		t.Errorf("engine dialed %d, closed %d for the hint, hit %d races; want %d, %d, 0",
			s.Pool.Dialed, s.Pool.Closed.HintExpired, s.RacesHit, n, n)
	}
}

// TestApacheKeepAliveHint: a request the engine forwards says
// "Connection: keep-alive" (its head has no Connection field of its own),
// so Apache (KeepAliveTimeout 1) announces its timeout, which it tells no
// HTTP/1.1 request without that option, and the pool retires an idle
// connection after half a second, before Apache closes it. The rounds of
// TestApacheKeepAliveTimeoutRace, POSTs without GetBody or an
// Idempotency-Key among them, then never meet Apache's close: no race, no
// error, every request answered once; and the rounds after a short pause
// still find their connections open.
func TestApacheKeepAliveHint(t *testing.T) {
	leakBaseline(t)
	a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"KeepAliveTimeout 1"}})
	e := startEngine(t, engine.Config{})
	resp, _, err := fetch(e, apacheRequest(t, a.Addr(), "GET", "/small", ""))
	if err != nil {
		t.Fatal(err)
	}
	if ka := resp.Header.Get("Keep-Alive"); !strings.HasPrefix(ka, "timeout=1,") {
		t.Fatalf("Keep-Alive %q, want Apache's timeout=1", ka)
	}
	const callers = 4
	mk := make([]func() *engine.Request, callers)
	for i := range mk {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", "hello"
		}
		mk[i] = func() *engine.Request { return apacheRequest(t, a.Addr(), method, "/small", body) }
	}
	errs := raceRounds(t, e, aboutASecond, mk)
	for r, es := range errs {
		for i, err := range es {
			if err != nil {
				t.Errorf("round %d (after %v idle), caller %d: %v", r, aboutASecond[r], i, err)
			}
		}
	}
	s := logStats(t, e, a.Addr())
	n := 1 + len(aboutASecond)*callers
	lines := apacheLog(t, a, n)
	conns := apachePorts(lines)
	t.Logf("apache: %d requests on %d connections", len(lines), conns)
	if len(lines) != n {
		t.Errorf("apache logged %d requests, want %d (each answered once)", len(lines), n)
	}
	// Only a round after a pause longer than the half second dials.
	long := 0
	for _, p := range aboutASecond {
		if p > 500*time.Millisecond {
			long++
		}
	}
	if max := callers * (1 + long); conns != int(s.Pool.Dialed) || conns > max {
		t.Errorf("apache saw %d connections, engine dialed %d; want the same, at most %d", conns, s.Pool.Dialed, max)
	}
	if s.RacesHit != 0 || len(s.Errors) != 0 || s.Pool.Closed.HintExpired == 0 {
		t.Errorf("engine: races hit %d, errors %v, closed for the hint %d; want no race, no error, closes for the hint",
			s.RacesHit, s.Errors, s.Pool.Closed.HintExpired)
	}
}
