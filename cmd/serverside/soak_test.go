package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http/httputil"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestProxySoak runs many raw-socket clients with random behaviour
// through the demo proxy, in reverse mode over a group of a real nginx
// and in-process origins that misbehave at random, and in forward mode
// (absolute-form requests to the same origins, CONNECT to a plain and a
// TLS echo). Clients keep connections alive, pipeline, speak HTTP/1.0,
// send HEAD, GET, POST and PUT with Content-Length and chunked bodies
// and "Expect: 100-continue", abort (close or reset) in the middle of a
// request body or of a response, half-close after the request, read
// slowly and send malformed requests. It checks that every response a
// client reads answers its own request, pipelined ones in order; that a
// well-formed request gets the origin's response or the proxy's 502, 503
// or 504, and a response is either complete by its framing or ends with
// the connection; that no POST reached an origin twice; that a shutdown
// while the clients still run (half the seeds) cuts responses and closes
// connections but answers no request wrongly; and that after shutdown
// the engine's gauges are zero and no goroutine or descriptor is left.
//
// It is skipped unless SERVERSIDE_SOAK is set: SERVERSIDE_SOAK=1 runs it
// for 60 s with 24 clients; SERVERSIDE_SOAK_TIME (a duration),
// SERVERSIDE_SOAK_CLIENTS and SERVERSIDE_SOAK_SEED (default: the clock)
// change the run:
//
//	SERVERSIDE_SOAK=1 SERVERSIDE_SOAK_TIME=3m go test -race -run TestProxySoak -v ./cmd/serverside
//
// TestProxySoakShort runs the same for a few seconds in the normal suite.
func TestProxySoak(t *testing.T) {
	dur := bench.SoakDuration(t, 60*time.Second)
	runProxySoak(t, dur, bench.SoakCount(t, "SERVERSIDE_SOAK_CLIENTS", 24))
}

// TestProxySoakShort is TestProxySoak for five seconds with fewer clients.
func TestProxySoakShort(t *testing.T) {
	runProxySoak(t, 5*time.Second, 10)
}

func runProxySoak(t *testing.T, dur time.Duration, clients int) {
	needTools(t)
	seed := bench.SoakSeed(t)
	t.Logf("seed %d, %v, %d clients, GOMAXPROCS %d", seed, dur, clients, runtime.GOMAXPROCS(0))
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t) // the tunnels' relays and the echo splice
	s := newProxySoak(t, seed)
	s.run(dur, clients)
	s.shutdown()
	s.checkPosts()
	s.logOutcomes()
}

// proxySoakModes are what a fake origin does with a request, named by
// its "m" query parameter.
var proxySoakModes = []string{
	"ok", "ok", "ok", "ok", "ok", "chunked", "interim", "close", "idleclose",
	"resetbefore", "resetafterhead", "midbody", "stall", "malformed", "big",
	"extra", "early413", "http10", "nocontent", "untilclose", "continue",
	"dualcl", "tecl", "badchunk",
}

type proxySoak struct {
	t        *testing.T
	seed     uint64
	ngx      *bench.Nginx
	fakes    []*bench.Origin
	echo     *bench.Origin
	tlsEcho  *bench.Origin
	rev, fwd *proxy
	revAddr  string
	fwdAddr  string
	revDone  <-chan error
	fwdDone  <-chan error
	nextID   atomic.Uint64
	posts    sync.Map // POST id -> *atomic.Int32: times a fake origin got it
	stopOnce sync.Once
	// stopping: the proxies are shutting down with requests in flight.
	stopping atomic.Bool
	mu       sync.Mutex
	outcomes map[string]int
}

// soakLocations echo the request target, naming the request, on nginx.
const soakLocations = `
        location /soak/ {
            default_type text/plain;
            add_header X-Id $arg_id always;
            return 200 "$request_uri";
        }
`

