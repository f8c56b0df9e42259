package engine_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/balance"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
)

// Peer groups against real servers: three nginx origins, and Squid as a
// parent proxy.

// statusSink keeps the status and counts the body.
type statusSink struct {
	status int
	n      int
}

func (s *statusSink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *statusSink) OnBody(p []byte) error           { s.n += len(p); return nil }
func (s *statusSink) OnDone(error)                    {}

// groupHead is a parsed GET of path with the given Host; engines only read
// a head, so one may serve concurrent requests.
func groupHead(t testing.TB, path, host string) *parser.Request {
	t.Helper()
	h := new(parser.Request)
	raw := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: serverside-test\r\n\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	return h
}

// exchange sends one request to group and returns the status.
func exchange(e *engine.Engine, group string, h *parser.Request) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	s := &statusSink{}
	err := e.Exchange(ctx, &engine.Request{Upstream: engine.Upstream{Group: group}, Head: h}, s)
	return s.status, err
}

func peersOf(e *engine.Engine, group string) map[string]engine.PeerStats {
	m := map[string]engine.PeerStats{}
	for _, p := range e.PeerStats()[group].Peers {
		m[p.Name] = p
	}
	return m
}

// countURI counts the requests for uri in an nginx access log.
func countURI(reqs []bench.LoggedRequest, uri string) int {
	n := 0
	for _, r := range reqs {
		if r.URI == uri {
			n++
		}
	}
	return n
}

