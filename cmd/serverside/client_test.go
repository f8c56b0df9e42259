package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// writeRandomFile writes size pseudo-random bytes (a fixed seed) to path
// and returns their SHA-256.
func writeRandomFile(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		_, _ = src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// httpClient is a net/http client using the proxy as its forward proxy.
func httpClient(t *testing.T, px string) *http.Client {
	t.Helper()
	pu, err := url.Parse("http://" + px)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// TestDownload100MiB relays a 100 MiB file of random bytes from nginx
// through the forward proxy to a net/http client and checks its SHA-256.
func TestDownload100MiB(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	const size = 100 << 20
	want := writeRandomFile(t, filepath.Join(ng.Dir(), "html", "files", "big"), size)
	px := startProxy(t)
	cl := httpClient(t, px)
	resp, err := cl.Get(ng.URL("/files/big"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if resp.StatusCode != 200 || n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("status %d, %d bytes, sha256 %x, want %x", resp.StatusCode, n, h.Sum(nil), want)
	}
}

// TestNetHTTPKeepAlive sends requests one after another from a net/http
// client: one client connection carries them all, and the proxy reuses one
// upstream connection for them.
func TestNetHTTPKeepAlive(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t)
	cl := httpClient(t, px)
	const n = 40
	reused := 0
	for i := range n {
		path, want := "/small", bench.SmallBody
		if i%2 == 1 {
			path, want = "/16k", string(bench.PatternBody(bench.Size16K))
		}
		req, err := http.NewRequest("GET", ng.URL(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		resp, err := cl.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != want || resp.Header.Get("Via") != "1.1 proxy.test (serverside)" {
			t.Fatalf("request %d: status %d, %d bytes, via %q, err %v", i, resp.StatusCode, len(body), resp.Header.Get("Via"), err)
		}
	}
	if reused != n-1 {
		t.Fatalf("client connection reused %d times, want %d", reused, n-1)
	}
	reqs := ng.WaitRequests(n, 5*time.Second)
	if len(reqs) != n || bench.CountConnections(reqs) != 1 {
		t.Fatalf("nginx saw %d requests on %d connections, want %d on 1", len(reqs), bench.CountConnections(reqs), n)
	}
}

// TestPipelinedMixed writes ten requests in one go on a raw socket (GET,
// HEAD, bodies by length and chunked, a 304, HTTP/1.0 keep-alive) and
// reads the ten responses in order.
func TestPipelinedMixed(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	body := string(bench.PatternBody(3000))
	type step struct {
		req, method string
		status      int
		body        string
	}
	steps := []step{
		{"GET /small HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 200, bench.SmallBody},
		{"HEAD /16k HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", 200, ""},
		{"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + body, "POST", 200, "3000\n"},
		{"GET /16k HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 200, string(bench.PatternBody(bench.Size16K))},
		{"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nBB8\r\n" + body + "\r\n0\r\n\r\n", "POST", 200, "3005\n"},
		{"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 304, ""},
		{"GET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 404, "*"},
		{"GET /small HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", "GET", 200, bench.SmallBody},
		{"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "PUT", 200, "0\n"},
		{"GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET", 200, bench.SmallBody},
	}
	var all strings.Builder
	for _, s := range steps {
		all.WriteString(s.req)
	}
	if _, err := io.WriteString(c, all.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, s := range steps {
		resp, err := http.ReadResponse(br, &http.Request{Method: s.method})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", i, err)
		}
		if resp.StatusCode != s.status || (s.body != "*" && string(got) != s.body) {
			t.Fatalf("response %d (%q): status %d, body %q", i, s.req[:20], resp.StatusCode, got)
		}
		if s.method == "HEAD" && resp.ContentLength != bench.Size16K {
			t.Fatalf("HEAD: Content-Length %d", resp.ContentLength)
		}
		if strings.HasPrefix(s.req, "GET /small HTTP/1.0") && resp.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("HTTP/1.0 keep-alive reply: Connection %q", resp.Header.Get("Connection"))
		}
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the last response: %d bytes, %v (want EOF)", n, err)
	}
}

// TestMalformedRequests sends heads the parser rejects: each gets the
// rule's status and text, a Date, and a closed connection, and none
// reaches nginx.
func TestMalformedRequests(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	cases := []struct {
		head string
		rule *parser.Error
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", parser.Rule(parser.ErrTEAndCL)},
		{"GET / HTTP/1.1\r\n\r\n", parser.Rule(parser.ErrMissingHost)},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", parser.Rule(parser.ErrCLMismatch)},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", parser.Rule(parser.ErrSpaceBeforeColon)},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", parser.Rule(parser.ErrObsFold)},
		{"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", parser.Rule(parser.ErrBadMethod)},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", parser.Rule(parser.ErrVersionNotHTTP1)},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", parser.Rule(parser.ErrTENotChunked)},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", parser.Rule(parser.ErrUnknownTE)},
		// A TLS ClientHello on the plain port: no line end will come,
		// and the answer must not wait for the header timeout.
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x11", parser.Rule(parser.ErrBadRequestLine)},
		// Over the head limit: a request line alone is 414, a field 431
		// (RFC 9112 §3, RFC 9110 §5.4), as the parser says.
		{"GET /" + strings.Repeat("a", parser.DefaultMaxHeadBytes+10000) + " HTTP/1.1\r\nHost: a\r\n\r\n", parser.Rule(parser.ErrStartLineTooLong)},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", parser.DefaultMaxHeadBytes+10000) + "\r\n\r\n", parser.Rule(parser.ErrHeadTooLarge)},
	}
	for _, tc := range cases {
		if tc.rule == nil {
			t.Fatal("no rule")
		}
		all := rawExchange(t, px, tc.head, 20*time.Second) // the proxy closes the connection
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%.100q: %v\n%s", tc.head, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.rule.Status || string(body) != tc.rule.Msg+"\n" || !resp.Close {
			t.Fatalf("%.100q: status %d close %v body %q, want %d %q", tc.head, resp.StatusCode, resp.Close, body, tc.rule.Status, tc.rule.Msg)
		}
		if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
			t.Fatalf("%q: Date %q: %v", tc.head, resp.Header.Get("Date"), err)
		}
	}
	body, _ := curl(t, "http://"+px+"/small")
	if body != bench.SmallBody {
		t.Fatalf("body %q", body)
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	if reqs := ng.Requests(); len(reqs) != 1 || reqs[0].URI != "/small" {
		t.Fatalf("nginx saw %+v", reqs)
	}
}

// TestClientTimeouts: an idle kept-alive connection and a connection that
// never sends are closed after the idle timeout; a head that stops midway
// gets 408 after the header timeout.
func TestClientTimeouts(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyClient(t, engine.Config{}, clientConfig{IdleTimeout: 300 * time.Millisecond, HeaderTimeout: 300 * time.Millisecond},
		"http://"+ng.Addr())

	dial := func() (net.Conn, *bufio.Reader) { return dialClient(t, px) }
	// Kept alive, then idle.
	c1, br1 := dial()
	if _, err := io.WriteString(c1, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br1, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != bench.SmallBody || resp.Close {
		t.Fatalf("status %d body %q close %v", resp.StatusCode, got, resp.Close)
	}
	// Closed by the proxy well before the 10 s deadline set above.
	if n, err := br1.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle connection: %d bytes, %v (want EOF)", n, err)
	}
	// Never sends anything.
	_, br2 := dial()
	if n, err := br2.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("silent connection: %d bytes, %v (want EOF)", n, err)
	}
	// Half a head.
	c3, br3 := dial()
	if _, err := io.WriteString(c3, "GET /small HTTP/1.1\r\nHo"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(br3)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(all), "HTTP/1.1 408 ") || !strings.Contains(string(all), "request head not complete") {
		t.Fatalf("half a head:\n%s", all)
	}
	if reqs := ng.Requests(); len(reqs) != 1 {
		t.Fatalf("nginx saw %d requests, want 1", len(reqs))
	}
}

// TestEarlyResponseCloses: an origin answers 403 at once to a request
// announcing "Expect: 100-continue" without reading its body. The client
// gets the 403 with "Connection: close", no "100 Continue", and the
// connection closes, since the body it may still send cannot be framed.
func TestEarlyResponseCloses(t *testing.T) {
	bench.CheckLeaks(t)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Expect") != "100-continue" {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
		_, _ = io.Copy(io.Discard, br) // until the proxy closes
	})
	px := startProxy(t, "http://"+origin.Addr())
	all := rawExchange(t, px, "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", 10*time.Second)
	s := string(all)
	if !strings.HasPrefix(s, "HTTP/1.1 403 ") || !strings.Contains(s, "\r\nConnection: close\r\n") ||
		!strings.HasSuffix(s, "\r\n\r\nno") || strings.Contains(s, "100 Continue") {
		t.Fatalf("reply:\n%s", s)
	}
}

// TestSlowReaderRSS relays a large body from nginx to a client that reads
// 256 KiB at a time with a pause after each, so nginx could send far faster
// than the client takes it. Without the race detector it samples this
// process's VmRSS and asserts the peak stays within 64 MiB of the RSS
// before: the proxy must leave the excess to TCP, not buffer it. Under the
// race detector (whose shadow memory grows with the heap it watches) a
// quarter of the body is relayed and only the bytes are checked; run the
// bound with
//
//	GOMAXPROCS=2 go test -run TestSlowReaderRSS -v ./cmd/serverside/
func TestSlowReaderRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("relays 1 GiB; skipped with -short")
	}
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	size := int64(1 << 30)
	if raceEnabled {
		size /= 4
	}
	// A sparse file: nginx sends zeros from the page cache, nothing on disk.
	f, err := os.Create(filepath.Join(ng.Dir(), "html", "files", "huge"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	px := startProxy(t, "http://"+ng.Addr())

	rss := bench.SampleRSS(t, 50*time.Millisecond)

	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := io.WriteString(c, "GET /files/huge HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	buf := make([]byte, 256<<10)
	var n int64
	for n < size {
		m, err := io.ReadFull(resp.Body, buf[:min(int64(len(buf)), size-n)])
		if i := bytes.IndexFunc(buf[:m], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("byte %d is not zero", n+int64(i))
		}
		n += int64(m)
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		time.Sleep(time.Millisecond)
	}
	before, peak := rss.Stop()
	growth := peak - before
	t.Logf("relayed %d MiB; RSS before %.1f MiB, peak growth %.1f MiB", size>>20, bench.MiB(before), bench.MiB(growth))
	if !raceEnabled && growth > 64<<20 {
		t.Fatalf("RSS grew by %.1f MiB relaying to a slow reader, want at most 64 MiB", bench.MiB(growth))
	}
}

// TestSlowOriginUploadRSS uploads a large body, announced with "Expect:
// 100-continue" as curl does for large bodies (and then sent once the
// "100 Continue" is in) or not (sent right behind the head, as browsers
// do), from a client that sends as fast as it can, to an origin that
// reads it slowly (64 KiB, then a pause). netpoll would buffer whatever
// the client sends; the connection must leave netpoll for the body so
// that TCP holds the client back. The origin checks the bytes by SHA-256;
// without the race detector the proxy's RSS growth is bounded by 64 MiB.
// A second request follows on the same client connection.
func TestSlowOriginUploadRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 256 MiB; skipped with -short")
	}
	t.Run("expect", func(t *testing.T) { slowOriginUpload(t, true) })
	// Without "Expect: 100-continue" the body follows the head at once:
	// netpoll may have read some of it when the head is parsed, and reads
	// on during the hand-over.
	t.Run("no-expect", func(t *testing.T) { slowOriginUpload(t, false) })
}

func slowOriginUpload(t *testing.T, expect bool) {
	bench.CheckLeaks(t)
	size := int64(256 << 20)
	if raceEnabled {
		size /= 4
	}
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			h := sha256.New()
			buf := make([]byte, 64<<10)
			var n int64
			for {
				m, err := req.Body.Read(buf)
				h.Write(buf[:m])
				n += int64(m)
				if err != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			reply := fmt.Sprintf("%d %x", n, h.Sum(nil))
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(reply), reply); err != nil {
				return
			}
		}
	})
	px := startProxy(t, "http://"+origin.Addr())

	rss := bench.SampleRSS(t, 50*time.Millisecond)

	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	head := fmt.Sprintf("PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n", size)
	if expect {
		head += "Expect: 100-continue\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if expect {
		cont, err := http.ReadResponse(br, nil)
		if err != nil || cont.StatusCode != 100 {
			t.Fatalf("want 100 Continue, got %v, %v", cont, err)
		}
	}
	sent := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		src := rand.NewChaCha8([32]byte{4, 5, 6})
		buf := make([]byte, 256<<10)
		for left := size; left > 0; {
			n := min(int64(len(buf)), left)
			_, _ = src.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				close(sent)
				return
			}
			left -= n
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		sent <- sum
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum, ok := <-sent
	if !ok {
		t.Fatal("the upload failed")
	}
	if want := fmt.Sprintf("%d %x", size, sum); resp.StatusCode != 200 || string(got) != want || resp.Close {
		t.Fatalf("status %d close %v reply %q, want %q", resp.StatusCode, resp.Close, got, want)
	}
	before, peak := rss.Stop()
	growth := peak - before
	t.Logf("uploaded %d MiB; RSS before %.1f MiB, peak growth %.1f MiB", size>>20, bench.MiB(before), bench.MiB(growth))
	if !raceEnabled && growth > 64<<20 {
		t.Fatalf("RSS grew by %.1f MiB relaying an upload to a slow origin, want at most 64 MiB", bench.MiB(growth))
	}
	// The connection, now off netpoll, serves the next request.
	if _, err := io.WriteString(c, "GET /again HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	if want := fmt.Sprintf("0 %x", sha256.Sum256(nil)); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("second request: status %d reply %q", resp.StatusCode, got)
	}
}