func newProxySoak(t *testing.T, seed uint64) *proxySoak {
	s := &proxySoak{t: t, seed: seed, outcomes: map[string]int{}}
	s.ngx = bench.StartNginx(t, bench.NginxOptions{KeepaliveTimeout: "2s", KeepaliveRequests: 40, Locations: soakLocations})
	for i := 0; i < 2; i++ {
		s.fakes = append(s.fakes, bench.NewOrigin(t, s.serve))
	}
	s.echo = s.listenEcho(nil)
	pki := bench.NewPKI(t)
	s.tlsEcho = s.listenEcho(&tls.Config{Certificates: []tls.Certificate{pki.Server}})

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The configuration is drawn from the seed: upstream I/O on netpoll
	// or Go net, pipelining to nginx or not, when clients park.
	cfgRng := rand.New(rand.NewPCG(seed, 1))
	gonet, pipeline := cfgRng.IntN(2) == 0, cfgRng.IntN(2) == 0
	park := []time.Duration{-1, 50 * time.Millisecond, 200 * time.Millisecond}[cfgRng.IntN(3)]
	t.Logf("GoNetIO %v, pipelining to nginx %v, park after %v", gonet, pipeline, park)
	ecfg := func() engine.Config {
		return engine.Config{
			Shards: 2, Logger: logger, GoNetIO: gonet,
			ConnectTimeout:        time.Second,
			ResponseHeaderTimeout: time.Second,
			IdleTimeout:           2 * time.Second,
			MaxConnsPerUpstream:   32,
			PendingTimeout:        2 * time.Second,
		}
	}
	ccfg := clientConfig{
		AccessLog: true, ViaName: testViaName,
		IdleTimeout: 3 * time.Second, HeaderTimeout: 2 * time.Second,
		ParkAfter: park,
	}
	origins := []string{"http://" + s.ngx.Addr()}
	if pipeline {
		origins[0] += "?pipeline=4"
	}
	for _, f := range s.fakes {
		origins = append(origins, "http://"+f.Addr())
	}
	var err error
	if s.rev, err = newProxy(logger, origins, ecfg(), ccfg); err != nil {
		t.Fatal(err)
	}
	fcfg := ccfg
	fcfg.ConnectPorts = portSet{any: true}
	if s.fwd, err = newProxy(logger, nil, ecfg(), fcfg); err != nil {
		t.Fatal(err)
	}
	s.revAddr, s.revDone = startServe(t, s.rev)
	s.fwdAddr, s.fwdDone = startServe(t, s.fwd)
	// Should the test fail before shutdown, the proxies still stop
	// before the origins and the leak check.
	t.Cleanup(func() { s.shutdown() })
	return s
}

// listenEcho starts an echo server (TLS when cfg is set) closed at
// the test's end.
func (s *proxySoak) listenEcho(cfg *tls.Config) *bench.Origin {
	return bench.NewOrigin(s.t, func(_ int, c net.Conn, _ *bufio.Reader) {
		var rw io.ReadWriter = c
		if cfg != nil {
			tc := tls.Server(c, cfg)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.Handshake() != nil {
				return
			}
			_ = tc.SetDeadline(time.Time{})
			rw = tc
		}
		_, _ = io.Copy(rw, rw)
		if tcp, ok := c.(*net.TCPConn); ok && cfg == nil {
			_ = tcp.CloseWrite()
		}
	})
}

// shutdown stops both proxies and checks what they leave.
func (s *proxySoak) shutdown() {
	s.stopOnce.Do(func() {
		t := s.t
		for _, p := range []struct {
			name string
			p    *proxy
			done <-chan error
		}{{"reverse", s.rev, s.revDone}, {"forward", s.fwd, s.fwdDone}} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := p.p.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) && s.stopping.Load() {
				t.Logf("%s shutdown: %v", p.name, err) // in-flight requests cut, as documented
			} else if err != nil {
				t.Errorf("%s shutdown: %v", p.name, err)
			}
			cancel()
			if err := <-p.done; err != nil {
				t.Errorf("%s serve: %v", p.name, err)
			}
			for k, st := range p.p.eng.Stats() {
				if st.Pool.Busy != 0 || st.Pool.Connecting != 0 || st.Pool.Waiting != 0 {
					t.Errorf("%s %s after shutdown: busy %d, connecting %d, waiting %d", p.name, k, st.Pool.Busy, st.Pool.Connecting, st.Pool.Waiting)
				}
			}
		}
	})
}

func soakReset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// fakeBody is the body a fake origin sends for a complete response.
func fakeBody(mode, id string, n int) string {
	b := "id=" + id + " len=" + strconv.Itoa(n)
	switch mode {
	case "big":
		b += strings.Repeat("b", 200<<10)
	case "early413":
		b = "big"
	}
	return b
}