func TestPeersNginxSmoothWeightedRoundRobin(t *testing.T) {
	leakBaseline(t)
	weights := []int{5, 3, 2}
	var ngx []*bench.Nginx
	var peers []engine.Peer
	for i, w := range weights {
		n := bench.StartNginx(t, bench.NginxOptions{})
		ngx = append(ngx, n)
		peers = append(peers, engine.Peer{Name: "o" + strconv.Itoa(i), Addr: n.Addr(), Weight: w})
	}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {Peers: peers}}})
	const total, workers = 10000, 8
	h := groupHead(t, "/small", "peers.test")
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if st, err := exchange(e, "web", h); err != nil || st != 200 {
					failed.Add(1)
					t.Errorf("request: %d %v", st, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	stats := peersOf(e, "web")
	for i, n := range ngx {
		want := total * weights[i] / 10
		got := len(n.WaitRequests(want, 10*time.Second))
		picks := stats["o"+strconv.Itoa(i)].Picks
		t.Logf("origin %d (weight %d): nginx logged %d requests, balancer picks %d, want %d", i, weights[i], got, picks, want)
		if math.Abs(float64(got-want)) > 0.05*float64(want) {
			t.Errorf("origin %d served %d of %d requests, want %d ± 5%%", i, got, total, want)
		}
		if picks != uint64(got) {
			t.Errorf("origin %d: %d picks, %d requests logged", i, picks, got)
		}
	}
}

func TestPeersNginxLeastConnAvoidsSlowOrigin(t *testing.T) {
	leakBaseline(t)
	// /work is slow on the first origin (1 MiB at 64 KiB/s: 16s) and
	// instant on the others.
	slow := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /work {
            limit_rate 65536;
            try_files /1m =404;
        }`})
	fast := `
        location = /work {
            return 200 "fast";
        }`
	b := bench.StartNginx(t, bench.NginxOptions{Locations: fast})
	c := bench.StartNginx(t, bench.NginxOptions{Locations: fast})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {
		Balancer: balance.LeastConn,
		Peers:    []engine.Peer{{Name: "slow", Addr: slow.Addr()}, {Name: "b", Addr: b.Addr()}, {Name: "c", Addr: c.Addr()}},
	}}})
	h := groupHead(t, "/work", "peers.test")

	// All idle: the tie goes to the first peer, which is the slow one.
	ctx, cancel := context.WithCancel(context.Background())
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- e.Exchange(ctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: h}, &statusSink{})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for peersOf(e, "web")["slow"].Pool.Busy != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the first request did not go to the slow origin: %+v", peersOf(e, "web"))
		}
		time.Sleep(time.Millisecond)
	}
	// One request at a time: the fast origins are free at every pick, the
	// slow one is busy, so it gets nothing new.
	const n = 300
	for i := 0; i < n; i++ {
		if st, err := exchange(e, "web", h); err != nil || st != 200 {
			t.Fatalf("request %d: %d %v", i, st, err)
		}
	}
	ps := peersOf(e, "web")
	if ps["slow"].Picks != 1 || ps["b"].Picks+ps["c"].Picks != n {
		t.Fatalf("picks: slow %d, b %d, c %d; want 1 and %d between b and c", ps["slow"].Picks, ps["b"].Picks, ps["c"].Picks, n)
	}
	nb, nc := len(b.WaitRequests(int(ps["b"].Picks), 10*time.Second)), len(c.WaitRequests(int(ps["c"].Picks), 10*time.Second))
	t.Logf("slow origin busy with 1 request; fast origins served %d and %d", nb, nc)
	if nb+nc != n || nb == 0 || nc == 0 {
		t.Fatalf("fast origins logged %d and %d requests, want %d between them, both used", nb, nc, n)
	}
	cancel()
	<-slowDone
	if got := countURI(slow.Requests(), "/work"); got > 1 {
		t.Fatalf("slow origin logged %d requests for /work", got)
	}
}

// TestPeersNginxLeastConnWeights: under steady concurrent load,
// leastconn shares the requests in flight by weight, as nginx's
// least_conn does (active/weight): two nginx origins of weights 3 and 1,
// both slow to answer /work, take eight requests that stay in flight, 6
// and 2. (Weighing the loads alone, they would take 4 each.) Each request
// is started once the one before is counted in flight, so each pick sees
// the load it leaves.
func TestPeersNginxLeastConnWeights(t *testing.T) {
	leakBaseline(t)
	// 1 MiB at 64 KiB/s: 16s, far longer than the test holds them.
	slow := `
        location = /work {
            limit_rate 65536;
            try_files /1m =404;
        }`
	a := bench.StartNginx(t, bench.NginxOptions{Locations: slow})
	b := bench.StartNginx(t, bench.NginxOptions{Locations: slow})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {
		Balancer: balance.LeastConn,
		Peers:    []engine.Peer{{Name: "a", Addr: a.Addr(), Weight: 3}, {Name: "b", Addr: b.Addr(), Weight: 1}},
	}}})
	h := groupHead(t, "/work", "peers.test")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	const n = 8
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.Exchange(ctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: h}, &statusSink{})
		}()
		deadline := time.Now().Add(requestTimeout)
		for {
			ps := peersOf(e, "web")
			if ps["a"].Pool.Busy+ps["b"].Pool.Busy == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d never got busy: %+v", i, ps)
			}
			time.Sleep(time.Millisecond)
		}
	}
	ps := peersOf(e, "web")
	if ps["a"].Picks != 6 || ps["b"].Picks != 2 || ps["a"].Pool.Busy != 6 || ps["b"].Pool.Busy != 2 {
		t.Fatalf("eight requests in flight: a (weight 3) %d picks, %d busy; b (weight 1) %d picks, %d busy; want 6 and 2",
			ps["a"].Picks, ps["a"].Pool.Busy, ps["b"].Picks, ps["b"].Pool.Busy)
	}
}

func TestPeersNginxOriginStopsAndReturns(t *testing.T) {
	leakBaseline(t)
	var ngx [3]*bench.Nginx
	var peers []engine.Peer
	for i := range ngx {
		ngx[i] = bench.StartNginx(t, bench.NginxOptions{})
		peers = append(peers, engine.Peer{Name: "o" + strconv.Itoa(i), Addr: ngx[i].Addr()})
	}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {
		Peers:  peers,
		Health: engine.Health{MaxFails: 1, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	}}})
	h := groupHead(t, "/small", "peers.test")

	// Four clients send GETs until told to stop (at most 60,000 or 60s).
	var stop atomic.Bool
	var sent, errs atomic.Int64
	var wg sync.WaitGroup
	limit := time.Now().Add(60 * time.Second)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && sent.Add(1) <= 60000 && time.Now().Before(limit) {
				if st, err := exchange(e, "web", h); err != nil || st != 200 {
					if errs.Add(1) <= 5 {
						t.Errorf("request lost: %d %v", st, err)
					}
				}
			}
		}()
	}
	waitSent := func(n int64) {
		for sent.Load() < n && time.Now().Before(limit) {
			time.Sleep(time.Millisecond)
		}
	}
	waitSent(500)
	// Stop origin 1 in the middle of the run.
	port, _ := strconv.Atoi(ngx[1].Addr()[strings.LastIndexByte(ngx[1].Addr(), ':')+1:])
	before := peersOf(e, "web")["o1"].Picks
	ngx[1].Stop()
	stoppedAt := sent.Load()
	waitSent(stoppedAt + 2000)
	down := peersOf(e, "web")["o1"]
	t.Logf("origin 1 stopped after %d picks; %d requests later: state %v, failures %d, rerouted %d",
		before, sent.Load()-stoppedAt, down.State, down.Failures, down.Rerouted)
	if down.Failures == 0 {
		t.Errorf("stopping origin 1 was never noticed: %+v", down)
	}
	// Restart it on the same port: it gets traffic again.
	back := bench.StartNginx(t, bench.NginxOptions{Port: port})
	for len(back.Requests()) < 100 && time.Now().Before(limit) {
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	got := len(back.Requests())
	final := peersOf(e, "web")
	t.Logf("%d requests, %d lost; origin 1 back: %d requests on the restarted nginx, state %v, downs %d",
		sent.Load(), errs.Load(), got, final["o1"].State, final["o1"].Downs)
	if errs.Load() != 0 {
		t.Fatalf("%d requests lost", errs.Load())
	}
	if got < 100 {
		t.Fatalf("restarted origin served %d requests, want at least 100", got)
	}
	if final["o1"].State != engine.PeerUp {
		t.Fatalf("origin 1 state %v after it came back", final["o1"].State)
	}
}

// TestPeersNginxFailedCheckKeepsPeerOut runs active checks against two real
// nginx origins, one of which answers its health check 503 (taken out of
// service by its operator) while it still serves every other request. The
// failed check takes it out until a check passes: no request goes to it as
// a passive probe once its back-off is over, so that its 200s to those
// requests would bring it up again between two checks.
func TestPeersNginxFailedCheckKeepsPeerOut(t *testing.T) {
	leakBaseline(t)
	ok := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /healthz { return 200; }`})
	sick := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /healthz { return 503; }`})
	var logs syncLog
	e := startEngine(t, engine.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Groups: map[string]engine.GroupConfig{"web": {
		Peers: []engine.Peer{{Name: "ok", Addr: ok.Addr()}, {Name: "sick", Addr: sick.Addr()}},
		// One round of checks (at start), and a back-off over long
		// before each request below.
		Health: engine.Health{CheckPath: "/healthz", CheckInterval: time.Hour,
			Backoff: time.Millisecond, MaxBackoff: time.Millisecond},
	}}})
	deadline := time.Now().Add(requestTimeout)
	for peersOf(e, "web")["sick"].State != engine.PeerDown {
		if time.Now().After(deadline) {
			t.Fatalf("the failed check did not mark the peer down: %+v", peersOf(e, "web")["sick"])
		}
		time.Sleep(time.Millisecond)
	}
	// The log says why.
	if want := `msg="engine: peer down" group=web peer=sick fails=1 backoff=1ms reason="health check /healthz answered 503, want 2xx or 3xx"`; !strings.Contains(logs.String(), want) {
		t.Fatalf("log lacks %s:\n%s", want, logs.String())
	}
	const n = 20
	h := groupHead(t, "/small", "peers.test")
	for i := 0; i < n; i++ {
		time.Sleep(5 * time.Millisecond) // past the back-off
		if st, err := exchange(e, "web", h); err != nil || st != 200 {
			t.Fatalf("request %d: %d %v", i, st, err)
		}
	}
	ps := peersOf(e, "web")
	if got := countURI(ok.WaitRequests(n+1, 10*time.Second), "/small"); got != n {
		t.Errorf("the healthy origin served %d of the %d requests", got, n)
	}
	if got := countURI(sick.Requests(), "/small"); got != 0 {
		t.Errorf("the origin failing its check served %d requests", got)
	}
	if ps["sick"].State != engine.PeerDown || ps["sick"].Picks != 0 {
		t.Errorf("the origin failing its check: state %v, %d picks; want down, none", ps["sick"].State, ps["sick"].Picks)
	}
}

// TestPeersNginxCheckWaitingForCapNotAFailure holds the only connection
// that a real nginx origin's MaxConns allows, with a response whose body
// nobody reads yet: the active checks meanwhile wait in the engine's own
// queue for a connection and give up at their timeout. That says nothing of
// the origin, which is answering; it stays up, with no failure counted, and
// its requests are not refused with ErrNoPeer.
//
// The checks start only once the request holds the connection, and stop
// before its body is read: a check that does reach nginx within its short
// CheckTimeout is a check like any other, and one that a loaded machine
// keeps past 20 ms is rightly a failed one (docs/peers.md), which is not
// what this test is about.
func TestPeersNginxCheckWaitingForCapNotAFailure(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	peers := []engine.Peer{{Name: "o", Addr: ngx.Addr(), MaxConns: 1}}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {Peers: peers}}})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := e.Do(ctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: groupHead(t, "/1m", "peers.test")})
	if err != nil || resp.Status != 200 {
		t.Fatalf("GET /1m: %v", err)
	}
	// The body is not read: its connection stays busy, and the checks,
	// started now, wait.
	if err := e.SetGroup("web", engine.GroupConfig{Peers: peers, Health: engine.Health{CheckPath: "/small",
		CheckInterval: time.Millisecond, CheckTimeout: 20 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(requestTimeout)
	for peersOf(e, "web")["o"].Pool.WaitCancels < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	p := peersOf(e, "web")["o"]
	if p.Pool.WaitCancels < 3 {
		t.Fatalf("the checks did not wait for the busy connection: %+v", p.Pool)
	}
	if p.State != engine.PeerUp || p.Failures != 0 || p.Downs != 0 {
		t.Fatalf("checks that never reached the origin judged it: state %v, failures %d, downs %d", p.State, p.Failures, p.Downs)
	}
	// A request is not refused either: it queues for the connection, as
	// the checks do, until its own deadline.
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = e.Exchange(wctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: groupHead(t, "/small", "peers.test")}, &statusSink{})
	wcancel()
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhasePoolWait || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET /small while the connection is busy: %v, want a wait for it until the deadline", err)
	}
	// The checks end (and the wait with them) before the body frees the
	// connection.
	if err := e.SetGroup("web", engine.GroupConfig{Peers: peers}); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != bench.Size1M {
		t.Fatalf("body: %d bytes, %v", n, err)
	}
	if st, err := exchange(e, "web", groupHead(t, "/small", "peers.test")); err != nil || st != 200 {
		t.Fatalf("GET /small after the body: %d %v", st, err)
	}
}

// squidHelper skips when Squid's basic authentication helper is missing.
func squidHelper(t *testing.T) {
	const helper = "/usr/lib/squid/basic_ncsa_auth"
	if _, err := os.Stat(helper); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (scripts/test.sh installs squid)", helper, err)
		}
		t.Skipf("Squid's basic auth helper %s is missing: %v", helper, err)
	}
}

func TestPeersSquidParent(t *testing.T) {
	leakBaseline(t)
	origin := bench.StartNginx(t, bench.NginxOptions{})
	squid := bench.StartSquid(t, bench.SquidOptions{})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"parents": {
		Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true}},
	}}})
	// An origin-form head: the engine sends "GET http://<Host>/small".
	h := groupHead(t, "/small", origin.Addr())
	for i := 0; i < 3; i++ {
		resp, body, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Group: "parents"}, Head: h})
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d through Squid: %v %q %v", i, resp, body, err)
		}
	}
	if got := countURI(origin.WaitRequests(3, 10*time.Second), "/small"); got != 3 {
		t.Fatalf("origin logged %d requests, want 3", got)
	}
	url := "http://" + origin.Addr() + "/small"
	// Squid writes its access log a moment after the reply.
	var seen int
	for deadline := time.Now().Add(10 * time.Second); seen < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		seen = 0
		for _, l := range squid.AccessLog() {
			if strings.Contains(l, " GET "+url+" ") {
				seen++
			}
		}
	}
	if seen != 3 {
		t.Fatalf("Squid logged %d GETs of %s, want 3:\n%s", seen, url, strings.Join(squid.AccessLog(), "\n"))
	}
	if p := peersOf(e, "parents")["squid"]; p.Pool.Dialed != 1 || !p.Parent {
		t.Fatalf("parent peer %+v, want one connection reused", p)
	}
}

func TestPeersSquidParentBasicAuth(t *testing.T) {
	squidHelper(t)
	leakBaseline(t)
	origin := bench.StartNginx(t, bench.NginxOptions{})
	squid := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{"alice": "s3cret"}})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"good": {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true, Username: "alice", Password: "s3cret"}}},
		"bad":  {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true, Username: "alice", Password: "wrong"}}},
		"none": {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true}}},
	}})
	h := groupHead(t, "/small", origin.Addr())
	for group, want := range map[string]int{"good": 200, "bad": 407, "none": 407} {
		resp, body, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Group: group}, Head: h})
		if err != nil || resp.Status != want {
			t.Fatalf("%s credentials: %v %v, want status %d", group, resp, err, want)
		}
		if want == 200 && string(body) != bench.SmallBody {
			t.Fatalf("body %q", body)
		}
	}
	var authed int
	for deadline := time.Now().Add(10 * time.Second); authed < 1 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		authed = 0
		for _, l := range squid.AccessLog() {
			if strings.Contains(l, " alice ") && strings.Contains(l, "/200 ") {
				authed++
			}
		}
	}
	if authed != 1 {
		t.Fatalf("Squid logged %d requests by alice with 200, want 1:\n%s", authed, strings.Join(squid.AccessLog(), "\n"))
	}
	// Each credential has its own connections: none was handed to
	// another group's requests.
	for _, g := range []string{"good", "bad", "none"} {
		if p := peersOf(e, g)["squid"]; p.Pool.Dialed != 1 || p.Pool.Reused != 0 {
			t.Fatalf("%s: pool %+v, want one connection of its own", g, p.Pool)
		}
	}
}

// A request queued for a peer at its connection cap when the peer is
// drained goes to another peer of the group: nothing of it was sent.
func TestPeersNginxDrainReroutesQueued(t *testing.T) {
	leakBaseline(t)
	ngx := map[string]*bench.Nginx{"a": bench.StartNginx(t, bench.NginxOptions{}), "b": bench.StartNginx(t, bench.NginxOptions{})}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"web": {Peers: []engine.Peer{
		{Name: "a", Addr: ngx["a"].Addr(), MaxConns: 1},
		{Name: "b", Addr: ngx["b"].Addr(), MaxConns: 1},
	}}}})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	// Two downloads whose bodies are not read yet hold both connections.
	var held []*engine.Response
	for i := 0; i < 2; i++ {
		resp, err := e.Do(ctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: groupHead(t, "/1m", "peers.test")})
		if err != nil || resp.Status != 200 {
			t.Fatalf("GET /1m %d: %v", i, err)
		}
		held = append(held, resp)
	}
	if p := peersOf(e, "web"); p["a"].Pool.Busy != 1 || p["b"].Pool.Busy != 1 {
		t.Fatalf("the downloads did not take one connection of each peer: a %+v, b %+v", p["a"].Pool, p["b"].Pool)
	}
	type result struct {
		status int
		err    error
	}
	queued := make(chan result, 1)
	go func() {
		st, err := exchange(e, "web", groupHead(t, "/small", "peers.test"))
		queued <- result{st, err}
	}()
	var drained, other string
	for deadline := time.Now().Add(requestTimeout); drained == ""; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the request did not queue: %+v", peersOf(e, "web"))
		}
		for name, p := range peersOf(e, "web") {
			if p.Pool.Waiting == 1 {
				drained = name
			}
		}
	}
	other = map[string]string{"a": "b", "b": "a"}[drained]
	if err := e.DrainPeer("web", drained); err != nil {
		t.Fatal(err)
	}
	for i, resp := range held {
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != bench.Size1M {
			t.Fatalf("body %d: %d bytes, %v", i, n, err)
		}
	}
	if r := <-queued; r.err != nil || r.status != 200 {
		t.Fatalf("request queued for %s when it was drained: %d %v", drained, r.status, r.err)
	}
	if got := countURI(ngx[other].WaitRequests(2, requestTimeout), "/small"); got != 1 {
		t.Fatalf("%s logged %d requests for /small, want 1", other, got)
	}
	if p := peersOf(e, "web")[drained]; p.Rerouted != 1 {
		t.Fatalf("%s: rerouted %d, want 1", drained, p.Rerouted)
	}
}

// TestPeersNginxPeerWithLogin: a peer whose requests carry the engine's
// own login pools them under a key of their own (the peer's key with the
// login's credential scope), and those connections are still the peer's:
// PeerStats counts them, a drain closes the idle one at once and the busy
// one after its response (draining, then drained), and after the undrain
// the next request opens a new connection (nginx's log, by connection).
func TestPeersNginxPeerWithLogin(t *testing.T) {
	leakBaseline(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	login := &engine.Auth{Origin: engine.Login{Mode: engine.LoginOwn, Preemptive: true,
		Credentials: engine.Credentials{User: "u", Password: "p"}}}
	e := startEngine(t, engine.Config{
		Groups: map[string]engine.GroupConfig{"web": {Peers: []engine.Peer{{Name: "a", Addr: ng.Addr()}}}},
		Auth:   func(engine.Upstream) *engine.Auth { return login },
	})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	// A download whose body is not read yet holds one connection; a
	// second request opens another, which goes idle.
	held, err := e.Do(ctx, &engine.Request{Upstream: engine.Upstream{Group: "web"}, Head: groupHead(t, "/1m", "peers.test")})
	if err != nil || held.Status != 200 {
		t.Fatalf("GET /1m: %v", err)
	}
	if st, err := exchange(e, "web", groupHead(t, "/small", "peers.test")); err != nil || st != 200 {
		t.Fatalf("GET /small: %d %v", st, err)
	}
	// The pool's own figures for the login's key.
	keyStats := func() poolset.Stats {
		t.Helper()
		var out []poolset.Stats
		for k, s := range e.Stats() {
			if strings.HasPrefix(k, ng.Addr()+" cred=") {
				out = append(out, s.Pool)
			}
		}
		if len(out) != 1 {
			t.Fatalf("%d pool keys with a credential scope, want 1: %v", len(out), e.Stats())
		}
		return out[0]
	}
	if ks, p := keyStats(), peersOf(e, "web")["a"].Pool; ks.Busy != 1 || ks.Idle != 1 || p.Busy != 1 || p.Idle != 1 {
		t.Fatalf("before the drain: the login's key %+v, the peer %+v; want one busy, one idle in both", ks, p)
	}
	if err := e.DrainPeer("web", "a"); err != nil {
		t.Fatal(err)
	}
	p := peersOf(e, "web")["a"]
	if ks := keyStats(); ks.Idle != 0 || ks.Busy != 1 || ks.Closed.Drained != 1 || p.State != engine.PeerDraining || p.Pool.Busy != 1 {
		t.Fatalf("after the drain: the login's key %+v, the peer %v %+v; want the idle connection closed, the busy one left, draining",
			ks, p.State, p.Pool)
	}
	n, err := io.Copy(io.Discard, held.Body)
	held.Body.Close()
	if err != nil || n != bench.Size1M {
		t.Fatalf("body: %d bytes, %v", n, err)
	}
	for deadline := time.Now().Add(requestTimeout); peersOf(e, "web")["a"].State != engine.PeerDrained; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the peer did not turn drained: %+v", peersOf(e, "web")["a"])
		}
	}
	if ks, p := keyStats(), peersOf(e, "web")["a"]; ks.Conns() != 0 || ks.Closed.Drained != 2 || p.Pool.Conns() != 0 || p.Pool.Closed.Drained != 2 {
		t.Fatalf("drained: the login's key %+v, the peer %+v; want no connection, two closed by the drain", ks, p.Pool)
	}
	if err := e.UndrainPeer("web", "a"); err != nil {
		t.Fatal(err)
	}
	if st, err := exchange(e, "web", groupHead(t, "/small?after", "peers.test")); err != nil || st != 200 {
		t.Fatalf("GET after the undrain: %d %v", st, err)
	}
	reqs := ng.WaitRequests(3, requestTimeout)
	if len(reqs) != 3 || reqs[2].URI != "/small?after" || reqs[2].ConnRequests != 1 {
		t.Fatalf("nginx's log: want the request after the undrain first on a new connection:\n%+v", reqs)
	}
}

// TestPeersParentTunnelsAreItsConnections: a parent's CONNECT tunnels and
// its pooled tunnels to an https origin pool under the origin's key with
// the parent's route (Via "connect=<parent>"), and they are connections
// to the parent all the same: PeerStats counts the open tunnel busy and
// the pooled one idle; a drain closes the idle one at once, and the
// parent stays draining until the open tunnel is closed.
func TestPeersParentTunnelsAreItsConnections(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())}})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"parents": {Peers: []engine.Peer{
		{Name: "sq", Addr: sq.Addr(), Parent: true},
	}}}})
	nc, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "parents"})
	if err != nil {
		t.Fatalf("tunnel: %v", err)
	}
	defer nc.Close()
	par, err := e.PickParent("parents", "")
	if err != nil {
		t.Fatal(err)
	}
	req := tlsGet(t, ngx, "origin.test", "/small", &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}, "")
	req.Via = par
	if resp, body, err := fetch(e, req); err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
		t.Fatalf("https through the parent: %v", err)
	}
	// The pool's own figures for the keys of the parent's route.
	route := func() (busy, idle int, drained uint64) {
		for k, s := range e.Stats() {
			if strings.Contains(k, " via=connect="+sq.Addr()) {
				busy, idle, drained = busy+s.Pool.Busy, idle+s.Pool.Idle, drained+s.Pool.Closed.Drained
			}
		}
		return busy, idle, drained
	}
	if b, i, _ := route(); b != 1 || i != 1 {
		t.Fatalf("the parent's route: %d busy, %d idle; want the tunnel busy and the pooled one idle", b, i)
	}
	if p := peersOf(e, "parents")["sq"].Pool; p.Busy != 1 || p.Idle != 1 {
		t.Fatalf("the parent's stats %+v: want one busy (the tunnel), one idle", p)
	}
	if err := e.DrainPeer("parents", "sq"); err != nil {
		t.Fatal(err)
	}
	if b, i, d := route(); b != 1 || i != 0 || d != 1 {
		t.Fatalf("after the drain, the parent's route: %d busy, %d idle, %d closed by the drain; want the idle one closed", b, i, d)
	}
	if p := peersOf(e, "parents")["sq"]; p.State != engine.PeerDraining || p.Pool.Busy != 1 {
		t.Fatalf("after the drain: %v %+v; want draining with the tunnel open", p.State, p.Pool)
	}
	_ = nc.Close()
	for deadline := time.Now().Add(requestTimeout); peersOf(e, "parents")["sq"].State != engine.PeerDrained; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the parent did not turn drained after its tunnel closed: %+v", peersOf(e, "parents")["sq"])
		}
	}
}

// TestPeersParentTunnelsByCredentials: three groups have the same Squid as
// a parent, with two credentials of their own and none: a tunnel through
// one of them is that peer's connection alone (the tunnel's key carries
// the credentials' scope), not the other two's.
func TestPeersParentTunnelsByCredentials(t *testing.T) {
	squidHelper(t)
	leakBaseline(t)
	origin := bench.StartNginx(t, bench.NginxOptions{})
	squid := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{"alice": "s3cret"}})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"good": {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true, Username: "alice", Password: "s3cret"}}},
		"bad":  {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true, Username: "alice", Password: "wrong"}}},
		"none": {Peers: []engine.Peer{{Name: "squid", Addr: squid.Addr(), Parent: true}}},
	}})
	nc, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: origin.Addr(), Group: "good"})
	if err != nil {
		t.Fatalf("tunnel: %v", err)
	}
	defer nc.Close()
	for g, want := range map[string]int{"good": 1, "bad": 0, "none": 0} {
		if p := peersOf(e, g)["squid"].Pool; p.Busy != want {
			t.Fatalf("%s: pool %+v, want %d busy", g, p, want)
		}
	}
}

// TestPeersViaGroup: https requests through a group of parents
// (Upstream.ViaGroup) count in the parents' health as requests sent to
// them: a parent that refuses connections fails, its requests move to
// Squid and none fails, and after MaxFails it is down; a parent that
// refuses the CONNECT (Squid's 407 for a wrong password) answered, so it
// counts for its health, and the request is not moved.
func TestPeersViaGroup(t *testing.T) {
	squidHelper(t)
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there: connects are refused
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"parents": {Peers: []engine.Peer{
			{Name: "dead", Addr: dead, Parent: true},
			{Name: "sq", Addr: sq.Addr(), Parent: true, Username: "alice", Password: "s3cret"},
		}},
		"wrong": {Peers: []engine.Peer{
			{Name: "bad", Addr: sq.Addr(), Parent: true, Username: "alice", Password: "wrong"},
			{Name: "good", Addr: sq.Addr(), Parent: true, Username: "alice", Password: "s3cret"},
		}},
	}})
	get := func(group string) (*engine.Response, []byte, error) {
		req := tlsGet(t, ngx, "origin.test", "/small", &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}, "")
		req.ViaGroup = group
		return fetch(e, req)
	}
	for i := 0; i < 6; i++ {
		if resp, body, err := get("parents"); err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d through the parents: %v", i, err)
		}
	}
	ps := peersOf(e, "parents")
	if d := ps["dead"]; d.Failures < 3 || d.Rerouted < 3 || d.Downs != 1 || d.State != engine.PeerDown {
		t.Fatalf("the dead parent %+v: want at least 3 failures and 3 requests moved, down once", d)
	}
	if s := ps["sq"]; s.Failures != 0 || s.State != engine.PeerUp || s.Picks < 6 {
		t.Fatalf("squid %+v: want up with every request", s)
	}
	// Round-robin over "wrong": bad, then good.
	if _, _, err := get("wrong"); !errors.Is(err, conn.ErrTunnelRefused) || !strings.Contains(err.Error(), "407") {
		t.Fatalf("through the wrong password: %v, want the 407 refusal", err)
	}
	if resp, _, err := get("wrong"); err != nil || resp.Status != 200 {
		t.Fatalf("through the right password: %v", err)
	}
	if b := peersOf(e, "wrong")["bad"]; b.Failures != 0 || b.Rerouted != 0 || b.Picks != 1 || b.State != engine.PeerUp {
		t.Fatalf("the refusing parent %+v: want one pick, no failure, not moved", b)
	}
}

// TestPeersParentSlowOriginNotAgainstParent: through a group of parents
// (two real Squids), an origin that takes the request and never answers
// fails the request at ResponseHeaderTimeout, but that says nothing of
// the parent, which only waits for the origin as the engine does: the
// parent is not counted down (one failure would mark it down here), and
// the GET does not go again through the other parent, which would send
// it to the same origin a second time.
func TestPeersParentSlowOriginNotAgainstParent(t *testing.T) {
	leakBaseline(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		gets  atomic.Int32
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() { // the origin: reads request heads, never answers
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "GET ") {
						gets.Add(1)
					}
				}
			}()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	a := bench.StartSquid(t, bench.SquidOptions{})
	b := bench.StartSquid(t, bench.SquidOptions{})
	e := startEngine(t, engine.Config{ResponseHeaderTimeout: 500 * time.Millisecond, Groups: map[string]engine.GroupConfig{"parents": {
		Peers:  []engine.Peer{{Name: "a", Addr: a.Addr(), Parent: true}, {Name: "b", Addr: b.Addr(), Parent: true}},
		Health: engine.Health{MaxFails: 1, Backoff: time.Hour},
	}}})
	h := groupHead(t, "/slow", ln.Addr().String())
	const n = 2
	for i := 0; i < n; i++ {
		if _, _, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Group: "parents"}, Head: h}); !errors.Is(err, conn.ErrHeaderTimeout) {
			t.Fatalf("GET %d through the parents to the silent origin: %v, want the header timeout", i, err)
		}
	}
	for name, p := range peersOf(e, "parents") {
		if p.State != engine.PeerUp || p.Failures != 0 || p.Rerouted != 0 || p.Picks != 1 {
			t.Errorf("parent %s: %+v; want up, one pick, no failure, nothing moved", name, p)
		}
	}
	// Squid may take a moment to pass the last request on.
	for deadline := time.Now().Add(5 * time.Second); gets.Load() < n && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	time.Sleep(200 * time.Millisecond)
	if got := gets.Load(); got != n {
		t.Errorf("the origin read %d GETs, want %d: each once", got, n)
	}
}

// TestPeersParentMaxConnsCountsTunnels: a parent's MaxConns caps every
// connection to it, its CONNECT tunnels included (as Squid's cache_peer
// max-conn does): with two tunnels open through a Squid parent of
// MaxConns 2, a third CONNECT and a request through the parent queue in
// its wait queue, first come first served, and are served as the tunnels
// close; nothing more reaches Squid meanwhile. An idle connection of the
// parent's makes room for a tunnel at the cap, and a CONNECT that waits
// past the peer's PendingTimeout fails with ErrPoolTimeout, sending
// nothing.
func TestPeersParentMaxConnsCountsTunnels(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())}})
	group := func(pending time.Duration) engine.GroupConfig {
		return engine.GroupConfig{Peers: []engine.Peer{
			{Name: "sq", Addr: sq.Addr(), Parent: true, MaxConns: 2, PendingTimeout: pending},
		}}
	}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"parents": group(time.Minute)}})
	open := func() (net.Conn, error) {
		nc, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "parents"})
		return nc, err
	}
	// connects is the number of CONNECTs sent to Squid (the tunnel keys'
	// connections dialed).
	connects := func() uint64 {
		var n uint64
		for k, s := range e.Stats() {
			if strings.Contains(k, " via=connect="+sq.Addr()) {
				n += s.Pool.Dialed
			}
		}
		return n
	}
	sqStats := func() engine.PeerStats { return peersOf(e, "parents")["sq"] }

	t1, err := open()
	if err != nil {
		t.Fatalf("first tunnel: %v", err)
	}
	t2, err := open()
	if err != nil {
		t.Fatalf("second tunnel: %v", err)
	}
	defer t2.Close()
	if p := sqStats().Pool; p.Busy != 2 || p.Waiting != 0 {
		t.Fatalf("two tunnels open: the parent's stats %+v, want 2 busy", p)
	}

	type result struct {
		nc  net.Conn
		err error
	}
	third := make(chan result, 1)
	go func() { nc, err := open(); third <- result{nc, err} }()
	waitFor(t, "the third CONNECT to queue", func() bool { return sqStats().Pool.Waiting == 1 })
	got := make(chan error, 1)
	go func() {
		status, err := exchange(e, "parents", groupHead(t, "/small", ngx.Addr()))
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		got <- err
	}()
	waitFor(t, "the request to queue behind it", func() bool { return sqStats().Pool.Waiting == 2 })
	if n := connects(); n != 2 {
		t.Fatalf("%d CONNECTs sent at the cap, want 2", n)
	}

	// One tunnel closes: the third CONNECT (first in the queue) is sent.
	_ = t1.Close()
	r := <-third
	if r.err != nil {
		t.Fatalf("third tunnel, after one closed: %v", r.err)
	}
	if p := sqStats().Pool; p.Busy != 2 || p.Waiting != 1 {
		t.Fatalf("third tunnel open: the parent's stats %+v, want 2 busy and the request waiting", p)
	}
	// Another closes: the request goes.
	_ = t2.Close()
	if err := <-got; err != nil {
		t.Fatalf("request through the parent, after a tunnel closed: %v", err)
	}
	// The request's connection stays idle; a tunnel at the cap (the third
	// one open, that idle connection) closes it to make room.
	waitFor(t, "the request's connection to go idle", func() bool { p := sqStats().Pool; return p.Idle == 1 && p.Busy == 1 })
	fourth, err := open()
	if err != nil {
		t.Fatalf("fourth tunnel, at the cap with an idle connection: %v", err)
	}
	defer fourth.Close()
	if p := sqStats().Pool; p.Busy != 2 || p.Idle != 0 {
		t.Fatalf("fourth tunnel open: the parent's stats %+v, want 2 busy, none idle", p)
	}

	// A wait past the peer's PendingTimeout fails, nothing sent.
	if err := e.SetGroup("parents", group(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	before := connects()
	nc, err := open()
	if !errors.Is(err, poolset.ErrPoolTimeout) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("CONNECT at the cap past PendingTimeout: err %v, want ErrPoolTimeout", err)
	}
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhasePoolWait {
		t.Fatalf("CONNECT at the cap past PendingTimeout: err %v, want a pool-wait *conn.Error", err)
	}
	if n := connects(); n != before {
		t.Fatalf("%d CONNECTs sent by the one that timed out, want none", n-before)
	}
	_ = r.nc.Close()
	_ = fourth.Close()
	waitFor(t, "the tunnels to close", func() bool { return sqStats().Pool.Conns() == 0 })
	// Squid logs a tunnel when it ends: the four, and the request.
	var connectLines, getLines int
	waitFor(t, "Squid to log the tunnels", func() bool {
		connectLines, getLines = 0, 0
		for _, l := range sq.AccessLog() {
			switch {
			case strings.Contains(l, " CONNECT "):
				connectLines++
			case strings.Contains(l, " GET "):
				getLines++
			}
		}
		return connectLines >= 4
	})
	if connectLines != 4 || getLines != 1 {
		t.Fatalf("Squid logged %d CONNECTs and %d GETs, want 4 and 1:\n%s", connectLines, getLines, strings.Join(sq.AccessLog(), "\n"))
	}
}

// TestPeersDrainMovesWaitingTunnel: two Squid parents of MaxConns 1,
// each with a tunnel open. A third CONNECT waits for a slot at one of
// them; draining that parent moves it, having sent nothing there, to the
// other, where it is served once that parent's tunnel closes.
func TestPeersDrainMovesWaitingTunnel(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	ports := []int{bench.Port(t, ngx.TLSAddr())}
	sq1 := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: ports})
	sq2 := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: ports})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"parents": {Peers: []engine.Peer{
		{Name: "sq1", Addr: sq1.Addr(), Parent: true, MaxConns: 1, PendingTimeout: time.Minute},
		{Name: "sq2", Addr: sq2.Addr(), Parent: true, MaxConns: 1, PendingTimeout: time.Minute},
	}}}})
	addr := map[string]string{"sq1": sq1.Addr(), "sq2": sq2.Addr()}
	// tunnelsVia counts the tunnels through the named parent.
	tunnelsVia := func(name string) (open int, dialed uint64) {
		for k, s := range e.Stats() {
			if strings.Contains(k, " via=connect="+addr[name]) {
				open, dialed = open+s.Pool.Busy, dialed+s.Pool.Dialed
			}
		}
		return open, dialed
	}
	open := func() (net.Conn, error) {
		nc, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "parents"})
		return nc, err
	}
	through := map[string]net.Conn{}
	for i := 0; i < 2; i++ {
		nc, err := open()
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		defer nc.Close()
		for _, name := range []string{"sq1", "sq2"} {
			if n, _ := tunnelsVia(name); n == 1 && through[name] == nil {
				through[name] = nc
				break
			}
		}
	}
	if len(through) != 2 {
		t.Fatal("the two tunnels did not go one through each parent")
	}
	third := make(chan error, 1)
	go func() {
		nc, err := open()
		if nc != nil {
			defer nc.Close()
		}
		third <- err
	}()
	var queued, other string
	waitFor(t, "the third CONNECT to queue at a parent", func() bool {
		for _, name := range []string{"sq1", "sq2"} {
			if peersOf(e, "parents")[name].Pool.Waiting == 1 {
				queued = name
			}
		}
		return queued != ""
	})
	other = map[string]string{"sq1": "sq2", "sq2": "sq1"}[queued]
	if err := e.DrainPeer("parents", queued); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the third CONNECT to queue at the other parent", func() bool { return peersOf(e, "parents")[other].Pool.Waiting == 1 })
	_ = through[other].Close()
	if err := <-third; err != nil {
		t.Fatalf("third tunnel, moved off the drained parent: %v", err)
	}
	if _, dialed := tunnelsVia(queued); dialed != 1 {
		t.Fatalf("%d CONNECTs through the drained parent, want its first alone", dialed)
	}
	if _, dialed := tunnelsVia(other); dialed != 2 {
		t.Fatalf("%d CONNECTs through %s, want 2", dialed, other)
	}
	if n := peersOf(e, "parents")[queued].Rerouted; n != 1 {
		t.Fatalf("%s: %d moved away, want the waiting CONNECT", queued, n)
	}
}