// TestUploads sends chunked and Content-Length uploads of 50 KB to 3 MB,
// each on a new connection: without "Expect: 100-continue", so that the
// body streams in right behind the head (the connection stays on
// netpoll), and with it (a large body is read off netpoll). Every byte
// must reach nginx.
func TestUploads(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	tr := &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	body := bench.PatternBody(3 << 20)
	for _, expect := range []bool{false, true} {
		for i := range 20 {
			size := 50000 + i*150000
			req, err := http.NewRequest("POST", "http://"+px+"/echo", bytes.NewReader(body[:size]))
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				req.ContentLength = -1 // chunked
				req.Body = io.NopCloser(bytes.NewReader(body[:size]))
			}
			if expect {
				req.Header.Set("Expect", "100-continue")
			}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatalf("upload %d (expect %v): %v", i, expect, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(got) != strconv.Itoa(size)+"\n" {
				t.Fatalf("upload %d (expect %v) of %d bytes: status %d reply %q err %v", i, expect, size, resp.StatusCode, got, err)
			}
		}
	}
}

// TestTinyChunkUpload: an upload of 20,000 one-byte chunks, sent in one
// write, reaches the origin whole and in order, in a few chunks: the
// proxy forwards what one read of the body returns as one chunk, and a
// read returns the data of every chunk already buffered, not one chunk's
// (one upstream write per byte otherwise).
func TestTinyChunkUpload(t *testing.T) {
	bench.CheckLeaks(t)
	const n = 20000
	type upload struct {
		data   []byte
		chunks int
		err    error
	}
	got := make(chan upload, 1)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		var u upload
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				u.err = err
				break
			}
			size, err := strconv.ParseInt(strings.TrimRight(line, "\r\n"), 16, 64)
			if err != nil {
				u.err = err
				break
			}
			if size == 0 {
				_, u.err = br.ReadString('\n')
				break
			}
			u.chunks++
			data := make([]byte, size+2)
			if _, u.err = io.ReadFull(br, data); u.err != nil {
				break
			}
			u.data = append(u.data, data[:size]...)
		}
		got <- u
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_, _ = io.Copy(io.Discard, br)
	})
	px := startProxy(t, "http://"+origin.Addr())
	var want []byte
	var req strings.Builder
	req.WriteString("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
	for i := 0; i < n; i++ {
		b := byte('a' + i%26)
		want = append(want, b)
		req.WriteString("1\r\n" + string(b) + "\r\n")
	}
	req.WriteString("0\r\n\r\n")
	reply := string(rawExchange(t, px, req.String(), 10*time.Second))
	u := <-got
	if u.err != nil || !bytes.Equal(u.data, want) {
		t.Fatalf("origin read %d body bytes (equal %v), %v", len(u.data), bytes.Equal(u.data, want), u.err)
	}
	if !strings.HasPrefix(reply, "HTTP/1.1 200 ") {
		t.Fatalf("reply %q", reply)
	}
	if u.chunks > n/100 {
		t.Fatalf("%d one-byte chunks went upstream as %d chunks", n, u.chunks)
	}
	t.Logf("%d one-byte chunks went upstream as %d chunks", n, u.chunks)
}

