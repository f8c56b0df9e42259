package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// startParentPair starts two forward proxies, a with parent b and b with
// parent c (b's own parent; a's address when c is ""), named by
// clientConfig.ViaName (empty: the default). Both listen before either
// starts, so that each can name the other. It returns their addresses,
// and logs their access lines to la and lb.
func startParentPair(t *testing.T, nameA, nameB, c string, la, lb *syncBuffer) (string, string) {
	t.Helper()
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnB, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if c == "" {
		c = lnA.Addr().String()
	}
	serve := func(ln net.Listener, name, parent string, logs *syncBuffer) {
		var out io.Writer = io.Discard
		if logs != nil {
			out = logs
		}
		logger := slog.New(slog.NewTextHandler(out, nil))
		cfg := engine.Config{Shards: 2, Logger: logger}
		if err := withPeers(&cfg, nil, []string{"http://" + parent}, ""); err != nil {
			t.Fatal(err)
		}
		p, err := newProxy(logger, nil, cfg, clientConfig{AccessLog: true, ViaName: name, ConnectPorts: portSet{any: true}})
		if err != nil {
			t.Fatal(err)
		}
		serveListener(t, p, ln)
	}
	serve(lnA, nameA, lnB.Addr().String(), la)
	serve(lnB, nameB, c, lb)
	return lnA.Addr().String(), lnB.Addr().String()
}

// serveListener serves p on ln until the test ends, then shuts it down.
func serveListener(t *testing.T, p *proxy, ln net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// wantViaName is the received-by name a proxy listening on addr takes
// by default: the host's name and the port.
func wantViaName(t *testing.T, addr string) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	return host + ":" + port
}

// TestViaLoopDetected: two demo proxies each other's parent, with their
// default names. A request sent to A goes to B, back to A, which finds
// its own name in the Via and answers 508 with nothing sent on: the
// client gets that one 508, relayed by B and A, and nginx sees nothing.
func TestViaLoopDetected(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var la, lb syncBuffer
	a, b := startParentPair(t, "", "", "", &la, &lb)
	na, nb := wantViaName(t, a), wantViaName(t, b)
	if na == nb {
		t.Fatalf("two proxies on one host share the default name %q", na)
	}
	out, _ := curl(t, "-x", "http://"+a, "-D", "-", ng.URL("/small"))
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	want := "forwarding loop: this request already passed through " + na + "\n"
	if !strings.HasPrefix(head, "HTTP/1.1 508 Loop Detected\r\n") || body != want {
		t.Fatalf("response:\n%s\n\nwant 508 with %q", out, want)
	}
	// Made by A, relayed by B, then by A.
	wantVia := "Via: 1.1 " + na + " (serverside), 1.1 " + nb + " (serverside), 1.1 " + na + " (serverside)"
	var vias []string
	for _, l := range strings.Split(head, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "via:") {
			vias = append(vias, strings.TrimSpace(l[4:]))
		}
	}
	if got := "Via: " + strings.Join(vias, ", "); got != wantVia {
		t.Errorf("%s, want %s", got, wantVia)
	}
	// A logged the 508 it made and the one it relayed, B the one it
	// relayed: no other request went round.
	accessLine(t, &lb, ng.URL("/small"))
	if n := strings.Count(la.String(), "status=508"); n != 2 {
		t.Errorf("A logged %d 508s, want 2:\n%s", n, la.String())
	}
	if n := strings.Count(lb.String(), "msg=access"); n != 1 || !strings.Contains(lb.String(), "status=508") {
		t.Errorf("B logged %d requests, want one 508:\n%s", n, lb.String())
	}
	if reqs := ng.Requests(); len(reqs) != 0 {
		t.Errorf("nginx saw %v", reqs)
	}
}

