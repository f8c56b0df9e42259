package main

import (
	"bufio"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// An origin that fails its active health check takes no requests, while
// the healthy one takes them all; the flags come from a -config file.
func TestActiveHealthCheck(t *testing.T) {
	needTools(t)
	sick := bench.StartNginx(t, bench.NginxOptions{Locations: `        location = /healthz { return 503; }`})
	well := bench.StartNginx(t, bench.NginxOptions{Locations: `        location = /healthz { return 204; }`})

	file := filepath.Join(t.TempDir(), "serverside.json")
	conf := `{"health": {"path": "/healthz", "interval": "50ms", "timeout": "1s", "status": 204, "max_fails": 2}}`
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var x cliExtras
	x.register(fs)
	var h healthFlags
	h.register(fs)
	if err := fs.Parse([]string{"-config", file, "-health-interval", "40ms"}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if h.path != "/healthz" || h.interval != 40*time.Millisecond || h.status != 204 || h.maxFails != 2 || h.timeout != time.Second {
		t.Fatalf("health flags %+v: the file sets path, status, max_fails and timeout, the command line the interval", h)
	}

	var cfg engine.Config
	if err := withPeers(&cfg, []string{"http://" + sick.Addr(), "http://" + well.Addr()}, nil, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	h.apply(&cfg)
	if got := cfg.Groups[peerGroup].Health; got.CheckPath != "/healthz" || got.CheckStatus != 204 || got.MaxFails != 2 {
		t.Fatalf("group health %+v", got)
	}
	addr := startProxyConfig(t, cfg)

	// Wait until the first checks have run and marked the sick origin down.
	deadline := time.Now().Add(10 * time.Second)
	for countPath(sick.Requests(), "/healthz") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	const n = 20
	for i := 0; i < n; i++ {
		if body, _ := curl(t, "http://"+addr+"/small"); body != bench.SmallBody {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
	well.WaitRequests(n, 5*time.Second)
	if got := countPath(sick.Requests(), "/small"); got != 0 {
		t.Errorf("the origin failing its health check served %d of %d requests, want 0", got, n)
	}
	if got := countPath(well.Requests(), "/small"); got != n {
		t.Errorf("the healthy origin served %d of %d requests, want all", got, n)
	}
}

func countPath(reqs []bench.LoggedRequest, path string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r.URI, path) {
			n++
		}
	}
	return n
}

// silentOrigin is a fault: an origin that accepts connections and reads
// requests but never answers. It counts the request lines it reads, by
// method.
type silentOrigin struct {
	ln    net.Listener
	mu    sync.Mutex
	seen  map[string]int
	conns []net.Conn
}

func startSilentOrigin(t *testing.T) *silentOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &silentOrigin{ln: ln, seen: map[string]int{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.conns = append(o.conns, c)
			o.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					o.mu.Lock()
					o.seen[req.Method]++
					o.mu.Unlock()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for _, c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		wg.Wait()
	})
	return o
}

func (o *silentOrigin) count(method string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[method]
}

// TestSilentOriginGoesDown: an origin that accepts connections and never
// answers fails each request at -response-header-timeout, which counts
// against its health as nginx's max_fails counts timeouts: after
// max_fails of them it is down. A GET (idempotent, no body) that timed
// out goes to the other origin, a real nginx, and the client gets its
// 200; a POST, which the silent origin may be acting on, is not sent
// again: the client gets 504.
func TestSilentOriginGoesDown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	proxyTo := func(silent *silentOrigin) *proxy {
		cfg := engine.Config{ResponseHeaderTimeout: 300 * time.Millisecond}
		if err := withPeers(&cfg, []string{"http://" + silent.ln.Addr().String() + "?name=silent", "http://" + ng.Addr() + "?name=nginx"}, nil, "roundrobin"); err != nil {
			t.Fatal(err)
		}
		g := cfg.Groups[peerGroup]
		// A back-off longer than the test: no probe goes to the silent
		// origin once it is down.
		g.Health = engine.Health{MaxFails: 3, Backoff: time.Hour}
		cfg.Groups[peerGroup] = g
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.Shards, cfg.Logger = 2, logger
		p, err := newProxy(logger, nil, cfg, clientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	silent := startSilentOrigin(t)
	p := proxyTo(silent)
	px := serveProxy(t, p)
	peers := func() []engine.PeerStats { return p.eng.PeerStats()[p.group].Peers }
	gets := 0
	for ; gets < 10 && peers()[0].State == engine.PeerUp; gets++ {
		if status, body := rawGet(t, px, "GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); status != 200 || body != bench.SmallBody {
			t.Fatalf("GET %d: %d %q, want nginx's 200", gets, status, body)
		}
	}
	if s := peers()[0]; s.State != engine.PeerDown || s.Failures != 3 || s.Downs != 1 || s.Rerouted != 3 {
		t.Fatalf("silent origin after %d GETs: %+v; want down after 3 timeouts, each GET moved", gets, s)
	}
	if got := silent.count("GET"); got != 3 {
		t.Fatalf("the silent origin read %d GETs, want 3", got)
	}
	if got := countPath(ng.WaitRequests(gets, 5*time.Second), "/small"); got != gets {
		t.Fatalf("nginx served %d of %d GETs, want all", got, gets)
	}

	// POSTs to a fresh pair: the one the silent origin gets is answered
	// 504, counted, and not sent again.
	silent = startSilentOrigin(t)
	p = proxyTo(silent)
	px = serveProxy(t, p)
	var statuses []int
	for i := 0; i < 2; i++ {
		status, _ := rawGet(t, px, "POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nx=1")
		statuses = append(statuses, status)
	}
	slices.Sort(statuses)
	if !slices.Equal(statuses, []int{200, 504}) && !slices.Equal(statuses, []int{405, 504}) {
		t.Fatalf("two POSTs over the two origins: %v, want one 504 (the silent origin's) and nginx's answer", statuses)
	}
	if s := peers()[0]; s.Failures != 1 || s.Rerouted != 0 || s.State != engine.PeerUp {
		t.Fatalf("silent origin after the POSTs: %+v; want one failure, nothing moved", s)
	}
	if got := silent.count("POST"); got != 1 {
		t.Fatalf("the silent origin read %d POSTs, want 1", got)
	}
}