// A client that sends its request and then shuts down its sending side
// (nc -N, or an HTTP/1.0 client signalling the end of its request) still
// gets the whole response; so does a malformed request sent that way.
func TestClientHalfClose(t *testing.T) {
	needTools(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	for _, tc := range []struct{ req, want string }{
		{"GET /small HTTP/1.0\r\nHost: a\r\n\r\n", "HTTP/1.1 200 "},
		{"GET /small HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 "},
		{"GET /small HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 "},
	} {
		c, err := net.Dial("tcp", px)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(c)
		c.Close()
		if err != nil || !strings.HasPrefix(string(all), tc.want) {
			t.Fatalf("%q then half-close: %v, got %.120q; want %q...", tc.req, err, all, tc.want)
		}
		if strings.HasPrefix(tc.want, "HTTP/1.1 200") {
			if !strings.HasSuffix(string(all), bench.SmallBody) {
				t.Fatalf("%q then half-close: body of %.200q", tc.req, all)
			}
		}
	}
}

// TestClientHalfClosePipelined: a client that pipelines requests and then
// shuts down its sending side (printf '...' | nc -N) gets every complete
// request answered, in order, then the close, as from nginx; an
// incomplete head at the end is dropped without an answer. Only the
// first used to be answered: the connection closed after it, and the
// requests behind it were lost without a word.
func TestClientHalfClosePipelined(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	reqs := "GET /small?1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"HEAD /small?2 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /small?3 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /small?4 HTTP/1.1\r\nHo"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, method := range []string{"GET", "HEAD", "GET"} {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := bench.SmallBody
		if method == "HEAD" {
			want = ""
		}
		if err != nil || resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("response %d: %d %q %v, want 200 %q", i+1, resp.StatusCode, body, err, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the three responses: %q %v, want the close", rest, err)
	}
	var uris []string
	for _, r := range ng.WaitRequests(3, 5*time.Second) {
		uris = append(uris, r.Method+" "+r.URI)
	}
	if got := strings.Join(uris, ", "); got != "GET /small?1, HEAD /small?2, GET /small?3" {
		t.Errorf("nginx logged %s", got)
	}
}

// TestAccessLogRejected: a request the proxy answers itself before any
// exchange (a head it cannot parse, a head that does not arrive in time,
// a transfer coding it does not support, a CONNECT to a port not allowed)
// has its access log line, as it
// has its count in the client metrics. A head that did not parse is
// logged without method and target ("-"): they are not known, and the
// raw line may carry credentials (userinfo in the target).
func TestAccessLogRejected(t *testing.T) {
	bench.CheckLeaks(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 2, Logger: logger},
		clientConfig{AccessLog: true, HeaderTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	for _, c := range []struct{ req, status, line string }{
		{"GET http://u:secret@127.0.0.1:1/ HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 ", "method=- target=- status=400 bytes=25 "},
		{"GET http://127.0.0.1:1/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 501 ",
			"method=GET target=http://127.0.0.1:1/a status=501 bytes=54 "},
		{"GET http://127.0.0.1:1/b HTTP/1.1\r\nHost: a\r\n", "HTTP/1.1 408 ", "method=- target=- status=408 bytes=39 "},
		// A CONNECT the proxy refuses: the bytes of its error body, as
		// counted in the metrics.
		{"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n", "HTTP/1.1 403 ",
			"method=CONNECT target=127.0.0.1:25 status=403 bytes=34 "},
	} {
		c0, err := net.Dial("tcp", px)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c0, c.req); err != nil {
			t.Fatal(err)
		}
		_ = c0.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, _ := io.ReadAll(c0)
		c0.Close()
		if !strings.HasPrefix(string(resp), c.status) {
			t.Fatalf("%q: got %q, want %q", c.req, resp, c.status)
		}
		want := "msg=access remote=" + c0.LocalAddr().String() + " " + c.line
		waitFor(t, "the access log line "+want, func() bool { return strings.Contains(logs.String(), want) })
	}
	if strings.Contains(logs.String(), "secret") {
		t.Fatalf("the access log shows a password:\n%s", logs.String())
	}
}

// TestShortSmallBodyNotForwarded: a request whose small body (one the
// proxy reads whole first, to be able to send it again) stalls, or ends
// early with the client's half-close, is answered by the proxy (408 after
// one idle timeout, 400) without anything going upstream: the body the
// request would be sent with never came.
func TestShortSmallBodyNotForwarded(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br)
	})
	px := startProxyClient(t, engine.Config{}, clientConfig{IdleTimeout: 300 * time.Millisecond}, "http://"+o.Addr())
	for _, tc := range []struct {
		name, method string
		halfClose    bool
		status, msg  string
	}{
		{"stalled-post", "POST", false, "408 ", "request body stalled: "},
		{"stalled-put", "PUT", false, "408 ", "request body stalled: "},
		{"half-closed-post", "POST", true, "400 ", "request body incomplete: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dialClient(t, px)
			if _, err := io.WriteString(c, tc.method+" /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
				t.Fatal(err)
			}
			if tc.halfClose {
				if err := c.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			all, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(all), "HTTP/1.1 "+tc.status) || !strings.Contains(string(all), tc.msg) {
				t.Fatalf("got:\n%s\nwant %s with %q", all, tc.status, tc.msg)
			}
			if n := o.Accepted(); n != 0 {
				t.Fatalf("the origin accepted %d connections for a request whose body never came, want 0", n)
			}
		})
	}
}

