package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
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
)

// TestSoak runs many concurrent callers through Do, Exchange, Send, the
// Transport and Tunnel against real nginx, in-process origins that
// misbehave at random (resets before and after the head, a close in the
// middle of the body, stalls, malformed heads, interim responses, bytes
// behind a response, idle keep-alive connections closed, "Connection:
// close", HTTP/1.0, bodies delimited by the close), the same origins as
// parent proxies (CONNECT tunnels, some refused, and a group of parents),
// an address that refuses connections and a peer group whose peers are
// drained, undrained and replaced at random (random weights and
// balancers, leastconn among them), requests tunnelled through a parent of
// a group (Upstream.ViaGroup), requests pipelined to origins
// (Upstream.Pipeline, and Peer.Pipeline on some peers of the groups:
// those of callers whose context cannot end), origins that answer with a
// "Keep-Alive: timeout=1" hint and close at its end, with random deadlines,
// cancellations, early Body.Close, slow and failing sinks, uploads with
// and without a length or "Expect: 100-continue", and pinned requests
// with Unpin. It runs in rounds, each with a new engine of a random
// configuration (netpoll or Go net, shards, high-water mark, retries,
// strict resends, connection lifetime and request limits, pipeline stall),
// ended by Drain and Close while requests are in flight. It checks that
// every call returns, that every error is a *conn.Error or a documented
// sentinel, that a response names the request it answers, that no POST
// reached an origin twice, that the pool's gauges stay within the cap
// and are zero after Close with every dialed connection closed, that
// the Stats counters agree with what the callers saw, and that no
// goroutine or file descriptor is left.
//
// It is skipped unless SERVERSIDE_SOAK is set: SERVERSIDE_SOAK=1 runs it
// for 60 s; SERVERSIDE_SOAK_TIME (a duration), SERVERSIDE_SOAK_REQUESTS
// (a count, default 200000), SERVERSIDE_SOAK_CALLERS (default 64: fewer
// leave idle connections in the pools, which the inline path and
// pipelines start on) and SERVERSIDE_SOAK_SEED (default: the clock)
// change the run, and SERVERSIDE_SOAK_GAUGES=1 logs the pool's gauges as
// it goes. Run it under the race detector:
//
//	SERVERSIDE_SOAK=1 go test -race -run TestSoak -v ./engine
//
// Under the race detector a run on netpoll may now and then report a
// race inside netpoll v0.7.2 itself: its poller formats an operator for
// its "operator has critical problem" log while a cancelled dial resets
// that operator's fields.
func TestSoak(t *testing.T) {
	dur := bench.SoakDuration(t, 60*time.Second)
	maxReqs := int64(bench.SoakCount(t, "SERVERSIDE_SOAK_REQUESTS", 200000))
	callers := bench.SoakCount(t, "SERVERSIDE_SOAK_CALLERS", 64)
	seed := bench.SoakSeed(t)
	t.Logf("seed %d, %v, at most %d requests, %d callers, GOMAXPROCS %d", seed, dur, maxReqs, callers, runtime.GOMAXPROCS(0))

	bench.CheckLeaks(t)
	s := newSoak(t, seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	end := time.Now().Add(dur)
	for round := 0; time.Now().Before(end) && s.reqs.Load() < maxReqs; round++ {
		s.newEngine(round)
		s.run(min(time.Until(end), time.Duration(2+rng.IntN(10))*time.Second), maxReqs, callers)
		if t.Failed() {
			break
		}
	}
	s.logOutcomes()
}

// soakModes are what a fake origin does with a request, named in its path
// ("/f/<mode>/<id>").
var soakModes = []string{
	"ok", "ok", "ok", "ok", "chunked", "interim", "close", "idleclose",
	"resetbefore", "resetafterhead", "midbody", "stall", "malformed", "big",
	"extra", "early413", "http10", "hint", "nocontent", "untilclose", "continue",
	"hintclose",
}

type soak struct {
	t       *testing.T
	seed    uint64
	ngx     *bench.Nginx
	fakes   []*bench.Origin
	refused string
	gonet   bool
	// drainMode is how a round ends: 0 Drain with a short deadline then
	// Close, 1 Close alone, 2 Drain and Close at once, 3 Drain with a long
	// deadline then Close.
	drainMode int
	peers     []engine.Peer
	e         *engine.Engine
	tr        http.RoundTripper
	nextID    atomic.Uint64
	posts     sync.Map // POST id -> *atomic.Int32: times an origin got it
	reqs      atomic.Int64
	accepted  atomic.Int64 // requests the engine took (OnDone will run)
	failed    atomic.Int64 // of those, the ones whose callers saw an error
	early     atomic.Int64 // of those, bodies closed early: failed or not
	// uncertain counts Do's ErrPinnedGone: a refusal, or a request
	// that failed.
	uncertain atomic.Int64
	tunnelsOK atomic.Int64 // of the tunnels, those opened
	tunnels   atomic.Int64
	mu        sync.Mutex
	unknown   map[string]int // unexpected error kinds, with counts
	kinds     map[string]int // outcome counts, for the log
}

func newSoak(t *testing.T, seed uint64) *soak {
	s := &soak{t: t, seed: seed, unknown: map[string]int{}, kinds: map[string]int{}}
	s.ngx = bench.StartNginx(t, bench.NginxOptions{KeepaliveTimeout: "2s", KeepaliveRequests: 50})
	for i := 0; i < 3; i++ {
		s.fakes = append(s.fakes, bench.NewOrigin(t, s.serve))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.refused = ln.Addr().String()
	ln.Close()

	peers := []engine.Peer{{Name: "ngx", Addr: s.ngx.Addr()}, {Name: "refused", Addr: s.refused}}
	for i, f := range s.fakes[:2] {
		peers = append(peers, engine.Peer{Name: fmt.Sprintf("fake%d", i), Addr: f.Addr(), MaxConns: 8})
	}
	s.peers = peers
	return s
}

// newEngine starts round's engine, its configuration drawn from the seed.
func (s *soak) newEngine(round int) {
	t := s.t
	cfgRng := rand.New(rand.NewPCG(s.seed, 7+uint64(round)))
	s.gonet = cfgRng.IntN(2) == 0
	var e *engine.Engine
	e, err := engine.New(engine.Config{
		GoNetIO:               s.gonet,
		Shards:                1 + cfgRng.IntN(4),
		BodyHighWater:         []int{0, 64 << 10, 16 << 10}[cfgRng.IntN(3)],
		MaxRetries:            []int{0, -1, 1, 3}[cfgRng.IntN(4)],
		ConnectTimeout:        time.Second,
		ResponseHeaderTimeout: time.Second,
		ExpectContinueTimeout: 100 * time.Millisecond,
		PipelineStall:         []time.Duration{0, 2 * time.Millisecond, 100 * time.Millisecond}[cfgRng.IntN(3)],
		IdleTimeout:           2 * time.Second,
		MaxConnsPerUpstream:   24,
		MaxConnRequests:       []int{20, 0, 3}[cfgRng.IntN(3)],
		MaxConnLifetime:       []time.Duration{0, 300 * time.Millisecond, 2 * time.Second}[cfgRng.IntN(3)],
		StrictResend:          cfgRng.IntN(4) == 0,
		PendingTimeout:        500 * time.Millisecond,
		PinnedIdleTimeout:     time.Second,
		// An embedder closes the client connection, which unpins.
		OnPinnedClosed: func(key uint64) { go e.Unpin(key) },
		Groups: map[string]engine.GroupConfig{"pg": {
			Peers:    s.randomPeers(cfgRng, []engine.Peer{{Name: "p0", Addr: s.fakes[0].Addr(), Parent: true}, {Name: "p1", Addr: s.fakes[1].Addr(), Parent: true}}),
			Balancer: randomBalancer(cfgRng),
		}, "g": s.randomGroup(cfgRng, s.peers)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	s.e = e
	s.tr = e.Transport()
	s.accepted.Store(0)
	s.failed.Store(0)
	s.early.Store(0)
	s.uncertain.Store(0)
	s.tunnels.Store(0)
	s.tunnelsOK.Store(0)
	s.drainMode = cfgRng.IntN(4)
	t.Logf("round %d: GoNetIO %v, end %d", round, s.gonet, s.drainMode)
}

// randomGroup is a configuration of group "g" with peers: a random
// balancer, random weights and pipelining.
func (s *soak) randomGroup(rng *rand.Rand, peers []engine.Peer) engine.GroupConfig {
	return engine.GroupConfig{
		Peers:    s.randomPeers(rng, peers),
		Balancer: randomBalancer(rng),
		Seed:     rng.Uint64(),
		// Passive health only: active checks are requests too, which
		// the Stats check at the end could not tell from the callers'.
		Health: engine.Health{MaxFails: 2, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	}
}

// randomPeers returns a copy of peers with random weights and pipeline
// depths.
func (s *soak) randomPeers(rng *rand.Rand, peers []engine.Peer) []engine.Peer {
	out := make([]engine.Peer, len(peers))
	for i, p := range peers {
		p.Weight = []int{0, 1, 2, 5}[rng.IntN(4)]
		p.Pipeline = []int{0, 2, 4, 8}[rng.IntN(4)]
		out[i] = p
	}
	return out
}

func randomBalancer(rng *rand.Rand) balance.Kind {
	return []balance.Kind{balance.RoundRobin, balance.LeastConn, balance.P2C, balance.Hash}[rng.IntN(4)]
}

// serve is the fake origins' connection handler: it reads requests and
// does what each one's path says.
func (s *soak) serve(_ int, c net.Conn, br *bufio.Reader) {
	rng := rand.New(rand.NewPCG(s.seed, uint64(time.Now().UnixNano())))
	for {
		lines, err := bench.ReadHead(br)
		if err != nil || len(lines) == 0 {
			return
		}
		_ = c.SetReadDeadline(time.Time{}) // "hintclose" set one
		f := strings.Fields(lines[0])
		if len(f) != 3 {
			return
		}
		method, target := f[0], f[1]
		if method == "CONNECT" {
			// A parent proxy: refuse now and then; otherwise the tunnel
			// leads back to this same origin.
			switch rng.IntN(8) {
			case 0:
				io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
			case 1:
				reset(c)
				return
			default:
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			}
			continue
		}
		if rest, ok := strings.CutPrefix(target, "http://"); ok {
			// Absolute form, as to a parent proxy.
			_, path, _ := strings.Cut(rest, "/")
			target = "/" + path
		}
		cl := 0
		for _, l := range lines[1:] {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
				cl, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		mode, id := "ok", ""
		if p := strings.Split(target, "/"); len(p) >= 4 && p[1] == "f" {
			mode, id = p[2], p[3]
		}
		if method == "POST" && id != "" {
			v, _ := s.posts.LoadOrStore(id, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}
		// w writes a response, naming the request in its final head.
		w := func(resp string) (int, error) {
			for _, st := range []string{" OK\r\n", " No Content\r\n", " Too Large\r\n"} {
				resp = strings.ReplaceAll(resp, st, st+"X-Id: "+id+"\r\n")
			}
			return io.WriteString(c, resp)
		}
		if mode == "resetbefore" && rng.IntN(2) == 0 {
			reset(c)
			return
		}
		if mode == "early413" {
			// Answer before reading the body, then close.
			w("HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig")
			if rng.IntN(2) == 0 {
				reset(c)
			}
			return
		}
		if mode == "continue" {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		if cl > 0 {
			if _, err := io.CopyN(io.Discard, br, int64(cl)); err != nil {
				return
			}
		}
		switch mode {
		case "resetbefore":
			reset(c)
			return
		case "resetafterhead":
			w("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
			reset(c)
			return
		case "midbody":
			w("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("m", 100))
			return
		case "stall":
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			return
		case "malformed":
			w("HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		case "interim":
			w("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case "chunked":
			w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
		case "close":
			w("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
			return
		case "idleclose":
			w("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
			if rng.IntN(2) == 0 {
				reset(c)
			}
			return
		case "extra":
			// Bytes behind the response: the connection cannot be reused.
			w("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")
		case "http10":
			w("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		case "hint":
			w("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok")
		case "hintclose":
			// As Apache does: the hint is the origin's own idle timeout,
			// counted from when it wrote the response.
			w("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok")
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
		case "nocontent":
			w("HTTP/1.1 204 No Content\r\n\r\n")
		case "untilclose":
			w("HTTP/1.1 200 OK\r\n\r\n" + strings.Repeat("u", rng.IntN(70000)))
			if rng.IntN(3) == 0 {
				reset(c)
			}
			return
		case "big":
			w("HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n")
			if _, err := c.Write(bytes.Repeat([]byte("b"), 262144)); err != nil {
				return
			}
		default:
			if _, err := w("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	}
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// call is one caller's random request.
type call struct {
	api    int // 0 Do, 1 Exchange, 2 Send, 3 Transport, 4 Tunnel
	addr   string
	group  bool   // to the origin group "g"
	pgroup bool   // to the parent group "pg"
	via    string // through a CONNECT tunnel opened by this parent
	viaPG  bool   // through a CONNECT tunnel opened by a parent of "pg" (ViaGroup)
	// pipeline is Upstream.Pipeline; only requests whose context cannot
	// end (background) are pipelined.
	pipeline   int
	background bool
	path       string
	post       bool
	body       []byte
	getBody    bool
	pin        uint64
	early      bool // close the body early / fail the sink
	slow       bool // the sink or reader takes its time
	expect     bool // "Expect: 100-continue"
	chunked    bool // a body of unknown length
	head       bool // HEAD instead of GET
	close      bool // "Connection: close"
	timeout    time.Duration
	cancel     time.Duration // > 0: cancel after this long
}

// randomCall draws a call; a piped one is a GET or HEAD by Exchange or
// Send under a context that cannot end, with Upstream.Pipeline, which a
// connection to its upstream may take behind others.
func (s *soak) randomCall(rng *rand.Rand, piped bool) call {
	c := call{api: rng.IntN(5), timeout: time.Duration(50+rng.IntN(2000)) * time.Millisecond}
	if rng.IntN(8) == 0 {
		c.cancel = time.Duration(rng.IntN(1<<rng.IntN(19))) * time.Microsecond
	}
	c.early = rng.IntN(8) == 0
	id := s.nextID.Add(1)
	switch r := rng.IntN(11); {
	case r < 3:
		c.addr = s.ngx.Addr()
		c.path = []string{"/small", "/16k", "/1m", "/status/503", "/small"}[rng.IntN(5)]
	case r < 8:
		c.addr = s.fakes[rng.IntN(len(s.fakes))].Addr()
		c.path = fmt.Sprintf("/f/%s/%d", soakModes[rng.IntN(len(soakModes))], id)
	case r < 9 && rng.IntN(2) == 0:
		if rng.IntN(2) == 0 {
			c.via = s.fakes[rng.IntN(2)].Addr()
		} else {
			c.viaPG = true
		}
		c.path = fmt.Sprintf("/f/%s/%d", soakModes[rng.IntN(len(soakModes))], id)
	case r < 9 && rng.IntN(2) == 0:
		c.pgroup = true
		c.path = fmt.Sprintf("/f/%s/%d", soakModes[rng.IntN(len(soakModes))], id)
	case r < 9:
		c.group = true
		c.path = fmt.Sprintf("/f/%s/%d", soakModes[rng.IntN(len(soakModes))], id)
		if rng.IntN(3) == 0 {
			c.path = "/small"
		}
	default:
		c.addr = s.refused
		c.path = "/small"
	}
	if rng.IntN(3) == 0 && c.api != 4 {
		c.post = true
		c.body = bytes.Repeat([]byte("p"), 1+rng.IntN(40000))
		c.getBody = rng.IntN(2) == 0
		if c.addr == s.ngx.Addr() {
			c.path = "/echo"
		}
	}
	if c.post {
		c.expect = rng.IntN(4) == 0
		c.chunked = rng.IntN(4) == 0
	}
	c.slow = rng.IntN(6) == 0
	c.head = !c.post && rng.IntN(10) == 0
	c.close = rng.IntN(10) == 0
	if rng.IntN(8) == 0 && c.api <= 2 {
		c.pin = uint64(1 + rng.IntN(8))
	}
	if rng.IntN(3) == 0 {
		c.pipeline = []int{2, 4, 8}[rng.IntN(3)]
	}
	// Exchange and Send under a context that cannot end: the pipelined
	// requests, and those the engine's own timeouts and Close must end.
	c.background = (c.api == 1 || c.api == 2) && rng.IntN(3) == 0
	if piped {
		c.api, c.background, c.pipeline = 1+rng.IntN(2), true, []int{2, 4, 8}[rng.IntN(3)]
		c.post, c.body, c.getBody, c.expect, c.chunked, c.pin = false, nil, false, false, false, 0
		if c.addr == s.ngx.Addr() && c.path == "/echo" {
			c.path = "/small"
		}
	}
	return c
}

func (s *soak) request(c call) *engine.Request {
	method := "GET"
	if c.post {
		method = "POST"
	} else if c.head {
		method = "HEAD"
	}
	raw := method + " " + c.path + " HTTP/1.1\r\nHost: o\r\n"
	if c.close {
		raw += "Connection: close\r\n"
	}
	if c.post && !c.chunked {
		raw += "Content-Length: " + strconv.Itoa(len(c.body)) + "\r\n"
	}
	if c.expect {
		raw += "Expect: 100-continue\r\n"
	}
	raw += "\r\n"
	h := new(parser.Request)
	if _, err := h.Parse([]byte(raw)); err != nil {
		s.t.Errorf("parse %q: %v", raw, err)
		return nil
	}
	req := &engine.Request{Head: h, PinKey: c.pin, Pin: c.pin != 0}
	switch {
	case c.group:
		req.Group = "g"
	case c.pgroup:
		req.Group = "pg"
	case c.via != "":
		req.Addr, req.Via = "o:80", &engine.Parent{Addr: c.via}
	case c.viaPG:
		req.Addr, req.ViaGroup = "o:80", "pg"
	default:
		req.Addr, req.Pipeline = c.addr, c.pipeline
	}
	if c.post {
		req.Body, req.ContentLength = bytes.NewReader(c.body), int64(len(c.body))
		if c.chunked {
			req.ContentLength = -1
		}
		if c.getBody {
			b := c.body
			req.GetBody = func() (io.Reader, error) { return bytes.NewReader(b), nil }
		}
	}
	return req
}

// soakSink counts its calls and fails on demand.
type soakSink struct {
	id     string // the response's X-Id
	fake   bool   // the response has an X-Id: from a fake origin
	status int
	fail   bool
	slow   bool
	body   int
	dones  atomic.Int32
	done   chan error
}

func (k *soakSink) OnHead(r *parser.Response) error {
	for i := 0; i < r.Len(); i++ {
		if strings.EqualFold(string(r.Name(i)), "X-Id") {
			k.id, k.fake = string(r.Value(i)), true
		}
	}
	k.status = r.Status()
	return nil
}
func (k *soakSink) OnBody(p []byte) error {
	k.body += len(p)
	if k.slow {
		time.Sleep(time.Millisecond)
	}
	if k.fail {
		return errors.New("sink refuses the body")
	}
	return nil
}
func (k *soakSink) OnDone(err error) {
	if k.dones.Add(1) == 1 {
		k.done <- err
	}
}

// refusal is an error that kept a request from being accepted: Send or
// Exchange returned it without calling OnDone.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// notAccepted reports an error that kept a request from being taken: its
// OnDone never runs, and Stats does not count it.
func notAccepted(err error) bool {
	var r refusal
	return errors.As(err, &r) || errors.Is(err, engine.ErrClosed) || errors.Is(err, engine.ErrNoPeer) ||
		errors.Is(err, engine.ErrNoGroup) || errors.Is(err, engine.ErrBadRequest)
}

// classify records err's kind and whether it is one of the documented ones.
func (s *soak) classify(where string, err error) {
	kind := "ok"
	if err != nil {
		kind = "other"
		if e := conn.AsError(err); e != nil {
			kind = "conn." + e.Phase.String()
		}
		for _, se := range []error{engine.ErrClosed, engine.ErrNoPeer, engine.ErrNoGroup, engine.ErrPinnedGone,
			engine.ErrOverloaded, engine.ErrPoolTimeout, engine.ErrQueueFull, engine.ErrBodyClosed,
			engine.ErrTunnelRefused, context.Canceled, context.DeadlineExceeded} {
			if kind == "other" && errors.Is(err, se) {
				kind = se.Error()
			}
		}
		if errors.Is(err, engine.ErrBadRequest) {
			kind = "other"
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kinds[where+" "+kind]++
	if os.Getenv("SERVERSIDE_SOAK_GAUGES") != "" && s.kinds[where+" "+kind] <= 2 && err != nil {
		s.t.Logf("%s: %v", where, err)
	}
	if kind == "other" {
		s.unknown[fmt.Sprintf("%s %T: %v", where, err, err)]++
	}
}

// one runs c and returns once the call has fully ended.
func (s *soak) one(rng *rand.Rand, c call) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if c.cancel > 0 {
		tm := time.AfterFunc(c.cancel, cancel)
		defer tm.Stop()
	}
	if c.background {
		ctx = context.Background()
	}
	if c.pin != 0 && rng.IntN(4) == 0 {
		s.e.Unpin(c.pin)
	}
	if c.pin != 0 && rng.IntN(4) == 0 {
		_ = s.e.Pinned(c.pin)
	}
	s.reqs.Add(1)
	switch c.api {
	case 0:
		req := s.request(c)
		resp, err := s.e.Do(ctx, req)
		if err != nil {
			s.count(err)
			s.classify("do", err)
			return
		}
		s.checkID(c.path, resp.Header.Get("X-Id"))
		_, fake := resp.Header["X-Id"]
		s.body(c, resp.Body, resp.Status, fake, "do-body")
	case 1, 2:
		req := s.request(c)
		k := &soakSink{fail: c.early, slow: c.slow, done: make(chan error, 1)}
		var err error
		if c.api == 1 {
			err = s.e.Exchange(ctx, req, k)
			// Exchange's error is OnDone's, or a refusal without OnDone.
			select {
			case got := <-k.done:
				if got != err {
					s.t.Errorf("Exchange returned %v, OnDone got %v", err, got)
				}
			default:
				if err == nil {
					s.t.Errorf("Exchange returned nil without OnDone")
				}
				err = refusal{err}
			}
		} else {
			err = s.e.Send(ctx, req, k)
			if err == nil {
				err = <-k.done
			} else {
				err = refusal{err}
			}
		}
		if n := k.dones.Load(); n > 1 {
			s.t.Errorf("OnDone ran %d times", n)
		}
		if n := k.dones.Load(); n > 0 {
			s.checkID(c.path, k.id) // OnDone ran after OnHead
			if err == nil && !c.early {
				s.checkSize(c, k.status, k.fake, int64(k.body))
			}
		}
		s.count(err)
		s.classify([]string{"", "exchange", "send"}[c.api], err)
	case 3:
		method := "GET"
		var body io.Reader
		if c.post {
			method, body = "POST", bytes.NewReader(c.body)
		} else if c.head {
			method = "HEAD"
		}
		addr := c.addr
		if c.group || c.pgroup || c.via != "" || c.viaPG {
			addr = s.fakes[0].Addr()
		}
		hr, err := http.NewRequestWithContext(ctx, method, "http://"+addr+c.path, body)
		if err != nil {
			s.t.Error(err)
			return
		}
		if !c.getBody {
			hr.GetBody = nil
		}
		resp, err := s.tr.RoundTrip(hr)
		if err != nil {
			s.count(err)
			s.classify("transport", err)
			return
		}
		s.checkID(c.path, resp.Header.Get("X-Id"))
		_, fake := resp.Header["X-Id"]
		s.body(c, resp.Body, resp.StatusCode, fake, "transport-body")
	case 4:
		tr := engine.TunnelRequest{Target: c.addr}
		switch {
		case c.group:
			tr.Target = s.ngx.Addr()
		case c.pgroup, c.viaPG:
			tr.Target, tr.Group = "t:80", "pg"
		case c.via != "":
			tr.Target, tr.Via = "t:80", &engine.Parent{Addr: c.via}
		}
		nc, _, err := s.e.Tunnel(ctx, tr)
		if !errors.Is(err, engine.ErrClosed) && !errors.Is(err, engine.ErrNoPeer) {
			// Tunnels the engine tried to open: ErrNoPeer is returned
			// only when no parent was tried.
			s.tunnels.Add(1)
		}
		if err == nil {
			s.tunnelsOK.Add(1)
		}
		s.classify("tunnel", err)
		if err != nil {
			return
		}
		_ = nc.SetDeadline(time.Now().Add(c.timeout))
		_, _ = io.WriteString(nc, "GET /f/close/"+strconv.FormatUint(s.nextID.Add(1), 10)+" HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
		if !c.early {
			_, _ = io.Copy(io.Discard, nc)
		}
		nc.Close()
	}
}

// logOutcomes logs how the calls ended and fails on undocumented errors.
func (s *soak) logOutcomes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for k, n := range s.kinds {
		lines = append(lines, fmt.Sprintf("%7d %s", n, k))
	}
	sort.Strings(lines)
	s.t.Logf("outcomes:\n%s", strings.Join(lines, "\n"))
	for k, n := range s.unknown {
		s.t.Errorf("undocumented error (%d times): %s", n, k)
	}
}

// checkID fails when a response names another request than the one sent
// to path ("/f/<mode>/<id>": the fake origins' X-Id is the id).
func (s *soak) checkID(path, got string) {
	want := ""
	if p := strings.Split(path, "/"); len(p) >= 4 && p[1] == "f" {
		want = p[3]
	}
	if got != "" && got != want {
		s.t.Errorf("request %s got the response to request %s", path, got)
	}
}

// body reads or closes early a response body of c's call, and counts the
// outcome under what.
func (s *soak) body(c call, b io.ReadCloser, status int, fake bool, what string) {
	if c.early {
		// The body may have been complete already: a success or a
		// cancellation.
		_, _ = b.Read(make([]byte, 10))
		_ = b.Close()
		s.accepted.Add(1)
		s.early.Add(1)
		return
	}
	n, err := readAll(b, c.slow)
	b.Close()
	if err == nil {
		s.checkSize(c, status, fake, n)
	}
	s.count(err)
	s.classify(what, err)
}

// readAll reads r to its end, slowly with slow, and returns the bytes read.
func readAll(r io.Reader, slow bool) (int64, error) {
	if !slow {
		return io.Copy(io.Discard, r)
	}
	buf := make([]byte, 8<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		time.Sleep(time.Millisecond)
	}
}

// checkSize fails when a whole 200 response from nginx (one without the
// fake origins' X-Id) to a GET of c's has another body length than the
// one of the location asked for: nginx's responses name no request, and
// their lengths tell a response to another location (pipelined, say).
func (s *soak) checkSize(c call, status int, fake bool, n int64) {
	if fake || status != 200 || c.head || c.post || c.via != "" || c.viaPG || c.pgroup {
		return
	}
	if c.api == 3 && c.group {
		return // the Transport sends these to a fake origin
	}
	if c.addr != s.ngx.Addr() && !(c.group && c.path == "/small") {
		return
	}
	want := map[string]int64{"/small": int64(len(bench.SmallBody)), "/16k": bench.Size16K, "/1m": bench.Size1M}[c.path]
	if want != 0 && n != want {
		s.t.Errorf("%s to nginx: a 200 response with %d body bytes, want %d", c.path, n, want)
	}
}

// count records a request's outcome for the Stats check: an error that
// kept it from being accepted is not a request.
func (s *soak) count(err error) {
	if err != nil && notAccepted(err) {
		return
	}
	if errors.Is(err, engine.ErrPinnedGone) {
		// Do returns it as a refusal or as the request's outcome.
		s.uncertain.Add(1)
		return
	}
	s.accepted.Add(1)
	if err != nil {
		s.failed.Add(1)
	}
}

func (s *soak) run(dur time.Duration, maxReqs int64, callers int) {
	t := s.t
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// started[i] is when caller i's current call began (UnixNano), 0 between calls.
	started := make([]atomic.Int64, callers)
	limit := make([]atomic.Int64, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(s.seed, uint64(i)))
			for s.reqs.Load() < maxReqs {
				select {
				case <-stop:
					return
				default:
				}
				// A quarter of the callers pipeline: enough requests
				// at once on one upstream to fill pipelines.
				c := s.randomCall(rng, i%4 == 0)
				limit[i].Store(int64(c.timeout))
				started[i].Store(time.Now().UnixNano())
				s.one(rng, c)
				started[i].Store(0)
			}
		}()
	}
	// Chaos: drain and undrain peers; watch for calls that hang.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(s.seed, 1<<40))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		names := []string{"ngx", "refused", "fake0", "fake1"}
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n := names[rng.IntN(len(names))]
			if rng.IntN(50) == 0 {
				// Replace the group: a random subset of its peers, a
				// random balancer.
				var ps []engine.Peer
				for _, p := range s.peers {
					if rng.IntN(3) != 0 {
						ps = append(ps, p)
					}
				}
				if len(ps) == 0 {
					ps = s.peers[:1]
				}
				_ = s.e.SetGroup("g", s.randomGroup(rng, ps))
			} else if rng.IntN(2) == 0 {
				_ = s.e.DrainPeer("g", n)
			} else {
				_ = s.e.UndrainPeer("g", n)
			}
			now := time.Now().UnixNano()
			for i := range started {
				// Generous: a call must end soon after its deadline.
				if st := started[i].Load(); st != 0 && time.Duration(now-st) > time.Duration(limit[i].Load())+20*time.Second {
					buf := make([]byte, 4<<20)
					t.Errorf("caller %d hangs past its deadline\n%s", i, buf[:runtime.Stack(buf, true)])
					started[i].Store(0)
				}
			}
		}
	}()

	deadline := time.After(dur)
	for done := false; !done; {
		select {
		case <-deadline:
			done = true
		case <-time.After(100 * time.Millisecond):
			done = s.reqs.Load() >= maxReqs
		}
		for k, st := range s.e.Stats() {
			p := st.Pool
			// Every key's cap is 24 (8 for two peers).
			if p.Connecting < 0 || p.Busy < 0 || p.Idle < 0 || p.Pinned < 0 || p.Waiting < 0 || p.Conns() > 24 {
				t.Errorf("%s: pool gauges %+v", k, p)
			}
			if os.Getenv("SERVERSIDE_SOAK_GAUGES") != "" {
				t.Logf("%s: %+v", k, p)
			}
		}
	}
	// Drain, then Close, with requests in flight.
	close(stop)
	var derr, cerr error
	switch s.drainMode {
	case 0, 3:
		d := 300 * time.Millisecond
		if s.drainMode == 3 {
			d = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		derr = s.e.Drain(ctx)
		cancel()
		cerr = s.e.Close()
	case 1:
		cerr = s.e.Close()
	case 2:
		done := make(chan error)
		go func() { done <- s.e.Drain(context.Background()) }()
		cerr = s.e.Close()
		derr = <-done
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(60 * time.Second):
		buf := make([]byte, 4<<20)
		t.Fatalf("callers did not return after Close\n%s", buf[:runtime.Stack(buf, true)])
	}
	t.Logf("Drain: %v, Close: %v; %d calls, %d accepted, %d failed, %d tunnels",
		derr, cerr, s.reqs.Load(), s.accepted.Load(), s.failed.Load(), s.tunnels.Load())

	s.posts.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n > 1 {
			t.Errorf("POST %v reached an origin %d times", k, n)
		}
		return true
	})

	var reqs, fails, treqs, topen, piped, unanswered uint64
	for k, st := range s.e.Stats() {
		p := st.Pool
		piped += st.Pipelined
		unanswered += st.Unanswered
		if p.Busy != 0 || p.Idle != 0 || p.Connecting != 0 || p.Pinned != 0 || p.Waiting != 0 {
			t.Errorf("after Close, %s: pool gauges %+v", k, p)
		}
		if p.Dialed != p.Closed.Total() {
			t.Errorf("after Close, %s: %d connections dialed, %d closed (%+v)", k, p.Dialed, p.Closed.Total(), p.Closed)
		}
		if strings.Contains(k, "via=tunnel") || strings.HasPrefix(k, "t:80 ") {
			treqs += st.Requests
			topen += st.Tunnels
			continue
		}
		reqs += st.Requests
		fails += st.Canceled + st.CallerErrors
		for _, n := range st.Errors {
			fails += n
		}
	}
	t.Logf("%d requests pipelined, %d of them sent again unanswered", piped, unanswered)
	// A tunnel whose connect to a parent of "pg" failed was tried again
	// through another: one call, two tunnel requests. The group's
	// rerouted count (its requests' reroutes too) bounds those.
	var rerouted uint64
	for _, p := range s.e.PeerStats()["pg"].Peers {
		rerouted += p.Rerouted
	}
	if tc := uint64(s.tunnels.Load()); treqs < tc || treqs > tc+rerouted || topen != uint64(s.tunnelsOK.Load()) {
		t.Errorf("Stats: %d tunnel requests, %d opened; callers: %d, %d opened, %d rerouted in pg", treqs, topen, tc, s.tunnelsOK.Load(), rerouted)
	}
	acc, f, early, unc := uint64(s.accepted.Load()), uint64(s.failed.Load()), uint64(s.early.Load()), uint64(s.uncertain.Load())
	if reqs < acc || reqs > acc+unc || fails < f || fails > f+early+unc {
		t.Errorf("Stats: %d requests, %d failed; callers: %d accepted, %d failed, %d closed early, %d ErrPinnedGone from Do", reqs, fails, acc, f, early, unc)
	}
}