// TestViaLoopConnect: a CONNECT carries the Via to a parent too, and a
// CONNECT that comes back is answered 508: the client gets it, relayed
// by B and A, on a connection that stays open, and no tunnel reaches
// nginx.
func TestViaLoopConnect(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	a, _ := startParentPair(t, "a.test", "b.test", "", nil, nil)
	rc := dialRaw(t, a)
	rc.write(t, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	resp, body := rc.read(t)
	want := "forwarding loop: this request already passed through a.test\n"
	if resp.StatusCode != 508 || body != want {
		t.Fatalf("%d %q, want 508 %q", resp.StatusCode, body, want)
	}
	if got := strings.Join(resp.Header.Values("Via"), ", "); got != "1.1 a.test (serverside), 1.1 b.test (serverside), 1.1 a.test (serverside)" || resp.Close {
		t.Errorf("Via %q close %v", got, resp.Close)
	}
	if reqs := ng.Requests(); len(reqs) != 0 {
		t.Errorf("nginx saw %v", reqs)
	}
}

// TestViaChainDefaultNames: A with parent B, B forwarding to nginx, with
// their default names: the request goes through, and B, asked to answer
// a TRACE itself (Max-Forwards 0 when it comes from A), shows the Via A
// sent: the client's own elements, then A's.
func TestViaChainDefaultNames(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	// B's parent is nginx itself: it takes the absolute-form target.
	a, b := startParentPair(t, "", "", ng.Addr(), nil, nil)
	if body, _ := curl(t, "-x", "http://"+a, ng.URL("/small")); body != bench.SmallBody {
		t.Fatalf("body %q", body)
	}
	rc := dialRaw(t, a)
	rc.write(t, "TRACE http://example.test/ HTTP/1.1\r\nHost: example.test\r\nMax-Forwards: 1\r\nVia: 1.0 fred, 1.1 other (serverside)\r\n\r\n")
	resp, body := rc.read(t)
	want := "Via: 1.0 fred, 1.1 other (serverside)\r\nVia: 1.1 " + wantViaName(t, a) + " (serverside)\r\n"
	if resp.StatusCode != 200 || !strings.Contains(body, want) || strings.Contains(body, wantViaName(t, b)) {
		t.Fatalf("%d\n%s\nwant the Via lines\n%s", resp.StatusCode, body, want)
	}
}

// TestViaLoopElements: which Via elements name the proxy. A loop is
// answered 508 on a connection that stays open; a request with a body
// is answered without reading it, and the connection closes. Elements
// that only mention the name (in a comment, as part of another name)
// are no loop: the request goes on, its Via kept and the proxy's added.
func TestViaLoopElements(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	a, _ := startParentPair(t, "me.test:3128", "b.test", ng.Addr(), nil, nil)
	want := "forwarding loop: this request already passed through me.test:3128\n"
	rc := dialRaw(t, a)
	for _, via := range []string{
		"Via: 1.1 me.test:3128",
		"Via: HTTP/1.1 ME.test:3128 (serverside)",
		"Via: 1.0 fred,1.1 me.test:3128 (serverside)",
		"Via: 1.0 fred (a, (b) \\) 1.1 c), 1.1 me.test:3128",
		"Via: 1.0 fred\r\nVia: 1.1 me.test:3128\t(x)",
		"Via: , 1.1   me.test:3128 ,",
	} {
		for _, req := range []string{
			"GET " + ng.URL("/small") + " HTTP/1.1\r\nHost: x\r\n" + via + "\r\n\r\n",
			"GET " + ng.URL("/small") + " HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n" + via + "\r\n\r\n",
		} {
			rc.write(t, req)
			if resp, body := rc.read(t); resp.StatusCode != 508 || body != want || resp.Close {
				t.Errorf("%q: %d %q close %v, want 508 %q kept alive", via, resp.StatusCode, body, resp.Close, want)
			}
		}
	}
	rc.write(t, "POST "+ng.URL("/echo")+" HTTP/1.1\r\nHost: x\r\nVia: 1.1 me.test:3128\r\nContent-Length: 5\r\n\r\nhello")
	if resp, body := rc.read(t); resp.StatusCode != 508 || body != want || !resp.Close {
		t.Errorf("with a body: %d %q close %v, want 508 %q and a close", resp.StatusCode, body, resp.Close, want)
	}
	if reqs := ng.Requests(); len(reqs) != 0 {
		t.Errorf("nginx saw %v", reqs)
	}

	rc = dialRaw(t, a)
	for _, via := range []string{
		"1.1 other (me.test:3128)",
		"1.1 other (x, 1.1 me.test:3128)",
		"1.1 me.test:31280",
		"1.1 xme.test:3128",
		"1.1 me.test",
		"me.test:3128",
	} {
		rc.write(t, "TRACE http://example.test/ HTTP/1.1\r\nHost: example.test\r\nMax-Forwards: 1\r\nVia: "+via+"\r\n\r\n")
		resp, body := rc.read(t)
		if w := "Via: " + via + "\r\nVia: 1.1 me.test:3128 (serverside)\r\n"; resp.StatusCode != 200 || !strings.Contains(body, w) {
			t.Errorf("%q: %d\n%s\nwant it forwarded with\n%s", via, resp.StatusCode, body, w)
		}
	}
}

// TestViaHas: the Via parser on its own.
func TestViaHas(t *testing.T) {
	for _, c := range []struct {
		via  string
		name string
		want bool
	}{
		{"1.1 a", "a", true},
		{"1.1 A", "a", true},
		{"HTTP/1.1 a:1 (c)", "a:1", true},
		{"1.0 b, 1.1 a", "a", true},
		{"1.0 b (x, y), 1.1 a (z)", "a", true},
		{"1.0 b (x (y, 1.1 a) \\(), 1.1 a", "a", true},
		{"1.0 b (x (y, 1.1 a) \\()", "a", false},
		{"1.1 b (a)", "a", false},
		{"1.1 ab", "a", false},
		{"1.1 a:1", "a", false},
		{"a", "a", false},
		{"1.1 b a", "a", false},
		{"", "a", false},
		{",,, ,", "a", false},
		{"1.1 b (unterminated, 1.1 a", "a", false},
	} {
		var req parser.Request
		raw := "GET / HTTP/1.1\r\nHost: h\r\nVia: " + c.via + "\r\n\r\n"
		if _, err := req.Parse([]byte(raw)); err != nil {
			t.Fatalf("%q: %v", c.via, err)
		}
		if got := viaHas(&req.Header, []byte(c.name)); got != c.want {
			t.Errorf("viaHas(%q, %q) = %v, want %v", c.via, c.name, got, c.want)
		}
	}
	// The check runs on every request: it allocates nothing.
	var req parser.Request
	if _, err := req.Parse([]byte("GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 b (x, y), 1.1 c\r\nVia: 1.1 d\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	name := []byte("a:1")
	if n := testing.AllocsPerRun(100, func() { _ = viaHas(&req.Header, name) }); n != 0 {
		t.Errorf("viaHas allocates %v times", n)
	}
}

// TestViaNameChecked: -via-name and the file's via_name take a token or
// host[:port], nothing with a space, comma or parenthesis.
func TestViaNameChecked(t *testing.T) {
	for _, s := range []string{"proxy1", "proxy1.example.com:3128", "[::1]:3128", "a_b-c"} {
		if err := checkViaName(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "a b", "a,b", "a(b)", "a\tb", "é", strings.Repeat("a", 256)} {
		if err := checkViaName(s); err == nil {
			t.Errorf("%q taken", s)
		}
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if rc := run([]string{"-listen", busy.Addr().String(), "-via-name", "a b"}); rc != 2 {
		t.Errorf("-via-name 'a b': exit code %d, want 2", rc)
	}
	if _, err := parseConfig("c.json", []byte(`{"via_name": "a,b"}`)); err == nil || !strings.Contains(err.Error(), "via_name") {
		t.Errorf("via_name \"a,b\": %v", err)
	}
	fc, err := parseConfig("c.json", []byte(`{"via_name": "proxy1:3128"}`))
	if err != nil || fc.ViaName != "proxy1:3128" {
		t.Errorf("via_name: %+v %v", fc, err)
	}
}

// TestViaLoopTraced: TRACE with Max-Forwards is how a loop is traced
// (RFC 9110 §7.6.2), and a request whose Max-Forwards is 0 is answered by
// its recipient as the final one, whatever its Via: round the loop A, B,
// A, the TRACE sent to A with Max-Forwards 2 comes back to A with 0, and
// A reflects it, its Via showing the loop, instead of a 508. One with
// Max-Forwards 3 would go on from there, and gets the 508.
func TestViaLoopTraced(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	a, _ := startParentPair(t, "a.test", "b.test", "", nil, nil)
	rc := dialRaw(t, a)
	rc.write(t, "TRACE http://example.test/ HTTP/1.1\r\nHost: example.test\r\nMax-Forwards: 2\r\n\r\n")
	resp, body := rc.read(t)
	want := "Via: 1.1 a.test (serverside)\r\nVia: 1.1 b.test (serverside)\r\n"
	if resp.StatusCode != 200 || !strings.Contains(body, "Max-Forwards: 0\r\n") || !strings.Contains(body, want) {
		t.Fatalf("%d\n%s\nwant 200 reflecting Max-Forwards 0 and the Via lines\n%s", resp.StatusCode, body, want)
	}
	rc.write(t, "TRACE http://example.test/ HTTP/1.1\r\nHost: example.test\r\nMax-Forwards: 3\r\n\r\n")
	if resp, body = rc.read(t); resp.StatusCode != 508 {
		t.Fatalf("Max-Forwards 3: %d %q, want 508", resp.StatusCode, body)
	}
}
