package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

func TestPeerURLOptions(t *testing.T) {
	var cfg engine.Config
	err := withPeers(&cfg, nil, []string{
		"http://u:p%40ss@127.0.0.1:3129?weight=2&name=a&max_conns=100&max_pending=7&pending_timeout=3s&pipeline=4",
		"http://127.0.0.1:3130",
	}, "leastconn")
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Groups[peerGroup]
	want := engine.Peer{Name: "a", Addr: "127.0.0.1:3129", Weight: 2, Parent: true, Username: "u", Password: "p@ss",
		MaxConns: 100, MaxPending: 7, PendingTimeout: 3 * time.Second, Pipeline: 4}
	if g.Balancer != "leastconn" || len(g.Peers) != 2 || g.Peers[0] != want ||
		g.Peers[1] != (engine.Peer{Name: "127.0.0.1:3130", Addr: "127.0.0.1:3130", Parent: true}) {
		t.Fatalf("group %+v", g)
	}
	// A parent's credentials are the peer's own (preemptive Basic), not
	// an engine login.
	if cfg.Auth != nil {
		t.Fatalf("an engine login for preemptive parent credentials: %+v", cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3129"}))
	}
	// With preemptive=0, an engine login that answers the 407s.
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://u:p@127.0.0.1:3129?preemptive=0", "http://127.0.0.1:3130"}, ""); err != nil {
		t.Fatal(err)
	}
	wantAuth := engine.Auth{Proxy: engine.Login{Mode: engine.LoginOwn, Credentials: engine.Credentials{User: "u", Password: "p"}}}
	if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3129"}); a == nil || *a != wantAuth || cfg.Groups[peerGroup].Peers[0].Username != "" {
		t.Fatalf("auth %+v, peer %+v", a, cfg.Groups[peerGroup].Peers[0])
	}
	if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3130"}); a != nil {
		t.Fatalf("auth of a parent without credentials %+v", a)
	}
	// An origin's answer its 401s, only when challenged unless told.
	for _, c := range []struct {
		url  string
		want engine.Login
	}{
		{"http://u:pw@127.0.0.1:81", engine.Login{Mode: engine.LoginOwn, Credentials: engine.Credentials{User: "u", Password: "pw"}}},
		{"http://u:pw@127.0.0.1:81?preemptive=1", engine.Login{Mode: engine.LoginOwn, Preemptive: true, Credentials: engine.Credentials{User: "u", Password: "pw"}}},
	} {
		cfg = engine.Config{}
		if err := withPeers(&cfg, []string{c.url}, nil, ""); err != nil {
			t.Fatal(err)
		}
		if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:81"}); a == nil || *a != (engine.Auth{Origin: c.want}) {
			t.Fatalf("%s: auth %+v", c.url, a)
		}
	}
	// -client-auth pass: the client's Proxy-Authorization to parents
	// without credentials of their own.
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://u:p@127.0.0.1:3129?preemptive=0", "http://127.0.0.1:3130", "http://v:q@127.0.0.1:3131"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := withClientAuth(&cfg, clientAuthPass); err != nil {
		t.Fatal(err)
	}
	if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3130"}); a == nil || a.Proxy.Mode != engine.LoginPassThrough {
		t.Fatalf("pass-through auth %+v", a)
	}
	if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3129"}); a == nil || a.Proxy.Mode != engine.LoginOwn || a.Proxy.Preemptive {
		t.Fatalf("own auth %+v", a)
	}
	if a := cfg.Auth(engine.Upstream{Addr: "127.0.0.1:3131"}); a != nil {
		t.Fatalf("auth for a parent with its own credentials %+v", a)
	}
	for _, c := range []struct {
		origins []string
		mode    string
	}{{nil, "pass"}, {[]string{"http://127.0.0.1:1"}, "pass"}, {nil, "maybe"}} {
		cfg := engine.Config{}
		if err := withPeers(&cfg, c.origins, nil, ""); err != nil {
			t.Fatal(err)
		}
		if err := withClientAuth(&cfg, c.mode); err == nil {
			t.Errorf("-client-auth %s with origins %q accepted", c.mode, c.origins)
		}
	}
	for _, bad := range [][2][]string{
		{{"http://127.0.0.1:1"}, {"http://127.0.0.1:2"}},   // both
		{{"ftp://127.0.0.1:1"}, nil},                       // scheme
		{nil, {"socks5://127.0.0.1:1"}},                    // not an HTTP proxy
		{{"http://127.0.0.1:1?sni=a"}, nil},                // sni on http
		{{"http://u:p@127.0.0.1:1?preemptive=maybe"}, nil}, // not a bool
		{{"http://a%3Ab:p@127.0.0.1:1"}, nil},              // ':' in a user name
		{nil, {"http://a%3Ab:p@127.0.0.1:1"}},              // ':' in a user name
		{{"http://127.0.0.1:1?weight=x"}, nil},             // bad number
		{{"http://127.0.0.1:1?weight=1001"}, nil},          // over maxPeerWeight
		{nil, {"http://127.0.0.1:1?weight=-1"}},            // negative
		{{"http://127.0.0.1:1?colour=red"}, nil},           // unknown option
		{nil, {"http://127.0.0.1:1?pending_timeout=soon"}}, // bad duration
		{{"http://127.0.0.1:1?pipeline=65"}, nil},          // over maxPipeline
		{{"http://127.0.0.1:1?pipeline=-1"}, nil},          // negative
		{{"http://127.0.0.1:1?pipeline=x"}, nil},           // bad number
		// preemptive says how the URL's credentials go: without any it
		// would be ignored.
		{{"http://127.0.0.1:1?preemptive=maybe"}, nil},
		{nil, {"http://127.0.0.1:1?preemptive=0"}},
		{{"http://127.0.0.1:1?preemptive=1"}, nil},
		// An option given twice: which one was meant?
		{{"http://127.0.0.1:1?weight=2&weight=3"}, nil},
		// 0 would silently be the engine's 30s.
		{{"http://127.0.0.1:1?pending_timeout=0s"}, nil},
		{nil, {"http://u:p@127.0.0.1:1?preemptive=0&preemptive=1"}},
	} {
		if err := withPeers(&engine.Config{}, bad[0], bad[1], ""); err == nil {
			t.Errorf("withPeers(%q, %q) accepted", bad[0], bad[1])
		}
	}
	cfg = engine.Config{}
	ts := tlsSettings{roots: []byte("pem"), insecure: true}
	if err := withPeersTLS(&cfg, []string{"https://localhost?name=l", "https://127.0.0.1:8443?sni=origin.test"}, nil, "", ts); err != nil {
		t.Fatal(err)
	}
	// Pipelining is for plain HTTP peers: the TLS connections run on Go
	// net, whose exchanges go one at a time.
	if err := withPeersTLS(&engine.Config{}, []string{"https://127.0.0.1:8443?pipeline=8"}, nil, "", ts); err == nil || !strings.Contains(err.Error(), "pipeline: only for http:// peers") {
		t.Errorf("https origin with pipeline=8: %v", err)
	}
	for i, want := range []struct{ addr, sni string }{{"127.0.0.1:443", "localhost"}, {"127.0.0.1:8443", "origin.test"}} {
		p := cfg.Groups[peerGroup].Peers[i]
		if p.Addr != want.addr || p.TLS == nil || p.TLS.ServerName != want.sni || string(p.TLS.RootCAs) != "pem" || !p.TLS.InsecureSkipVerify {
			t.Errorf("https peer %d: %+v %+v", i, p, p.TLS)
		}
	}
	// An unknown -lb is refused with the peers, or without any; the
	// engine refuses it too, as a config error.
	for _, origins := range [][]string{{"http://127.0.0.1:1"}, nil} {
		if err := withPeers(&engine.Config{}, origins, nil, "random"); err == nil || !strings.Contains(err.Error(), `-lb "random"`) {
			t.Errorf("-lb random with origins %q: %v", origins, err)
		}
	}
	cfg = engine.Config{}
	if err := withPeers(&cfg, []string{"http://127.0.0.1:1"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	grp := cfg.Groups[peerGroup]
	grp.Balancer = "random"
	cfg.Groups[peerGroup] = grp
	if _, err := engine.New(cfg); !errors.Is(err, engine.ErrBadConfig) {
		t.Fatalf("engine with balancer random: %v, want ErrBadConfig", err)
	}
}

// TestCurlThroughSquidParent: curl -x the demo, which forwards through a
// real Squid parent (Basic credentials from the -parent URL) to nginx.
func TestCurlThroughSquidParent(t *testing.T) {
	needTools(t)
	if _, err := os.Stat("/usr/lib/squid/basic_ncsa_auth"); err != nil && bench.SquidBinary() != "" {
		t.Skipf("Squid's basic_ncsa_auth helper is missing: %v", err)
	}
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	squid := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{"alice": "s3cret"}})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://alice:s3cret@" + squid.Addr() + "?name=squid"}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	px := startProxyConfig(t, cfg)
	for i := 0; i < 2; i++ {
		body, _ := curl(t, "-x", "http://"+px, ng.URL("/small"))
		if body != bench.SmallBody {
			t.Fatalf("body %q", body)
		}
	}
	out, _ := curl(t, "-i", "-x", "http://"+px, ng.URL("/16k"))
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "Via: ") {
		t.Fatalf("reply:\n%.300s", out)
	}
	var alice int
	for deadline := time.Now().Add(10 * time.Second); alice < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		alice = 0
		for _, l := range squid.AccessLog() {
			if strings.Contains(l, " alice ") && strings.Contains(l, "/200 ") && strings.Contains(l, "http://"+ng.Addr()+"/") {
				alice++
			}
		}
	}
	if alice != 3 {
		t.Fatalf("Squid logged %d requests by alice, want 3:\n%s", alice, strings.Join(squid.AccessLog(), "\n"))
	}
	if n := len(ng.WaitRequests(3, 10*time.Second)); n != 3 {
		t.Fatalf("nginx logged %d requests, want 3", n)
	}
}