// serve is the fake origins' connection handler: it reads requests and
// does what each one's "m" says, naming it by its "id" in X-Id.
func (s *proxySoak) serve(_ int, c net.Conn, br *bufio.Reader) {
	rng := rand.New(rand.NewPCG(s.seed, uint64(time.Now().UnixNano())))
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		lines, err := bench.ReadHead(br)
		if err != nil || len(lines) == 0 {
			return
		}
		f := strings.Fields(lines[0])
		if len(f) != 3 {
			return
		}
		method, target := f[0], f[1]
		_, query, _ := strings.Cut(target, "?")
		mode, id := "ok", ""
		for _, kv := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "m":
				mode = v
			case "id":
				id = v
			}
		}
		cl, chunked := 0, false
		for _, l := range lines[1:] {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch {
			case strings.EqualFold(k, "content-length"):
				cl, _ = strconv.Atoi(v)
			case strings.EqualFold(k, "transfer-encoding"):
				chunked = strings.EqualFold(v, "chunked")
			}
		}
		if method == "POST" && id != "" {
			v, _ := s.posts.LoadOrStore(id, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}
		head := method == "HEAD"
		w := func(status, extra, body string) error {
			resp := "HTTP/1.1 " + status + "\r\nServer: fake\r\nX-Id: " + id + "\r\n" + extra
			if !strings.Contains(extra, "Content-Length") && !strings.Contains(extra, "Transfer-Encoding") && !strings.HasPrefix(status, "204") {
				resp += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
			}
			resp += "\r\n"
			if !head {
				resp += body
			}
			_, err := io.WriteString(c, resp)
			return err
		}
		if mode == "resetbefore" && rng.IntN(2) == 0 {
			soakReset(c)
			return
		}
		if mode == "early413" && (cl > 0 || chunked) {
			w("413 Too Large", "Connection: close\r\n", "big")
			if rng.IntN(2) == 0 {
				soakReset(c)
			}
			return
		}
		if mode == "continue" {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		n := 0
		if chunked {
			m, err := io.Copy(io.Discard, httputil.NewChunkedReader(br))
			if err != nil {
				return
			}
			n = int(m)
			// The chunked body's trailer section ends it.
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
		} else if cl > 0 {
			if _, err := io.CopyN(io.Discard, br, int64(cl)); err != nil {
				return
			}
			n = cl
		}
		body := fakeBody(mode, id, n)
		switch mode {
		case "resetbefore":
			soakReset(c)
			return
		case "resetafterhead":
			w("200 OK", "Content-Length: "+strconv.Itoa(len(body)+100)+"\r\n", "")
			soakReset(c)
			return
		case "midbody":
			w("200 OK", "Content-Length: "+strconv.Itoa(len(body)+1000)+"\r\n", body)
			return
		case "stall":
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			return
		case "dualcl":
			// Two lengths that differ: no framing to trust (RFC 9112 §6.3).
			w("200 OK", "Content-Length: "+strconv.Itoa(len(body))+"\r\nContent-Length: "+strconv.Itoa(len(body)+5)+"\r\n", body)
			return
		case "tecl":
			// Chunked wins over the length (RFC 9112 §6.3), and the
			// connection is not to be reused.
			w("200 OK", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
				strconv.FormatInt(int64(len(body)), 16)+"\r\n"+body+"\r\n0\r\n\r\n")
			return
		case "badchunk":
			w("200 OK", "Transfer-Encoding: chunked\r\n", "2\r\nid\r\nzz\r\n"+body+"\r\n0\r\n\r\n")
			return
		case "malformed":
			io.WriteString(c, "HTTP/1.1 2x0 OK\r\nServer: fake\r\nContent-Length: 2\r\n\r\nok")
			return
		case "interim":
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
			w("200 OK", "", body)
		case "chunked":
			h := len(body) / 2
			w("200 OK", "Transfer-Encoding: chunked\r\n",
				strconv.FormatInt(int64(h), 16)+"\r\n"+body[:h]+"\r\n"+strconv.FormatInt(int64(len(body)-h), 16)+"\r\n"+body[h:]+"\r\n0\r\n\r\n")
		case "close":
			w("200 OK", "Connection: close\r\n", body)
			return
		case "idleclose":
			w("200 OK", "", body)
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
			if rng.IntN(2) == 0 {
				soakReset(c)
			}
			return
		case "extra":
			w("200 OK", "Content-Length: "+strconv.Itoa(len(body))+"\r\n", body+"GARBAGE")
		case "http10":
			resp := "HTTP/1.0 200 OK\r\nServer: fake\r\nX-Id: " + id + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
			if !head {
				resp += body
			}
			io.WriteString(c, resp)
			return
		case "nocontent":
			w("204 No Content", "", "")
		case "untilclose":
			resp := "HTTP/1.1 200 OK\r\nServer: fake\r\nX-Id: " + id + "\r\n\r\n"
			if !head {
				resp += body + strings.Repeat("u", rng.IntN(70000))
			}
			io.WriteString(c, resp)
			if rng.IntN(3) == 0 {
				soakReset(c)
			}
			return
		case "early413":
			w("413 Too Large", "", body)
		default:
			if w("200 OK", "", body) != nil {
				return
			}
		}
	}
}