// TestTrickledSmallBodyKept: a small body (read whole before it goes)
// that comes in pieces, each well within the idle timeout but all of them
// over it, reaches nginx whole: the timeout bounds each wait for body
// bytes, not the whole body.
func TestTrickledSmallBodyKept(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyClient(t, engine.Config{}, clientConfig{IdleTimeout: time.Second}, "http://"+ng.Addr())
	c, br := dialClient(t, px)
	const pieces, piece = 8, "0123456789"
	if _, err := fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", pieces*len(piece)); err != nil {
		t.Fatal(err)
	}
	for range pieces {
		time.Sleep(250 * time.Millisecond)
		if _, err := io.WriteString(c, piece); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err != nil || string(got) != fmt.Sprintf("%d\n", pieces*len(piece)) {
		t.Fatalf("status %d body %q, %v; want nginx's 200 with the body's length", resp.StatusCode, got, err)
	}
}

// TestMalformedChunkedBodyNotForwarded: a chunked request body whose
// framing error came in with its head (a bad chunk size, extension or
// line end, a chunk longer than its size, a bad trailer) is answered 400
// naming the rule, with nothing sent to nginx, as nginx and Squid do:
// neither forwards a request whose body they have seen to be malformed.
// The request pipelined behind it is not served either: after a framing
// error, nothing on the connection can be framed.
func TestMalformedChunkedBodyNotForwarded(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	const next = "GET /small HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		body string
		rule *parser.Error
	}{
		{"5\r\nhello\r\nzz\r\n\r\n", parser.Rule(parser.ErrBadChunkSize)},
		{"5;\r\nhello\r\n0\r\n\r\n", parser.Rule(parser.ErrBadChunkExt)},
		{"5\nhello\n0\n\n", parser.Rule(parser.ErrBareLF)},
		{"5\r\nhelloXX\r\n0\r\n\r\n", parser.Rule(parser.ErrChunkNoCRLF)},
		{"10000000000000005\r\nhello\r\n0\r\n\r\n", parser.Rule(parser.ErrChunkSizeOverflow)},
		{"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n", parser.Rule(parser.ErrSpaceBeforeColon)},
	} {
		if tc.rule == nil {
			t.Fatal("no rule")
		}
		req := "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.body + next
		all := rawExchange(t, px, req, 20*time.Second) // the proxy closes the connection
		br := bufio.NewReader(bytes.NewReader(all))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.body, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if want := "malformed request body: " + tc.rule.Msg + "\n"; resp.StatusCode != 400 || string(body) != want || !resp.Close {
			t.Fatalf("%q: status %d close %v body %q, want 400 %q", tc.body, resp.StatusCode, resp.Close, body, want)
		}
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			t.Fatalf("%q: bytes after the 400: %q", tc.body, rest)
		}
	}
	out, _ := curl(t, "http://"+px+"/small")
	if out != bench.SmallBody {
		t.Fatalf("body %q", out)
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	if reqs := ng.Requests(); len(reqs) != 1 || reqs[0].URI != "/small" {
		t.Fatalf("nginx saw %+v", reqs)
	}
}
