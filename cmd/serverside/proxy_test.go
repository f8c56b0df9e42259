package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/poolset"
)

// TestMain runs the tests, or the command itself when
// SERVERSIDE_RUN_MAIN holds its arguments (one a line), so that a test can
// see what it prints and how it exits (TestUsage).
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv("SERVERSIDE_RUN_MAIN"); ok {
		os.Exit(run(strings.Split(args, "\n")))
	}
	// Start the process-wide goroutines (netpoll's pollers, os/signal's
	// watcher) before any leak check counts goroutines.
	netpoll.Initialize()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	signal.Stop(sig)
	os.Exit(m.Run())
}

func needTools(t *testing.T) {
	t.Helper()
	if bench.NginxBinary() == "" {
		t.Skip("nginx not installed")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
}

// startProxy runs the proxy in-process on a free loopback port.
func startProxy(t *testing.T, origins ...string) string {
	t.Helper()
	return startProxyConfig(t, engine.Config{}, origins...)
}

func startProxyConfig(t *testing.T, cfg engine.Config, origins ...string) string {
	t.Helper()
	return startProxyClient(t, cfg, clientConfig{AccessLog: true}, origins...)
}

// testViaName is the received-by name of the proxies of startProxyClient
// (clientConfig.ViaName), which tests find in the Via it adds.
const testViaName = "proxy.test"

func startProxyClient(t testing.TB, cfg engine.Config, ccfg clientConfig, origins ...string) string {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Shards, cfg.Logger = 2, logger
	if ccfg.ViaName == "" {
		ccfg.ViaName = testViaName
	}
	p, err := newProxy(logger, origins, cfg, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return serveProxy(t, p)
}

// startServe serves p on a free loopback port, and returns the address
// and what Serve returns; the caller shuts p down.
func startServe(t testing.TB, p *proxy) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	return ln.Addr().String(), done
}

// serveProxy serves p on a free loopback port until the test ends, then
// shuts it down, and returns its address.
func serveProxy(t testing.TB, p *proxy) string {
	t.Helper()
	addr, done := startServe(t, p)
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
	return addr
}

// rawExchange writes req to the proxy at px over a fresh connection and
// reads until the proxy closes it (or the deadline passes).
func rawExchange(t *testing.T, px, req string, deadline time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func curl(t *testing.T, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

func TestForwardSmall(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t)
	body, _ := curl(t, "-x", "http://"+px, ng.URL("/small"))
	if body != "Hello, World!" {
		t.Fatalf("body %q", body)
	}
}

// TestForwardInvalidPort: a target whose port no connection can go to
// is the client's error, 400, directly and through a parent, with
// nothing dialed or sent upstream.
func TestForwardInvalidPort(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + ng.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	for _, px := range []string{startProxy(t), startProxyConfig(t, cfg)} {
		for _, target := range []string{"http://127.0.0.1:99999/", "http://127.0.0.1:0/", "https://127.0.0.1:65536/"} {
			status, body := rawGet(t, px, "GET "+target+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			if status != 400 || body != "invalid port in the target\n" {
				t.Errorf("%s: %d %q, want 400", target, status, body)
			}
		}
	}
	if n := len(ng.Requests()); n != 0 {
		t.Errorf("the parent logged %d requests, want none", n)
	}
}

// TestUpstreamCapIs503: a request that the origin's connection cap
// turns away (its queue full, or its wait over) gets 503 naming the
// limit: nothing reached the origin, and a later try may pass.
func TestUpstreamCapIs503(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + ng.Addr() + "?max_conns=1&max_pending=1&pending_timeout=500ms"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	pool := func() poolset.Stats { return p.eng.PeerStats()[p.group].Peers[0].Pool }
	wait := func(what string, ok func(poolset.Stats) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(pool()); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: pool %+v", what, pool())
			}
		}
	}
	type result struct {
		status int
		body   string
	}
	get := func(path string, out chan<- result) {
		status, body := rawGet(t, px, "GET "+path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		out <- result{status, body}
	}
	slow, queued := make(chan result, 1), make(chan result, 1)
	go get("/delay", slow) // holds the one connection for about 2 s
	wait("the slow request holds the connection", func(s poolset.Stats) bool { return s.Busy == 1 })
	go get("/small", queued)
	wait("a request queued", func(s poolset.Stats) bool { return s.Waiting == 1 })
	if status, body := rawGet(t, px, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n"); status != 503 ||
		!strings.HasPrefix(body, "upstream connection limit reached: ") || !strings.Contains(body, "too many waiters") {
		t.Errorf("over the queue: %d %q, want 503 naming the full queue", status, body)
	}
	if r := <-queued; r.status != 503 || !strings.HasPrefix(r.body, "upstream connection limit reached: ") ||
		!strings.Contains(r.body, "timed out waiting for a connection") {
		t.Errorf("queued past pending_timeout: %d %q, want 503 naming the wait", r.status, r.body)
	}
	if r := <-slow; r.status != 200 || len(r.body) != bench.DelayBodySize {
		t.Errorf("the slow request: %d, %d bytes", r.status, len(r.body))
	}
}

func TestReverse16kAndHead(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	body, _ := curl(t, "http://"+px+"/16k")
	if body != string(bench.PatternBody(bench.Size16K)) {
		t.Fatalf("16k body mismatch: %d bytes", len(body))
	}
	head, _ := curl(t, "-I", "http://"+px+"/16k")
	if !strings.HasPrefix(head, "HTTP/1.1 200") || !strings.Contains(head, "Content-Length: "+strconv.Itoa(bench.Size16K)) ||
		!strings.Contains(head, "Via: 1.1 proxy.test (serverside)") {
		t.Fatalf("HEAD reply:\n%s", head)
	}
}

func TestPostBodies(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, bench.PatternBody(50000), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _ := curl(t, "--data-binary", "@"+file, "http://"+px+"/echo")
	if got != "50000\n" {
		t.Fatalf("content-length post: %q", got)
	}
	got, _ = curl(t, "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+file, "http://"+px+"/echo")
	if got != "50000\n" {
		t.Fatalf("chunked post: %q", got)
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bench.PatternBody(2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	got, errOut := curl(t, "-v", "--data-binary", "@"+big, "http://"+px+"/echo")
	if got != strconv.Itoa(2<<20)+"\n" {
		t.Fatalf("2 MiB post: %q", got)
	}
	if !strings.Contains(errOut, "Expect: 100-continue") || !strings.Contains(errOut, "HTTP/1.1 100 Continue") {
		t.Fatalf("no 100-continue exchange:\n%s", errOut)
	}
}

func TestDownload1M(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t)
	body, _ := curl(t, "-x", "http://"+px, ng.URL("/1m"))
	if sha256.Sum256([]byte(body)) != sha256.Sum256(bench.PatternBody(bench.Size1M)) {
		t.Fatalf("1m body mismatch: %d bytes", len(body))
	}
}

func TestKeepAlive(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t)
	body, errOut := curl(t, "-v", "-x", "http://"+px, ng.URL("/small"), ng.URL("/16k"))
	if len(body) != len("Hello, World!")+bench.Size16K {
		t.Fatalf("body %d bytes", len(body))
	}
	if !strings.Contains(errOut, "Re-using existing connection") && !strings.Contains(errOut, "Reusing existing") {
		t.Fatalf("client connection not reused:\n%s", errOut)
	}
}

func TestPipelinedAndHTTP10(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	req := "GET /small HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /small HTTP/1.0\r\nHost: a\r\n\r\n"
	all := rawExchange(t, px, req, 20*time.Second) // the HTTP/1.0 request closes the connection
	s := string(all)
	i1 := strings.Index(s, "HTTP/1.1 200")
	i2 := strings.Index(s, "HTTP/1.1 404")
	i3 := strings.LastIndex(s, "HTTP/1.1 200")
	if i1 < 0 || i2 < i1 || i3 < i2 || strings.Count(s, "Hello, World!") != 2 {
		t.Fatalf("pipelined replies out of order:\n%s", s)
	}
}

func TestMalformedRequest(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	all := rawExchange(t, px, "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 20*time.Second)
	if !strings.HasPrefix(string(all), "HTTP/1.1 400") {
		t.Fatalf("reply:\n%s", all)
	}
	// A request that does reach nginx afterwards is the only one logged.
	body, _ := curl(t, "http://"+px+"/small")
	if body != "Hello, World!" {
		t.Fatalf("body %q", body)
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // room for a stray request to show up
	reqs := ng.Requests()
	if len(reqs) != 1 || reqs[0].URI != "/small" {
		t.Fatalf("nginx saw %+v", reqs)
	}
}

func TestOriginDown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	addr := freeAddr(t) // nothing listens there now
	px := startProxy(t, "http://"+addr)
	out, _ := curl(t, "-i", "http://"+px+"/x")
	if !strings.HasPrefix(out, "HTTP/1.1 502") {
		t.Fatalf("reply:\n%s", out)
	}
}

// TestHeadErrorHasNoContent: the proxy's own error responses to a HEAD
// request (502 for an origin that is down, 400 for a target a forward
// proxy cannot take) carry no content (RFC 9110 §9.3.2): their
// Content-Length is the one a GET would get, and nothing follows the
// head. curl -I reports bytes after the head as "Excess found".
func TestHeadErrorHasNoContent(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	addr := freeAddr(t) // nothing listens there now
	rev := startProxy(t, "http://"+addr)
	fwd := startProxy(t)
	cases := []struct {
		px, req string
		status  int
	}{
		{rev, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", 502},
		{fwd, "HEAD http://" + addr + "/x HTTP/1.1\r\nHost: a\r\n\r\n", 502},
		{fwd, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	}
	for _, tc := range cases {
		all := rawExchange(t, tc.px, tc.req, 20*time.Second)
		i := bytes.Index(all, []byte("\r\n\r\n"))
		if i < 0 || !strings.HasPrefix(string(all), "HTTP/1.1 "+strconv.Itoa(tc.status)+" ") {
			t.Fatalf("%q: reply:\n%s", tc.req, all)
		}
		if rest := all[i+4:]; len(rest) != 0 {
			t.Fatalf("%q: %d bytes of content after the head of a HEAD response: %q", tc.req, len(rest), rest)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), &http.Request{Method: "HEAD"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength <= 0 || !resp.Close {
			t.Fatalf("%q: Content-Length %d, close %v", tc.req, resp.ContentLength, resp.Close)
		}
	}
	_, stderr, _ := curlStatus(t, "-v", "-I", "-x", "http://"+fwd, "http://"+addr+"/x")
	if strings.Contains(stderr, "Excess") {
		t.Fatalf("curl -I:\n%s", stderr)
	}
}

// An origin's 101 to a request that offered no upgrade is a bad gateway,
// not a switch relayed to a client that would then see only a close (RFC
// 9110 §15.2.2). To one that offered it, the 101 and what follows are
// relayed (TestWebSocketReverse has a real WebSocket server).
func TestUnrequestedSwitchIsBadGateway(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t) // the relay after the 101
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes")
		_, _ = io.Copy(io.Discard, br)
	})
	px := startProxy(t, "http://"+o.Addr())
	for _, req := range []string{
		"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws HTTP/1.0\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", // ignored in 1.0
	} {
		out := string(rawExchange(t, px, req, 10*time.Second))
		if !strings.HasPrefix(out, "HTTP/1.1 502 ") || !strings.Contains(out, "no upgrade") {
			t.Fatalf("reply to %q:\n%s", req, out)
		}
	}
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 1024)
	for !strings.HasSuffix(string(got), "frames") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("upgrade offered: %q, %v; want the 101 and the bytes behind it", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if out := string(got); !strings.HasPrefix(out, "HTTP/1.1 101 Switching Protocols\r\n") || !strings.Contains(out, "\r\nConnection: upgrade\r\n") ||
		!strings.Contains(out, "\r\nUpgrade: websocket\r\n") || !strings.HasSuffix(out, "\r\n\r\nframes") {
		t.Fatalf("upgrade offered: %q", out)
	}
}

// An origin's 204 with Content-Length reaches the client without it: no
// server may send one (RFC 9110 §8.6), and a client that took it for the
// length would read the next response's bytes as this one's body.
func Test204ContentLengthDropped(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n")
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	out := string(rawExchange(t, px, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10*time.Second))
	want := "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-A: 1\r\nVia: 1.1 proxy.test (serverside)\r\nConnection: close\r\n\r\n"
	if out != want {
		t.Fatalf("reply %q, want %q", out, want)
	}
}

// An origin that answers an upload before reading it and resets the
// connection (a 413 without lingering close) has its answer relayed, not
// replaced by a 502 for the failed body write. (No "Expect: 100-continue",
// which would have the answer before any body.)
func TestEarlyFinalThenResetRelayed(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope")
		_ = c.(*net.TCPConn).SetLinger(0) // unread body bytes: the close is a reset
	})
	px := startProxy(t, "http://"+o.Addr())
	f := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(f, make([]byte, 64<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := curl(t, "-i", "-H", "Expect:", "--data-binary", "@"+f, "http://"+px+"/u")
	if !strings.HasPrefix(out, "HTTP/1.1 413 ") || !strings.HasSuffix(out, "\r\n\r\nnope") {
		t.Fatalf("reply:\n%s", out)
	}
}

// TestEarlyAnswerLingers: a response that goes out before the client has
// sent its whole upload (an origin's early 413) is followed by a lingering
// close: the proxy shuts its sending side and drops what the client still
// sends, instead of closing at once, which would have the client's kernel
// reset the connection and destroy the response it had not read yet
// (RFC 9112 §9.6). The client here reads the response only after sending
// more of its body.
func TestEarlyAnswerLingers(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope")
		_ = c.(*net.TCPConn).SetLinger(0)
	})
	px := startProxy(t, "http://"+o.Addr())
	earlyAnswerLingers(t, px, "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n", 413, "nope")
	// The proxy's own answer to a request it must not forward (RFC 9110
	// §7.6.2) lingers the same way.
	earlyAnswerLingers(t, px, "OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nContent-Length: 67108864\r\n\r\n", 200, "")
}

// earlyAnswerLingers sends head, announcing a 64 MiB body, and the body
// until the response (status, body) has come and some more after it: the
// proxy must absorb it, and the response arrive whole, then the end.
func earlyAnswerLingers(t *testing.T, px, head string, status int, wantBody string) {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	// The upload goes on, as curl's does, until the response has come and
	// a little more went after it (or the connection fails).
	answered := make(chan struct{})
	uploaded := make(chan error, 1)
	go func() {
		chunk := make([]byte, 256<<10)
		after := 8
		for range 256 { // the 64 MiB the head announced
			select {
			case <-answered:
				if after--; after < 0 {
					uploaded <- nil
					return
				}
				time.Sleep(20 * time.Millisecond) // time for a reset to come back, were there one
			default:
			}
			if _, err := c.Write(chunk); err != nil {
				uploaded <- err
				return
			}
		}
		uploaded <- nil
	}()
	br := bufio.NewReaderSize(c, 16) // the rest of the response stays in the kernel
	if _, err := br.Peek(1); err != nil {
		t.Fatalf("waiting for the response: %v", err)
	}
	close(answered)
	// A client that sends on while the response arrives (curl does) must
	// not be reset: curl then gives up with "Send failure" and never shows
	// the response.
	if err := <-uploaded; err != nil {
		t.Fatalf("the upload after the response: %v, want it absorbed", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response after more body: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != status || string(body) != wantBody || err != nil || !resp.Close {
		t.Fatalf("response %d %q (%v), close %v; want the %d whole, then the end", resp.StatusCode, body, err, resp.Close, status)
	}
}

// A chunked origin reply reaches an HTTP/1.1 client chunked and an
// HTTP/1.0 client close-delimited.
func TestChunkedResponseReframed(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	want := strings.Repeat("0123456789", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 10; i++ {
			_, _ = io.WriteString(w, want[i*1000:(i+1)*1000])
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	px := startProxy(t, srv.URL)
	body, errOut := curl(t, "-v", "http://"+px+"/c")
	if body != want || !strings.Contains(strings.ToLower(errOut), "transfer-encoding: chunked") {
		t.Fatalf("HTTP/1.1 client: %d bytes\n%s", len(body), errOut)
	}
	all := rawExchange(t, px, "GET /c HTTP/1.0\r\n\r\n", 20*time.Second)
	head, rest, _ := strings.Cut(string(all), "\r\n\r\n")
	if strings.Contains(strings.ToLower(head), "transfer-encoding") || rest != want {
		t.Fatalf("HTTP/1.0 client: head\n%s\nbody %d bytes", head, len(rest))
	}
}

// A response relayed close-delimited (to an HTTP/1.0 client) whose
// origin body breaks off (a chunked body without its last chunk) ends in
// a reset, not in a close: a close is the end of such a body, and would
// pass the cut one off as complete (RFC 9112 §8). Whole, it ends in a
// close, as before.
func TestCutBodyResetsCloseDelimited(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		if req.URL.Path == "/whole" {
			_, _ = io.WriteString(c, "0\r\n\r\n")
			_, _ = io.Copy(io.Discard, br)
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	for _, tc := range []struct {
		path  string
		reset bool
	}{{"/cut", true}, {"/whole", false}} {
		c, br := dialClient(t, px)
		if _, err := io.WriteString(c, "GET "+tc.path+" HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(br)
		if tc.reset {
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s: read %q, %v; want a reset", tc.path, all, err)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || !strings.HasSuffix(string(all), "\r\n\r\nhello") {
			t.Errorf("%s: read %q, %v; want the whole body, then the close", tc.path, all, err)
		}
	}
}

// An origin that accepts and never answers gives 504.
func TestOriginTimeout(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for i := 0; i < 4; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for i := 0; i < len(accepted); i++ {
			(<-accepted).Close()
		}
	})
	px := startProxyConfig(t, engine.Config{ResponseHeaderTimeout: 300 * time.Millisecond}, "http://"+ln.Addr().String())
	out, _ := curl(t, "-i", "http://"+px+"/x")
	if !strings.HasPrefix(out, "HTTP/1.1 504") {
		t.Fatalf("reply:\n%s", out)
	}
}

// An upstream whose connect hangs past -connect-timeout gives 504, as a
// CONNECT to it does, in reverse and forward mode, whether the
// connections are on netpoll or Go net.
func TestConnectTimeoutIs504(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	addr := bench.UnansweredAddr(t)
	for _, goNet := range []bool{false, true} {
		cfg := engine.Config{ConnectTimeout: 200 * time.Millisecond, GoNetIO: goNet}
		rev := startProxyConfig(t, cfg, "http://"+addr)
		fwd := startProxyConfig(t, cfg)
		for _, c := range []struct{ px, req string }{
			{rev, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"},
			{fwd, "GET http://" + addr + "/x HTTP/1.1\r\nHost: a\r\n\r\n"},
		} {
			out := rawExchange(t, c.px, c.req, 20*time.Second)
			if !bytes.HasPrefix(out, []byte("HTTP/1.1 504 ")) || !bytes.Contains(out, []byte("upstream timed out")) {
				t.Errorf("GoNetIO %v, %q: reply:\n%s", goNet, c.req, out)
			}
		}
	}
}

// SIGTERM lets the request in flight finish, then run returns 0.
func TestSignalDrains(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	addr := freeAddr(t)
	code := make(chan int, 1)
	go func() { code <- run([]string{"-listen", addr, "-access-log=false", "-origin", "http://" + ng.Addr()}) }()
	var (
		c   net.Conn
		err error
	)
	for i := 0; i < 200; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// /delay takes about two seconds; SIGTERM arrives in the middle.
	if _, err := io.WriteString(c, "GET /delay HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(all), "\r\n\r\n")
	if !strings.HasPrefix(string(all), "HTTP/1.1 200") || len(body) != bench.DelayBodySize {
		t.Fatalf("reply %d bytes, body %d", len(all), len(body))
	}
	select {
	case rc := <-code:
		if rc != 0 {
			t.Fatalf("exit code %d", rc)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return")
	}
}

// TestSecondSignalStopsDrain: a second SIGTERM or SIGINT during the drain
// ends it at once, as Ctrl-C twice does: the response in flight (1 MiB at
// 256 KiB/s, which would finish within the drain's deadline) is cut, the
// client sees its connection close before the body's Content-Length,
// and run returns 0.
func TestSecondSignalStopsDrain(t *testing.T) {
	cutAtShutdown(t, true)
}

// TestShutdownTimeoutFlag: -shutdown-timeout 1s cuts the same response
// after one SIGTERM, and run returns 0.
func TestShutdownTimeoutFlag(t *testing.T) {
	cutAtShutdown(t, false, "-shutdown-timeout", "1s")
}

// cutAtShutdown runs the proxy (with args) in front of nginx, starts a
// response of 1 MiB at 256 KiB/s, sends SIGTERM, then SIGINT when second,
// and checks that the response is cut and that run returns 0.
func cutAtShutdown(t *testing.T, second bool, args ...string) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /slow1m {
            sendfile off;
            limit_rate 262144;
            try_files /1m =404;
        }`})
	addr := freeAddr(t)
	code := make(chan int, 1)
	args = append([]string{"-listen", addr, "-access-log=false", "-origin", "http://" + ng.Addr()}, args...)
	go func() { code <- run(args) }()
	waitListening(t, addr)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /slow1m HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != bench.Size1M {
		t.Fatalf("response %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if second {
		// The first signal is taken once the listener is closed: signals
		// that arrive together are one.
		for i := 0; ; i++ {
			probe, err := net.Dial("tcp", addr)
			if err != nil {
				break
			}
			probe.Close()
			if i == 500 {
				t.Fatal("still accepting after SIGTERM")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= bench.Size1M {
		t.Errorf("body: %d bytes, err %v; want it cut by the shutdown", n, err)
	}
	select {
	case rc := <-code:
		if rc != 0 {
			t.Fatalf("exit code %d", rc)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return")
	}
}

// Clients that each open a connection, send one request and read the
// reply, one after another, all reuse one upstream connection: the pool
// is shared by every client connection, and the reply's last bytes leave
// only after the exchange put the upstream connection back.
func TestSequentialClientsReuseUpstream(t *testing.T) {
	needTools(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	const n = 30
	for i := 0; i < n; i++ {
		for _, path := range []string{"/small", "/16k"} {
			resp := string(rawExchange(t, px, "GET "+path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 10*time.Second))
			if !strings.HasPrefix(resp, "HTTP/1.1 200 ") {
				t.Fatalf("request %d %s: %.80q", i, path, resp)
			}
		}
	}
	reqs := ng.WaitRequests(2*n, 5*time.Second)
	if got := bench.CountConnections(reqs); got != 1 {
		t.Fatalf("nginx saw %d connections for %d sequential requests, want 1", got, len(reqs))
	}
}

// TestShutdownClosesInFlight: two uploads are in flight when the proxy
// starts shutting down, one on netpoll and one on a connection detached
// for its body ("Expect: 100-continue", 2 MiB); the origin answers both
// only after the shutdown began. Each client gets its answer with
// "Connection: close", then the close: the proxy takes no further request
// on either connection, the detached one included.
func TestShutdownClosesInFlight(t *testing.T) {
	bench.CheckLeaks(t)
	release := make(chan struct{})
	got := make(chan int64, 2)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("Expect") == "100-continue" {
				_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			}
			n, _ := io.Copy(io.Discard, req.Body)
			got <- n
			<-release
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + origin.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)

	const big = 2 << 20
	detached, brd := dialClient(t, px)
	if _, err := fmt.Fprintf(detached, "PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", big); err != nil {
		t.Fatal(err)
	}
	if line, err := brd.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("detached: %q, %v", line, err)
	}
	if _, err := brd.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := detached.Write(bytes.Repeat([]byte("d"), big)); err != nil {
		t.Fatal(err)
	}
	onNetpoll, brn := dialClient(t, px)
	if _, err := io.WriteString(onNetpoll, "PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	if n1, n2 := <-got, <-got; n1+n2 != big+5 {
		t.Fatalf("origin read bodies of %d and %d bytes, want %d and 5", n1, n2, big)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	for !p.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	close(release)

	for name, br := range map[string]*bufio.Reader{"detached": brd, "netpoll": brn} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" || !resp.Close {
			t.Errorf("%s: status %d, body %q, Connection %q; want 200, \"ok\" and close",
				name, resp.StatusCode, body, resp.Header.Get("Connection"))
		}
		if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("%s: after the response: %d bytes, %v; want EOF", name, n, err)
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestShutdownDeadlineClosesDetached: an upload whose client stalls
// midway, on a connection detached for its body (8 MiB to nginx's /echo,
// 3 MiB sent), is the only connection left when the proxy shuts down.
// netpoll's own Shutdown does not see detached connections, so it is done
// at once; the drain still ends at the deadline, and the client's
// connection is closed by then, not left open for the client to give up.
func TestShutdownDeadlineClosesDetached(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + ng.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	c, _ := dialClient(t, px)
	if _, err := fmt.Fprintf(c, "PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(bytes.Repeat([]byte("u"), 3<<20)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := 0
		p.each(func(cc *clientConn) {
			if cc.detached.Load() {
				n++
			}
		})
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload's connection was not detached")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err == nil {
		t.Error("shutdown: nil error, want the deadline's: the upload cannot finish")
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	if n := p.live(); n != 0 {
		t.Errorf("%d client connections live after the shutdown", n)
	}
	// Closed by the proxy: the read ends (EOF, a reset, or a 400 then
	// EOF) instead of waiting out its deadline.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); isTimeout(err) {
		t.Fatal("the stalled upload's connection is still open after the shutdown")
	}
}

// TestShutdownDeadlineIs503: a request still waiting for its origin when
// the shutdown's deadline passes is answered 503 "proxy shutting down":
// the proxy cut it off, not the origin.
func TestShutdownDeadlineIs503(t *testing.T) {
	bench.CheckLeaks(t)
	stall := make(chan struct{})
	defer close(stall)
	arrived := make(chan struct{}, 1)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		arrived <- struct{}{}
		<-stall
	})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + origin.Addr()}, engine.Config{Shards: 1, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(ctx) }()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "proxy shutting down\n" {
		t.Errorf("cut off by the shutdown: %d %q, want 503 proxy shutting down", resp.StatusCode, body)
	}
	<-shut
	<-served
}

// TestStaleConnectionReplaysIdempotentBody: an origin reads the second
// request on a kept-alive connection and closes without answering, the
// stale keep-alive race. A PUT (idempotent) whose body came whole is sent
// again on a new connection, with the same bytes; a POST is not: it is
// sent once and the client gets the 502. (A real server closes an idle
// connection at a moment of its own, which a test cannot aim at.)
func TestStaleConnectionReplaysIdempotentBody(t *testing.T) {
	bench.CheckLeaks(t)
	for _, method := range []string{"PUT", "POST"} {
		t.Run(method, func(t *testing.T) {
			var mu sync.Mutex
			var got []string // "conn method body" for each request read whole
			o := staleEchoOrigin(t, &mu, &got)
			px := startProxy(t, "http://"+o.Addr())
			client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			send := func(body string) (int, string) {
				req, err := http.NewRequest(method, "http://"+px+"/x", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %q: %v", method, body, err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if st, b := send("first"); st != 200 || b != "first" {
				t.Fatalf("first %s: %d %q", method, st, b)
			}
			st, b := send("second")
			mu.Lock()
			defer mu.Unlock()
			if method == "PUT" {
				if st != 200 || b != "second" {
					t.Fatalf("PUT on the closing connection: %d %q, want it sent again and answered", st, b)
				}
				if want := []string{"0 PUT first", "0 PUT second", "1 PUT second"}; !slices.Equal(got, want) {
					t.Fatalf("origin read %q, want %q", got, want)
				}
				return
			}
			if st != 502 {
				t.Fatalf("POST on the closing connection: %d %q, want 502", st, b)
			}
			if want := []string{"0 POST first", "0 POST second"}; !slices.Equal(got, want) {
				t.Fatalf("origin read %q, want %q: a POST is never sent twice", got, want)
			}
		})
	}
}

// TestStaleConnectionReplaysKeyedPost: with -strict-resend, a POST that
// carries an Idempotency-Key field is still sent again after the stale
// keep-alive race (engine Config.StrictResend concerns requests without
// one), so its body, which came whole, is kept for the resend as an
// idempotent method's is: the origin that read it and closed gets it again
// on a new connection, and the client its answer.
func TestStaleConnectionReplaysKeyedPost(t *testing.T) {
	bench.CheckLeaks(t)
	var mu sync.Mutex
	var got []string // "conn method body" for each request read whole
	o := staleEchoOrigin(t, &mu, &got)
	px := startProxyConfig(t, engine.Config{StrictResend: true}, "http://"+o.Addr())
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	send := func(body string) (int, string) {
		req, err := http.NewRequest("POST", "http://"+px+"/x", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Idempotency-Key", "k-"+body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST %q: %v", body, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, b := send("first"); st != 200 || b != "first" {
		t.Fatalf("first POST: %d %q", st, b)
	}
	st, b := send("second")
	mu.Lock()
	defer mu.Unlock()
	if st != 200 || b != "second" {
		t.Fatalf("keyed POST on the closing connection: %d %q, want it sent again and answered", st, b)
	}
	if want := []string{"0 POST first", "0 POST second", "1 POST second"}; !slices.Equal(got, want) {
		t.Fatalf("origin read %q, want %q", got, want)
	}
}

// staleEchoOrigin starts an origin that reads each request whole (framed
// by its Content-Length), records it as "conn method body" in got, and
// answers with the body, except the second request on its first
// connection: that one it reads and then closes without answering, the
// stale keep-alive race.
func staleEchoOrigin(t *testing.T, mu *sync.Mutex, got *[]string) *bench.Origin {
	t.Helper()
	return bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			lines, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			size := 0
			for _, l := range lines[1:] {
				if v, ok := strings.CutPrefix(strings.ToLower(l), "content-length: "); ok {
					size, _ = strconv.Atoi(v)
				}
			}
			body := make([]byte, size)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			mu.Lock()
			*got = append(*got, fmt.Sprintf("%d %s %s", i, strings.Fields(lines[0])[0], body))
			mu.Unlock()
			if i == 0 && n == 1 {
				return // the race: closed as the request arrived
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
}

// A forward proxy keeps no persistent connection with an HTTP/1.0 client
// (RFC 9112 §9.3), whatever keep-alive it asks for: old HTTP/1.0 proxies
// between it and the client may have passed the keep-alive on blindly.
// Its response says so, and the request pipelined behind it is not read.
// A reverse proxy, which the client takes for the origin, keeps it
// (TestClientReverse).
func TestForwardHTTP10ClientNotKept(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t)
	for _, field := range []string{"Proxy-Connection: keep-alive", "Connection: keep-alive"} {
		t.Run(field, func(t *testing.T) {
			before := len(ng.Requests())
			all := string(rawExchange(t, px,
				"GET "+ng.URL("/small")+" HTTP/1.0\r\n"+field+"\r\n\r\n"+
					"GET "+ng.URL("/small")+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n", 20*time.Second))
			head, body, _ := strings.Cut(all, "\r\n\r\n")
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != bench.SmallBody {
				t.Fatalf("reply:\n%s", all)
			}
			if !strings.Contains(head, "\r\nConnection: close") || strings.Contains(strings.ToLower(head), "keep-alive") {
				t.Fatalf("head does not say the connection closes:\n%s", head)
			}
			time.Sleep(100 * time.Millisecond) // room for a stray request to show up
			if n := len(ng.Requests()) - before; n != 1 {
				t.Fatalf("nginx logged %d requests, want 1", n)
			}
		})
	}
}