// soakReq is one request a client sends.
type soakReq struct {
	method  string
	target  string
	id      string
	mode    string
	path    string // "/soak/", "/echo", "/small", "/16k"
	body    []byte
	chunked bool
	expect  bool
	slow    bool // the body goes in pieces with pauses
	http10  bool
	close   bool
	host    string // Host, and for forward mode the origin's address
	forward bool
}

func (r *soakReq) wire() []byte {
	var b bytes.Buffer
	proto := "HTTP/1.1"
	if r.http10 {
		proto = "HTTP/1.0"
	}
	target := r.target
	if r.forward {
		target = "http://" + r.host + r.target
	}
	fmt.Fprintf(&b, "%s %s %s\r\nHost: %s\r\nUser-Agent: soak\r\n", r.method, target, proto, r.host)
	if r.close {
		b.WriteString("Connection: close\r\n")
	}
	if r.expect {
		b.WriteString("Expect: 100-continue\r\n")
	}
	if r.body != nil {
		if r.chunked {
			b.WriteString("Transfer-Encoding: chunked\r\n")
		} else {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func (r *soakReq) bodyWire() []byte {
	if !r.chunked {
		return r.body
	}
	var b bytes.Buffer
	for rest := r.body; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)/2)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

func (s *proxySoak) newReq(rng *rand.Rand, forward bool) *soakReq {
	id := strconv.FormatUint(s.nextID.Add(1), 10)
	r := &soakReq{id: id, mode: proxySoakModes[rng.IntN(len(proxySoakModes))], forward: forward}
	switch rng.IntN(10) {
	case 0, 1:
		r.method = "HEAD"
	case 2, 3:
		r.method = "POST"
	case 4:
		r.method = "PUT"
	default:
		r.method = "GET"
	}
	r.path = "/soak/" + id
	switch {
	case r.method == "POST" || r.method == "PUT":
		r.path = "/echo"
		// Some past the 1 MiB that takes a connection off netpoll.
		r.body = bytes.Repeat([]byte{'p'}, rng.IntN([]int{1, 100, 5000, 100000, 1100000, 3 << 20}[rng.IntN(6)]))
		r.slow = rng.IntN(6) == 0
		r.chunked = rng.IntN(3) == 0
		r.expect = rng.IntN(4) == 0
	case rng.IntN(6) == 0:
		r.path = "/small"
	case rng.IntN(6) == 0:
		r.path = "/16k"
	case rng.IntN(20) == 0:
		r.path = "/1m"
	}
	r.target = r.path + "?id=" + id + "&m=" + r.mode
	r.host = "soak.test"
	if forward {
		// The client picks the origin.
		switch rng.IntN(3) {
		case 0:
			r.host = s.ngx.Addr()
		default:
			r.host = s.fakes[rng.IntN(len(s.fakes))].Addr()
		}
	}
	return r
}

// soakResp is a response as a client read it.
type soakResp struct {
	proto    string
	status   int
	hdr      map[string]string // lower-case names, last value
	body     []byte
	complete bool // framing satisfied (or a close-delimited body ended by FIN)
	untilEOF bool // a close-delimited body
	started  bool // some byte of it came
	err      error
}

// errNoBytes: the connection ended before any byte of a response.
var errNoBytes = errors.New("connection ended before any response byte")

func readSoakResp(br *bufio.Reader, head bool) *soakResp {
	r := &soakResp{hdr: map[string]string{}}
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			r.started = true
		}
		if err != nil {
			if !r.started {
				r.err = fmt.Errorf("%w: %v", errNoBytes, err)
			} else {
				r.err = fmt.Errorf("head: %w", err)
			}
			return r
		}
		f := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
		if len(f) < 2 {
			r.err = fmt.Errorf("status line %q", line)
			return r
		}
		r.proto = f[0]
		r.status, _ = strconv.Atoi(f[1])
		clear(r.hdr)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				r.err = fmt.Errorf("head: %w", err)
				return r
			}
			l = strings.TrimRight(l, "\r\n")
			if l == "" {
				break
			}
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				r.err = fmt.Errorf("field line %q", l)
				return r
			}
			r.hdr[strings.ToLower(k)] = strings.TrimSpace(v)
		}
		if r.status >= 100 && r.status < 200 && r.status != 101 {
			continue
		}
		break
	}
	if head || r.status == 204 || r.status == 304 || r.status < 200 {
		r.complete = true
		return r
	}
	if strings.EqualFold(r.hdr["transfer-encoding"], "chunked") {
		b, err := io.ReadAll(httputil.NewChunkedReader(br))
		r.body = b
		if err == nil {
			// The trailer section.
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return r
				}
				if strings.TrimRight(l, "\r\n") == "" {
					break
				}
			}
			r.complete = true
		}
		return r
	}
	if v, ok := r.hdr["content-length"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			r.err = fmt.Errorf("Content-Length %q", v)
			return r
		}
		r.body = make([]byte, n)
		m, err := io.ReadFull(br, r.body)
		r.body = r.body[:m]
		r.complete = err == nil
		return r
	}
	b, err := io.ReadAll(br)
	r.body, r.untilEOF = b, true
	r.complete = err == nil // a reset marks a cut close-delimited body
	return r
}