// TestPeerURLErrors: an -origin or -parent URL is refused, naming the
// flag and the URL (its password hidden), when it has more than a scheme,
// host and port (and options): the proxy would drop the path; the config
// file's url refuses it too.
func TestPeerURLErrors(t *testing.T) {
	for _, c := range []struct {
		origin, parent, want string
	}{
		{"http://127.0.0.1:8081/app", "", `-origin "http://127.0.0.1:8081/app": want only scheme, host and port (and ?options)`},
		{"http://127.0.0.1:8081/app?weight=2", "", `-origin "http://127.0.0.1:8081/app?weight=2": want only scheme, host and port (and ?options)`},
		{"", "http://u:secret@127.0.0.1:3128/x", `-parent "http://u:xxxxx@127.0.0.1:3128/x": want only scheme, host and port (and ?options)`},
		{"http://127.0.0.1:8081#top", "", `-origin "http://127.0.0.1:8081#top": want only scheme, host and port (and ?options)`},
		// Limits the engine would refuse, named as the URL names them.
		{"http://127.0.0.1:8081?max_conns=-1", "", `-origin "http://127.0.0.1:8081?max_conns=-1": max_conns: want 0 (no cap) or more, got -1`},
		{"", "http://127.0.0.1:3128?max_pending=-2", `-parent "http://127.0.0.1:3128?max_pending=-2": max_pending: want 0 (the default) or more, got -2`},
		{"http://127.0.0.1:8081?pending_timeout=-1s", "", `-origin "http://127.0.0.1:8081?pending_timeout=-1s": pending_timeout: negative duration "-1s"`},
		{"http://127.0.0.1:0", "", `-origin "http://127.0.0.1:0": want a port from 1 to 65535`},
	} {
		var origins, parents []string
		if c.origin != "" {
			origins = []string{c.origin}
		}
		if c.parent != "" {
			parents = []string{c.parent}
		}
		var cfg engine.Config
		err := withPeers(&cfg, origins, parents, "")
		if err == nil || err.Error() != c.want {
			t.Errorf("%s%s: %v, want %s", c.origin, c.parent, err, c.want)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8081", "http://127.0.0.1:8081/", "http://127.0.0.1:8081/?weight=2"} {
		var cfg engine.Config
		if err := withPeers(&cfg, []string{ok}, nil, ""); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestHashOnTheHost: -lb hash hashes the request's host as nginx's $host
// is: without case or port. Three real nginx origins behind the reverse
// proxy: the spellings of a host that a client may send ("h1.test",
// "H1.TEST", "h1.test:80") reach one origin. Through two Squid parents,
// "localhost" spelled three ways, as the authority of an http:// request
// and as a CONNECT (curl -p), goes through one parent.
func TestHashOnTheHost(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t) // the CONNECT tunnels' relays
	var origins []string
	for i := range 3 {
		ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /who { return 200 "o` + strconv.Itoa(i) + `"; }`})
		origins = append(origins, "http://"+ng.Addr())
	}
	cfg := engine.Config{}
	if err := withPeers(&cfg, origins, nil, "hash"); err != nil {
		t.Fatal(err)
	}
	px := startProxyConfig(t, cfg)
	used := map[string]bool{}
	for i := range 12 {
		host := "h" + strconv.Itoa(i) + ".test"
		var first string
		for _, h := range []string{host, strings.ToUpper(host), host + ":80", "H" + host[1:]} {
			who, _ := curl(t, "-H", "Host: "+h, "http://"+px+"/who")
			if first == "" {
				first = who
			} else if who != first {
				t.Errorf("Host %s went to %s, Host %s to %s", host, first, h, who)
			}
		}
		used[first] = true
	}
	if len(used) < 2 {
		t.Errorf("12 hosts went to %v", used)
	}

	// Forward mode through two Squid parents.
	ng := bench.StartNginx(t, bench.NginxOptions{})
	port := strconv.Itoa(bench.Port(t, ng.Addr()))
	var parents []string
	var squids []*bench.Squid
	for i := range 2 {
		sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.Addr())}})
		squids = append(squids, sq)
		parents = append(parents, "http://"+sq.Addr()+"?name=s"+strconv.Itoa(i))
	}
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, parents, "hash"); err != nil {
		t.Fatal(err)
	}
	px = startProxyClient(t, cfg, clientConfig{AccessLog: true, ConnectPorts: portSet{any: true}})
	for _, h := range []string{"localhost", "LOCALHOST", "LocalHost"} {
		for _, tunnel := range []bool{false, true} {
			args := []string{"-x", "http://" + px, "http://" + h + ":" + port + "/small"}
			if tunnel {
				args = append([]string{"-p"}, args...)
			}
			if body, _ := curl(t, args...); body != bench.SmallBody {
				t.Fatalf("curl %v: %q", args, body)
			}
		}
	}
	var logged []int
	for _, sq := range squids {
		logged = append(logged, len(sq.AccessLog()))
	}
	for deadline := time.Now().Add(10 * time.Second); logged[0]+logged[1] < 6 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for i, sq := range squids {
			logged[i] = len(sq.AccessLog())
		}
	}
	if !(logged[0] == 6 && logged[1] == 0 || logged[0] == 0 && logged[1] == 6) {
		t.Errorf("the parents logged %v requests: want all 6 at one", logged)
	}
}

func TestHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"example.com": "example.com", "Example.COM:8080": "example.com", "example.com:": "example.com",
		"[::1]:443": "::1", "[::1]": "::1", "[FE80::1]": "fe80::1", "127.0.0.1:80": "127.0.0.1", "": "",
	} {
		if got := hostKey([]byte(in)); got != want {
			t.Errorf("hostKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDeadParentEveryKindOfRequest: a parent that refuses connections
// counts against its health, and the request moves to the other parent
// (Squid), whatever the request: a plain http:// one in absolute form, a
// CONNECT tunnel, an https:// one in absolute form (a pooled tunnel
// through the parent). After max_fails (3) connect failures the dead
// parent is down, and no request saw an error.
func TestDeadParentEveryKindOfRequest(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	ng, pki := tlsOrigin(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.TLSAddr())}})
	dead := freeAddr(t) // nothing listens there: connects are refused
	kinds := []struct {
		name string
		send func(px string) (int, string)
	}{
		{"http", func(px string) (int, string) {
			return rawGet(t, px, "GET "+ng.URL("/small")+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\nConnection: close\r\n\r\n")
		}},
		{"connect", func(px string) (int, string) {
			out, stderr, code := curlStatus(t, "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
			if code != 0 {
				return 502, stderr
			}
			return 200, out
		}},
		{"https", func(px string) (int, string) {
			return rawGet(t, px, "GET https://"+ng.TLSAddr()+"/small HTTP/1.1\r\nHost: "+ng.TLSAddr()+"\r\nConnection: close\r\n\r\n")
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			cfg := engine.Config{}
			if err := withPeers(&cfg, nil, []string{"http://" + dead + "?name=dead", "http://" + sq.Addr() + "?name=squid"}, "roundrobin"); err != nil {
				t.Fatal(err)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.Shards, cfg.Logger = 2, logger
			p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}, ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
			if err != nil {
				t.Fatal(err)
			}
			px := serveProxy(t, p)
			for i := 0; i < 6; i++ {
				if status, body := k.send(px); status != 200 || body != bench.SmallBody {
					t.Fatalf("request %d: %d %q, want 200 from the live parent", i, status, body)
				}
			}
			ps := p.eng.PeerStats()[p.group].Peers
			if d := ps[0]; d.Name != "dead" || d.Failures < 3 || d.Downs != 1 || d.State != engine.PeerDown || d.Rerouted < 3 {
				t.Fatalf("dead parent %+v: want at least 3 failures, 3 requests moved, marked down once", d)
			}
			if s := ps[1]; s.Failures != 0 || s.State != engine.PeerUp {
				t.Fatalf("live parent %+v", s)
			}
		})
	}
}

// TestParentMaxConnsCountsTunnels: a -parent's max_conns counts the
// clients' CONNECT tunnels through it, as Squid's cache_peer max-conn
// counts every connection to the peer. With max_conns=1 and a tunnel
// open, a second client's CONNECT waits, and gets its 200 once the first
// tunnel closes. With a short pending_timeout it gets a 503 instead, and
// nothing reaches Squid for it.
func TestParentMaxConnsCountsTunnels(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.Addr())}})
	demo := func(query string) (*proxy, string) {
		cfg := engine.Config{Shards: 2}
		if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr() + "?name=sq&max_conns=1&" + query}, ""); err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.Logger = logger
		p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}})
		if err != nil {
			t.Fatal(err)
		}
		return p, serveProxy(t, p)
	}
	connect := "CONNECT " + ng.Addr() + " HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	// status reads the answer to a CONNECT: its status, up to the blank
	// line (a 200's tunnel follows it).
	status := func(rc *rawClient) int {
		t.Helper()
		line, err := rc.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the CONNECT's answer: %v", err)
		}
		for {
			l, err := rc.br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the CONNECT's answer: %v", err)
			}
			if l == "\r\n" {
				break
			}
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("CONNECT answered %q", line)
		}
		n, _ := strconv.Atoi(f[1])
		return n
	}
	waiting := func(p *proxy) int {
		for _, ps := range p.eng.PeerStats()[peerGroup].Peers {
			return ps.Pool.Waiting
		}
		return -1
	}

	p, px := demo("pending_timeout=30s")
	first := dialRaw(t, px)
	first.write(t, connect)
	if st := status(first); st != 200 {
		t.Fatalf("first CONNECT: %d, want 200", st)
	}
	// The admin shows the open tunnel as the parent's, on its peer row
	// (where it is also the one busy connection) and on its upstream
	// rows.
	a := newAdmin(p, adminInfo{})
	if rows := a.peerRows(); len(rows) != 1 || rows[0].TunnelsOpen != 1 || rows[0].Busy != 1 {
		t.Fatalf("peer rows with one tunnel open: %+v, want one row with 1 tunnel open, 1 busy", rows)
	}
	tunnels := 0
	for _, u := range a.snapshot().Upstreams {
		if u.Upstream == sq.Addr() {
			tunnels += u.TunnelsOpen
		}
	}
	if tunnels != 1 {
		t.Fatalf("upstream rows of %s with one tunnel open: %d tunnels open, want 1", sq.Addr(), tunnels)
	}
	second := dialRaw(t, px)
	second.write(t, connect)
	for deadline := time.Now().Add(10 * time.Second); waiting(p) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second CONNECT does not wait for the parent's connection (%d waiting)", waiting(p))
		}
	}
	// A request through the tunnel, so that Squid logs it as used.
	first.write(t, "GET /small HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
	if resp, body := first.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("through the first tunnel: %d %q", resp.StatusCode, body)
	}
	_ = first.c.Close()
	if st := status(second); st != 200 {
		t.Fatalf("second CONNECT, after the first tunnel closed: %d, want 200", st)
	}
	second.write(t, "GET /small HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
	if resp, body := second.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("through the second tunnel: %d %q", resp.StatusCode, body)
	}

	// Past pending_timeout: a 503 that says why.
	_, px2 := demo("pending_timeout=200ms")
	third := dialRaw(t, px2)
	third.write(t, connect)
	if st := status(third); st != 200 {
		t.Fatalf("third CONNECT: %d, want 200", st)
	}
	fourth := dialRaw(t, px2)
	fourth.write(t, connect)
	resp, body := fourth.read(t)
	if resp.StatusCode != 503 || !strings.Contains(body, "upstream connection limit reached") {
		t.Fatalf("CONNECT at the cap past pending_timeout: %d %q, want 503", resp.StatusCode, body)
	}
	_ = third.c.Close()
	_ = second.c.Close()
	// Squid logs a tunnel when it ends: three, none for the refused one.
	var n int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n = 0
		for _, l := range sq.AccessLog() {
			if strings.Contains(l, " CONNECT ") {
				n++
			}
		}
		if n >= 3 || time.Now().After(deadline) {
			break
		}
	}
	if n != 3 {
		t.Fatalf("Squid logged %d CONNECTs, want 3:\n%s", n, strings.Join(sq.AccessLog(), "\n"))
	}
}

// TestParentMaxConnsWaitOutlastsConnectDeadline: a CONNECT's deadline
// (the resolve, connect and TLS handshake timeouts) allows for the wait
// for a slot of the parent's max_conns, up to its pending_timeout: a
// CONNECT that waits longer than those timeouts add up to is still
// served when a slot frees. (It got a 503 when the deadline passed.)
func TestParentMaxConnsWaitOutlastsConnectDeadline(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.Addr())}})
	const timeout = 200 * time.Millisecond
	cfg := engine.Config{Shards: 2}
	if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr() + "?max_conns=1&pending_timeout=30s"}, ""); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Logger = logger
	p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}, ConnectTimeout: timeout, TLSHandshakeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	connect := "CONNECT " + ng.Addr() + " HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	first := dialRaw(t, px)
	first.write(t, connect)
	if line, err := first.br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("first CONNECT: %q %v", line, err)
	}
	second := dialRaw(t, px)
	second.write(t, connect)
	// Past the deadline the timeouts alone would give it.
	_ = second.c.SetReadDeadline(time.Now().Add(resolveTimeout + 2*timeout + timeout + time.Second))
	if line, err := second.br.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second CONNECT answered %q (%v) while the first tunnel is open, want no answer yet", line, err)
	}
	_ = second.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_ = first.c.Close()
	if line, err := second.br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("second CONNECT, after the first tunnel closed: %q %v, want 200", line, err)
	}
}