// check judges resp as the answer to req. It returns whether the
// connection may carry another response.
func (s *proxySoak) check(where string, req *soakReq, resp *soakResp, allowNone bool) bool {
	t := s.t
	what := fmt.Sprintf("%s: %s %s (id %s, mode %s, body %d, chunked %v, expect %v, slow %v, forward %v, HTTP/1.0 %v)",
		where, req.method, req.target, req.id, req.mode, len(req.body), req.chunked, req.expect, req.slow, req.forward, req.http10)
	if resp.err != nil {
		if errors.Is(resp.err, errNoBytes) {
			if !allowNone {
				s.softErrorf("%s: %v", what, resp.err)
			}
			s.count("none")
			return false
		}
		s.softErrorf("%s: %v", what, resp.err)
		return false
	}
	server := resp.hdr["server"]
	switch {
	case server == "fake":
		if got := resp.hdr["x-id"]; got != req.id {
			t.Errorf("%s: fake response names request %q", what, got)
			return false
		}
		n := len(req.body)
		want, status := fakeBody(req.mode, req.id, n), 200
		switch req.mode {
		case "nocontent":
			want, status = "", 204
		case "early413":
			status = 413
		}
		if resp.status != status {
			t.Errorf("%s: fake status %d, want %d", what, resp.status, status)
			return false
		}
		if req.method == "HEAD" {
			want = ""
		}
		body := string(resp.body)
		if req.mode == "untilclose" && req.method != "HEAD" {
			if !strings.HasPrefix(body, want) && !strings.HasPrefix(want, body) || strings.Trim(body[min(len(want), len(body)):], "u") != "" {
				t.Errorf("%s: body %.80q, want %q and u's", what, body, want)
				return false
			}
			if !resp.complete {
				s.count("cut")
				return false
			}
			s.countResp(server, resp)
			return !resp.untilEOF && !resp.closing() && !req.http10 && !req.close
		}
		if !resp.complete {
			if !strings.HasPrefix(want, body) {
				t.Errorf("%s: cut body %.80q is not a prefix of %.80q", what, body, want)
			}
			s.count("cut")
			return false
		}
		// A HEAD's response ends with its head whatever its lengths (RFC
		// 9112 §6.3): the proxy relays it without them.
		if (req.mode == "resetafterhead" || req.mode == "midbody" || req.mode == "badchunk" || req.mode == "dualcl") && req.method != "HEAD" {
			t.Errorf("%s: a cut response came complete: %d %.80q", what, resp.status, body)
			return false
		}
		if body != want {
			t.Errorf("%s: body %.80q, want %.80q", what, body, want)
			return false
		}
	case strings.HasPrefix(server, "nginx"):
		if resp.status != 200 {
			t.Errorf("%s: nginx status %d", what, resp.status)
			return false
		}
		var want string
		switch req.path {
		case "/echo":
			want = strconv.Itoa(len(req.body)) + "\n"
		case "/small":
			want = bench.SmallBody
		case "/16k":
			want = string(bench.PatternBody(bench.Size16K))
		case "/1m":
			want = string(bench.PatternBody(bench.Size1M))
		default:
			want = req.target
			if resp.hdr["x-id"] != req.id {
				t.Errorf("%s: nginx response names request %q", what, resp.hdr["x-id"])
				return false
			}
		}
		if req.method == "HEAD" {
			if cl := resp.hdr["content-length"]; cl != strconv.Itoa(len(want)) {
				t.Errorf("%s: HEAD Content-Length %q, want %d", what, cl, len(want))
			}
			want = ""
		}
		body := string(resp.body)
		if !resp.complete {
			if !strings.HasPrefix(want, body) {
				t.Errorf("%s: cut body %.80q is not a prefix of %.80q", what, body, want)
			}
			s.count("cut")
			return false
		}
		if body != want {
			t.Errorf("%s: body %.80q, want %.80q", what, body, want)
			return false
		}
	default:
		// The proxy's own answer.
		switch resp.status {
		case 502, 503, 504:
		default:
			t.Errorf("%s: proxy status %d: %q", what, resp.status, resp.body)
			return false
		}
		if !resp.complete {
			s.softErrorf("%s: proxy's %d cut: %q", what, resp.status, resp.body)
			return false
		}
	}
	s.countResp(server, resp)
	return !resp.untilEOF && !resp.closing() && !req.http10 && !req.close
}

func (r *soakResp) closing() bool {
	return strings.EqualFold(r.hdr["connection"], "close") || r.proto == "HTTP/1.0" && !strings.EqualFold(r.hdr["connection"], "keep-alive")
}

// softErrorf fails the test for a response or tunnel that did not come
// whole, unless the proxy is shutting down, which cuts them.
func (s *proxySoak) softErrorf(format string, args ...any) {
	if s.stopping.Load() {
		s.count("cut by shutdown")
		return
	}
	s.t.Helper()
	s.t.Errorf(format, args...)
}

func (s *proxySoak) count(k string) {
	s.mu.Lock()
	s.outcomes[k]++
	s.mu.Unlock()
}

func (s *proxySoak) countResp(server string, r *soakResp) {
	who := "proxy"
	switch {
	case server == "fake":
		who = "fake"
	case strings.HasPrefix(server, "nginx"):
		who = "nginx"
	}
	s.count(who + " " + strconv.Itoa(r.status))
}

func (s *proxySoak) logOutcomes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.outcomes))
	for k := range s.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, s.outcomes[k])
	}
	s.t.Logf("outcomes:%s", b.String())
}

// checkPosts: no POST reached an origin twice (the fakes count theirs,
// nginx logs its own).
func (s *proxySoak) checkPosts() {
	got := map[string]int{}
	s.posts.Range(func(k, v any) bool {
		got[k.(string)] += int(v.(*atomic.Int32).Load())
		return true
	})
	for _, r := range s.ngx.Requests() {
		if r.Method != "POST" {
			continue
		}
		if _, q, ok := strings.Cut(r.URI, "?id="); ok {
			id, _, _ := strings.Cut(q, "&")
			got[id]++
		}
	}
	for id, n := range got {
		if n > 1 {
			s.t.Errorf("POST id %s reached the origins %d times", id, n)
		}
	}
}

func (s *proxySoak) run(dur time.Duration, clients int) {
	// Half the seeds shut the proxies down while the clients still run.
	inFlight := rand.New(rand.NewPCG(s.seed, 2)).IntN(2) == 0
	s.t.Logf("shutdown with requests in flight: %v", inFlight)
	end := time.Now().Add(dur)
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(s.seed, uint64(i)))
			for n := 0; n < 100000 && !s.t.Failed(); n++ {
				if time.Now().After(end) && (!inFlight || stopped.Load() || time.Now().After(end.Add(20*time.Second))) {
					return
				}
				s.client(rng)
			}
		}()
	}
	if inFlight {
		time.Sleep(time.Until(end))
		s.stopping.Store(true)
		s.shutdown()
		stopped.Store(true)
	}
	wg.Wait()
}

// client runs one random client connection.
func (s *proxySoak) client(rng *rand.Rand) {
	scenario := rng.IntN(14)
	forward := scenario >= 11 || rng.IntN(4) == 0
	addr := s.revAddr
	if forward {
		addr = s.fwdAddr
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if s.stopping.Load() {
			s.count("dial after shutdown")
			time.Sleep(5 * time.Millisecond)
			return
		}
		s.t.Errorf("dial: %v", err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	if rng.IntN(8) == 0 {
		// A slow reader.
		br = bufio.NewReaderSize(&slowReader{r: c}, 16)
	}
	switch scenario {
	case 0, 1, 2, 3:
		s.sequence(rng, c, br, forward)
	case 4, 5:
		s.pipeline(rng, c, br, forward)
	case 6:
		req := s.newReq(rng, forward)
		// HTTP/1.0 has no chunked coding (RFC 9112 §6.1).
		req.http10, req.chunked = true, false
		s.one(rng, c, br, req, false)
	case 7:
		s.abortBody(rng, c, forward)
	case 8:
		req := s.newReq(rng, forward)
		s.send(rng, c, br, req)
		if req.method == "HEAD" {
			c.Close()
			return
		}
		resp := readSoakHead(br)
		if rng.IntN(2) == 0 || resp == nil {
			soakReset(c)
		}
	case 9:
		// Half-close after the request: the answer still comes.
		req := s.newReq(rng, forward)
		req.close = true
		if !s.send(rng, c, br, req) {
			return
		}
		_ = c.(*net.TCPConn).CloseWrite()
		s.check("half-close", req, readSoakResp(br, req.method == "HEAD"), false)
	case 10:
		s.malformed(rng, c, br)
	case 11, 12:
		s.sequence(rng, c, br, true)
	case 13:
		s.tunnel(rng, c, br)
	}
}

// readSoakHead reads a response head, nil when none came.
func readSoakHead(br *bufio.Reader) []string {
	lines, err := bench.ReadHead(br)
	if err != nil {
		return nil
	}
	return lines
}

// send writes req's head and body, the body after a short wait when it
// expects 100-continue. It reports whether all was written.
func (s *proxySoak) send(rng *rand.Rand, c net.Conn, br *bufio.Reader, req *soakReq) bool {
	head := req.wire()
	if req.body == nil {
		_, err := c.Write(head)
		return err == nil
	}
	if req.expect || req.slow {
		if _, err := c.Write(head); err != nil {
			return false
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		body := req.bodyWire()
		for len(body) > 0 {
			n := len(body)
			if req.slow {
				n = min(n, 1+rng.IntN(64<<10))
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
			if _, err := c.Write(body[:n]); err != nil {
				return false
			}
			body = body[n:]
		}
		return true
	}
	_, err := c.Write(append(head, req.bodyWire()...))
	return err == nil
}

func (s *proxySoak) one(rng *rand.Rand, c net.Conn, br *bufio.Reader, req *soakReq, allowNone bool) bool {
	if !s.send(rng, c, br, req) {
		s.count("send failed")
		// The proxy may have answered and closed early (a 413 before the
		// body): read what came.
		return s.check("after send", req, readSoakResp(br, req.method == "HEAD"), true)
	}
	return s.check("request", req, readSoakResp(br, req.method == "HEAD"), allowNone)
}

// slowReader reads in small pieces with pauses.
type slowReader struct {
	r io.Reader
	n int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n++; r.n%64 == 0 {
		time.Sleep(time.Millisecond)
	}
	return r.r.Read(p[:min(len(p), 512)])
}

// sequence sends keep-alive requests one after another.
func (s *proxySoak) sequence(rng *rand.Rand, c net.Conn, br *bufio.Reader, forward bool) {
	n := 1 + rng.IntN(5)
	where := "sequence"
	for i := 0; i < n; i++ {
		req := s.newReq(rng, forward)
		req.close = i == n-1 && rng.IntN(3) == 0
		start := time.Now()
		resp := s.sendRead(rng, c, br, req)
		if !s.check(where, req, resp, false) {
			return
		}
		pause := time.Duration(0)
		if rng.IntN(4) == 0 {
			pause = time.Duration(rng.IntN(300)) * time.Millisecond
			time.Sleep(pause)
		}
		// What came before, should the next answer be missing.
		where = fmt.Sprintf("sequence, after %s %s (mode %s, body %d) answered %d %q in %v, then a pause of %v",
			req.method, req.path, req.mode, len(req.body), resp.status, resp.hdr["connection"], time.Since(start).Round(time.Millisecond), pause)
	}
}

func (s *proxySoak) sendRead(rng *rand.Rand, c net.Conn, br *bufio.Reader, req *soakReq) *soakResp {
	if !s.send(rng, c, br, req) {
		s.count("send failed")
	}
	return readSoakResp(br, req.method == "HEAD")
}

// pipeline sends a batch of requests at once, then reads the answers in
// order.
func (s *proxySoak) pipeline(rng *rand.Rand, c net.Conn, br *bufio.Reader, forward bool) {
	var reqs []*soakReq
	var wire []byte
	for i := 0; i < 2+rng.IntN(5); i++ {
		req := s.newReq(rng, forward)
		if req.expect {
			req.expect = false
		}
		reqs = append(reqs, req)
		wire = append(append(wire, req.wire()...), req.bodyWire()...)
	}
	if _, err := c.Write(wire); err != nil {
		s.count("send failed")
	}
	for i, req := range reqs {
		// The first needs an answer; those behind one that ended the
		// connection do not get one.
		if !s.check("pipeline "+strconv.Itoa(i), req, readSoakResp(br, req.method == "HEAD"), false) {
			return
		}
	}
}

// abortBody sends part of a request body, then closes or resets.
func (s *proxySoak) abortBody(rng *rand.Rand, c net.Conn, forward bool) {
	req := s.newReq(rng, forward)
	req.method, req.path = "POST", "/echo"
	req.target = req.path + "?id=" + req.id + "&m=" + req.mode
	req.body = bytes.Repeat([]byte{'a'}, 1000+rng.IntN(100000))
	w := append(req.wire(), req.bodyWire()...)
	_, _ = c.Write(w[:len(req.wire())+rng.IntN(len(w)-len(req.wire()))])
	time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	if rng.IntN(2) == 0 {
		soakReset(c)
	}
}

// malformed sends a request the proxy must refuse.
func (s *proxySoak) malformed(rng *rand.Rand, c net.Conn, br *bufio.Reader) {
	bad := []string{
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
		"BLAH\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	}
	req := bad[rng.IntN(len(bad))]
	if _, err := io.WriteString(c, req); err != nil {
		return
	}
	resp := readSoakResp(br, false)
	if resp.err != nil || resp.hdr["server"] != "" || resp.status < 400 || resp.status > 505 || !resp.complete {
		s.softErrorf("malformed %q: %d %q %v", req, resp.status, resp.body, resp.err)
		return
	}
	// The connection closes after the refusal.
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
		s.softErrorf("malformed %q: after the %d: %q %v", req, resp.status, rest, err)
	}
	s.count("refused " + strconv.Itoa(resp.status))
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// tunnel opens a CONNECT tunnel to an echo, plain or TLS, and checks
// that what goes in comes back.
func (s *proxySoak) tunnel(rng *rand.Rand, c net.Conn, br *bufio.Reader) {
	useTLS := rng.IntN(2) == 0
	target := s.echo.Addr()
	if useTLS {
		target = s.tlsEcho.Addr()
	}
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		s.softErrorf("CONNECT: %v", err)
		return
	}
	lines := readSoakHead(br)
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "HTTP/1.1 200") {
		s.softErrorf("CONNECT %s: %q", target, lines)
		return
	}
	var rw io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{br, c}
	if useTLS {
		tc := tls.Client(&bufConn{Conn: c, br: br}, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			s.softErrorf("TLS through CONNECT: %v", err)
			return
		}
		rw = tc
	}
	msg := []byte(fmt.Sprintf("tunnel %d %s", s.nextID.Add(1), strings.Repeat("t", rng.IntN(50000))))
	go func() { _, _ = rw.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(rw, got); err != nil || !bytes.Equal(got, msg) {
		s.softErrorf("tunnel to %s: %v, echo differs: %v", target, err, !bytes.Equal(got, msg))
		return
	}
	s.count("tunnel")
	if rng.IntN(3) == 0 {
		soakReset(c)
	}
}

// bufConn reads through br what the tunnel's head left buffered.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.br.Read(p) }
