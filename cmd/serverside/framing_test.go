package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestAbsoluteFormTargets: absolute-form targets become valid origin-form
// ones (RFC 9112 §3.2): a target with a query but no path is sent with
// the path "/", the scheme is matched without regard to case (RFC 9110
// §4.2.3), and a reverse proxy refuses schemes other than http and https
// as the forward proxy does.
func TestAbsoluteFormTargets(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	rev := startProxy(t, "http://"+ng.Addr())
	fwd := startProxy(t)
	cases := []struct {
		px, req string
		status  int
		body    string // "" for any
	}{
		{rev, "GET http://" + ng.Addr() + "?x=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 404, ""},
		{fwd, "GET http://" + ng.Addr() + "?y=2 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 404, ""},
		{fwd, "GET HTTP://" + ng.Addr() + "/small?z=3 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 200, bench.SmallBody},
		{rev, "GET ftp://" + ng.Addr() + "/small HTTP/1.1\r\nHost: other\r\n\r\n", 400, "only http:// and https:// targets are supported\n"},
	}
	for _, tc := range cases {
		all := rawExchange(t, tc.px, tc.req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || tc.body != "" && string(body) != tc.body {
			t.Fatalf("%q: status %d body %q, want %d %q", tc.req, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	ng.WaitRequests(3, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	reqs := ng.Requests()
	want := map[string]bool{"/?x=1": true, "/?y=2": true, "/small?z=3": true}
	if len(reqs) != len(want) {
		t.Fatalf("nginx saw %+v", reqs)
	}
	for _, r := range reqs {
		if !want[r.URI] {
			t.Fatalf("nginx saw %+v", reqs)
		}
	}
}

// TestOptionsAbsoluteForm: "OPTIONS http://host:port HTTP/1.1" asks about
// the server, and is forwarded as "OPTIONS * HTTP/1.1" (RFC 9112 §3.2.4).
func TestOptionsAbsoluteForm(t *testing.T) {
	bench.CheckLeaks(t)
	lines := make(chan string, 1)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		lines <- line
		if _, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader(line), br))); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n")
	})
	px := startProxy(t)
	all := rawExchange(t, px, "OPTIONS http://"+origin.Addr()+" HTTP/1.1\r\nHost: "+origin.Addr()+"\r\nConnection: close\r\n\r\n", 20*time.Second)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("reply:\n%s", all)
	}
	if got := <-lines; got != "OPTIONS * HTTP/1.1\r\n" {
		t.Fatalf("origin got request line %q", got)
	}
}

// TestRequestTransferCodings: a request body with a transfer coding other
// than chunked is refused with 501 (RFC 9112 §6.1): the proxy could
// neither decode it nor declare it to the origin. Nothing reaches nginx.
func TestRequestTransferCodings(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("hello"))
	_ = zw.Close()
	for _, te := range []string{"gzip, chunked", "deflate,chunked", "gzip\r\nTransfer-Encoding: chunked"} {
		req := "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + te + "\r\n\r\n" +
			httpChunk(gz.Bytes()) + "0\r\n\r\n"
		all := rawExchange(t, px, req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", te, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 501 || string(body) != "transfer codings other than chunked are not supported\n" || !resp.Close {
			t.Fatalf("%q: status %d close %v body %q", te, resp.StatusCode, resp.Close, body)
		}
	}
	// Chunked alone, in any case, is relayed.
	all := rawExchange(t, px, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 20*time.Second)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || !strings.HasSuffix(string(all), "\r\n\r\n5\n") {
		t.Fatalf("chunked reply:\n%s", all)
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	if reqs := ng.Requests(); len(reqs) != 1 || reqs[0].URI != "/echo" || reqs[0].Status != 200 {
		t.Fatalf("nginx saw %+v", reqs)
	}
}

// httpChunk frames p as one chunk.
func httpChunk(p []byte) string {
	var b strings.Builder
	w := httputil.NewChunkedWriter(&b)
	_, _ = w.Write(p)
	return b.String()
}

// TestResponseTransferCodings: a response whose transfer codings include
// more than chunked reaches the client with those codings declared, so
// it can undo them: "gzip, chunked" stays as it is (the bytes are
// re-chunked, the connection kept), and "gzip" alone ends at the close
// (RFC 9112 §6.1, §6.3).
func TestResponseTransferCodings(t *testing.T) {
	bench.CheckLeaks(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("hello gzip"))
	_ = zw.Close()
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/chunked":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"+httpChunk(gz.Bytes())+"0\r\n\r\n")
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"+gz.String())
				return
			}
		}
	})
	px := startProxy(t, "http://"+origin.Addr())
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	// net/http does not take transfer codings other than chunked: read
	// the heads with textproto rules by hand.
	head := func() (string, map[string]string) {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				return line, fields
			}
			k, v, _ := strings.Cut(strings.TrimRight(l, "\r\n"), ":")
			fields[k] = strings.TrimSpace(v)
		}
	}
	gunzip := func(p []byte) string {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			t.Fatalf("%v: %q", err, p)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}

	line, f := head()
	if line != "HTTP/1.1 200 OK\r\n" || f["Transfer-Encoding"] != "gzip, chunked" || f["Connection"] != "" {
		t.Fatalf("first: %q %v", line, f)
	}
	data, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.Discard(2); err != nil { // the CRLF after the last chunk
		t.Fatal(err)
	}
	if got := gunzip(data); got != "hello gzip" {
		t.Fatalf("first body %q", got)
	}

	line, f = head()
	if line != "HTTP/1.1 200 OK\r\n" || f["Transfer-Encoding"] != "gzip" || f["Connection"] != "close" {
		t.Fatalf("second: %q %v", line, f)
	}
	data, err = io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if got := gunzip(data); got != "hello gzip" {
		t.Fatalf("second body %q", got)
	}
}

// TestViaReceivedProtocol: the Via entry the proxy adds names the version
// the message was received in (RFC 9110 §7.6.3): "1.0 NAME (serverside)"
// on the request of an HTTP/1.0 client and on the response of an
// HTTP/1.0 origin, "1.1 NAME (serverside)" otherwise.
func TestViaReceivedProtocol(t *testing.T) {
	bench.CheckLeaks(t)
	vias := make(chan string, 4)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			vias <- req.Header.Get("Via")
			if req.URL.Path == "/10" {
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	px := startProxy(t, "http://"+origin.Addr())
	cases := []struct{ req, reqVia, respVia string }{
		{"GET /11 HTTP/1.0\r\n\r\n", "1.0 proxy.test (serverside)", "1.1 proxy.test (serverside)"},
		{"GET /10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "1.1 proxy.test (serverside)", "1.0 proxy.test (serverside)"},
		{"GET /11 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "1.1 proxy.test (serverside)", "1.1 proxy.test (serverside)"},
	}
	for _, tc := range cases {
		all := rawExchange(t, px, tc.req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		if got := <-vias; got != tc.reqVia {
			t.Fatalf("%q: origin got Via %q, want %q", tc.req, got, tc.reqVia)
		}
		if got := resp.Header.Get("Via"); resp.StatusCode != 200 || got != tc.respVia {
			t.Fatalf("%q: status %d Via %q, want %q", tc.req, resp.StatusCode, got, tc.respVia)
		}
	}
}

// TestDateAddedWhenMissing: a response relayed without a Date (an
// HTTP/1.0 origin, a small embedded server, a parent's refusal of a
// CONNECT) gets one from the proxy, which has a clock (RFC 9110 §6.6.1);
// one that has a Date keeps it.
func TestDateAddedWhenMissing(t *testing.T) {
	bench.CheckLeaks(t)
	const originDate = "Sun, 06 Nov 1994 08:49:37 GMT"
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch {
			case req.Method == http.MethodConnect:
				// Playing a parent proxy that refuses the tunnel.
				_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
			case req.URL.Path == "/dated":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nDate: "+originDate+"\r\nContent-Length: 2\r\n\r\nok")
			case req.URL.Path == "/10":
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nok")
				return
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	rev := startProxy(t, "http://"+origin.Addr())
	fwd := startProxy(t)
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + origin.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	child := startProxyClient(t, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	cases := []struct{ px, req, date string }{
		{rev, "GET /11 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", ""},
		{rev, "GET /10 HTTP/1.0\r\n\r\n", ""},
		{rev, "HEAD /11 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", ""},
		{fwd, "GET http://" + origin.Addr() + "/11 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", ""},
		{rev, "GET /dated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", originDate},
		{child, "CONNECT " + origin.Addr() + " HTTP/1.1\r\nHost: " + origin.Addr() + "\r\nConnection: close\r\n\r\n", ""},
	}
	for _, tc := range cases {
		all := rawExchange(t, tc.px, tc.req, 20*time.Second)
		method := strings.Fields(tc.req)[0]
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		dates := resp.Header.Values("Date")
		if len(dates) != 1 {
			t.Fatalf("%q: Date fields %q, want one\n%s", tc.req, dates, all)
		}
		if tc.date != "" {
			if dates[0] != tc.date {
				t.Fatalf("%q: Date %q, want the origin's %q", tc.req, dates[0], tc.date)
			}
			continue
		}
		if _, err := http.ParseTime(dates[0]); err != nil {
			t.Fatalf("%q: Date %q: %v", tc.req, dates[0], err)
		}
	}
}

// TestHostPortScheme: the address dialled for an authority takes the
// scheme's default port when the port is absent or empty (RFC 3986
// §3.2.3: "http://host:/" is "http://host/").
func TestHostPortScheme(t *testing.T) {
	cases := []struct{ auth, scheme, want string }{
		{"example.com", "http", "example.com:80"},
		{"example.com:", "http", "example.com:80"},
		{"example.com:", "https", "example.com:443"},
		{"example.com", "https", "example.com:443"},
		{"example.com:8080", "https", "example.com:8080"},
		{"127.0.0.1:", "http", "127.0.0.1:80"},
		{"[::1]:", "https", "[::1]:443"},
		{"[::1]", "http", "[::1]:80"},
		{"[::1]:81", "http", "[::1]:81"},
	}
	for _, tc := range cases {
		if got := hostPortScheme(tc.auth, tc.scheme); got != tc.want {
			t.Errorf("hostPortScheme(%q, %q) = %q, want %q", tc.auth, tc.scheme, got, tc.want)
		}
	}
}

// TestParentHostFromTarget: a request forwarded to a parent proxy keeps
// its absolute-form target, and its Host is generated from the target's
// authority, not relayed as the client sent it (RFC 9112 §3.2.2): a
// differing Host is replaced, and an HTTP/1.0 request without one,
// which goes on as HTTP/1.1, gets one (§3.2: an HTTP/1.1 request without
// Host is refused). nginx plays the parent: it takes absolute-form
// requests and reports the Host field it received.
func TestParentHostFromTarget(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /host {
            default_type text/plain;
            return 200 "$http_host $request_uri\n";
        }`})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + ng.Addr()}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	px := startProxyConfig(t, cfg)
	cases := []struct{ req, body string }{
		{"GET http://target.test:8080/host?a=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
			"target.test:8080 /host?a=1\n"},
		{"GET http://target.test/host HTTP/1.0\r\n\r\n", "target.test /host\n"},
		{"GET http://target.test/host HTTP/1.1\r\nHost: target.test\r\nConnection: close\r\n\r\n",
			"target.test /host\n"},
	}
	for _, tc := range cases {
		all := rawExchange(t, px, tc.req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != tc.body {
			t.Fatalf("%q: status %d body %q, want 200 %q", tc.req, resp.StatusCode, body, tc.body)
		}
	}
}

// TestResponseTransferCodingsHTTP10: an HTTP/1.0 client cannot be sent
// Transfer-Encoding (RFC 9112 §6.1), and the proxy does not decode
// codings other than chunked, so a response whose body carries one
// (gzip, chunked, or gzip alone until the close) is a 502 for it rather
// than coded bytes passed off as the body. Chunked alone is de-chunked
// as before.
func TestResponseTransferCodingsHTTP10(t *testing.T) {
	bench.CheckLeaks(t)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/gzip-chunked":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nzzzz\r\n0\r\n\r\n")
		case "/gzip":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz")
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nokok\r\n0\r\n\r\n")
		}
	})
	px := startProxy(t, "http://"+origin.Addr())
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/gzip-chunked", 502, "upstream response has transfer codings (gzip, chunked) an HTTP/1.0 client cannot take\n"},
		{"/gzip", 502, "upstream response has transfer codings (gzip) an HTTP/1.0 client cannot take\n"},
		{"/chunked", 200, "okok"},
	}
	for _, tc := range cases {
		all := rawExchange(t, px, "GET "+tc.path+" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.path, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || string(body) != tc.body || !resp.Close || len(resp.TransferEncoding) != 0 {
			t.Fatalf("%s: status %d close %v codings %q body %q, want %d %q", tc.path, resp.StatusCode, resp.Close,
				resp.TransferEncoding, body, tc.status, tc.body)
		}
	}
}

// TestNonASCIITargetRefused: a request target with raw bytes beyond
// ASCII (UTF-8 sent unencoded by an old client) is not a URI (RFC 3986
// §2), and is answered 400 and the connection closed rather than passed on
// for the origin to guess at (RFC 9112 §3: no autocorrection). Its
// percent-encoded form goes through. nginx, Apache and Squid would take
// the raw bytes: the proxy does not, as it refuses a fragment.
func TestNonASCIITargetRefused(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	rev := startProxy(t, "http://"+ng.Addr())
	fwd := startProxy(t)
	for _, tc := range []struct{ px, req string }{
		{rev, "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{rev, "GET /caf\xe9 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{fwd, "GET http://" + ng.Addr() + "/caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{fwd, "GET http://" + ng.Addr() + "/?q=\xc3\xa9 HTTP/1.0\r\n\r\n"},
	} {
		all := rawExchange(t, tc.px, tc.req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || string(body) != "malformed request target\n" || !resp.Close {
			t.Fatalf("%q: status %d close %v body %q, want 400 and a close", tc.req, resp.StatusCode, resp.Close, body)
		}
	}
	all := rawExchange(t, rev, "GET /small?q=caf%C3%A9 HTTP/1.0\r\n\r\n", 20*time.Second)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || !strings.HasSuffix(string(all), "\r\n\r\n"+bench.SmallBody) {
		t.Fatalf("percent-encoded target:\n%s", all)
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	if reqs := ng.Requests(); len(reqs) != 1 || reqs[0].URI != "/small?q=caf%C3%A9" {
		t.Fatalf("nginx saw %+v", reqs)
	}
}

// TestHTTP10OriginPooling: an HTTP/1.0 origin's connection is kept for
// the next request only when its response said keep-alive and has a
// length (RFC 9112 §9.3); without keep-alive, or delimited by the close,
// the next request goes on a new connection, and never first on the old
// one (a retry after the stale race would hide that: the origin counts
// the requests each connection got). The client, HTTP/1.1, keeps its own
// connection throughout, and gets the close-delimited body chunked.
func TestHTTP10OriginPooling(t *testing.T) {
	bench.CheckLeaks(t)
	type got struct {
		conn int
		path string
	}
	seen := make(chan got, 16)
	origin := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			seen <- got{i, req.URL.Path}
			switch req.URL.Path {
			case "/ka":
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=30\r\nContent-Length: 2\r\n\r\nka")
			case "/plain":
				// No keep-alive: the proxy must not send another request
				// here, though the connection stays open for a while.
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nplain")
			case "/until-close":
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nuntil close")
				return
			}
		}
	})
	px := startProxy(t, "http://"+origin.Addr())
	c, br := dialClient(t, px)
	paths := []string{"/ka", "/ka", "/plain", "/plain", "/until-close", "/ka", "/ka"}
	want := map[string]string{"/ka": "ka", "/plain": "plain", "/until-close": "until close"}
	for _, p := range paths {
		if _, err := io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want[p] || resp.Close || resp.Header.Get("Via") != "1.0 proxy.test (serverside)" {
			t.Fatalf("%s: %d close %v %v %q", p, resp.StatusCode, resp.Close, resp.Header, body)
		}
		if chunked := len(resp.TransferEncoding) > 0; chunked != (p == "/until-close") {
			t.Fatalf("%s: transfer codings %q", p, resp.TransferEncoding)
		}
	}
	// The first /ka's connection is kept, and serves the second and the
	// first /plain, after which it is not; the second /plain and the
	// /until-close find none kept and get one of their own each; the
	// next /ka gets a new one, kept for the last.
	wantConn := []int{0, 0, 0, 1, 2, 3, 3}
	for i, p := range paths {
		g := <-seen
		if g.path != p || g.conn != wantConn[i] {
			t.Fatalf("request %d (%s) came on origin connection %d for %s, want %d", i, p, g.conn, g.path, wantConn[i])
		}
	}
}

// TestHTTP10WithoutHost: an HTTP/1.0 request may come without Host; it
// goes on as HTTP/1.1, which needs one (RFC 9112 §3.2; nginx refuses a
// request without it with 400), so the proxy names the upstream: the
// origin's address in reverse mode, the target's authority for an
// absolute-form target (through a parent: TestParentHostFromTarget).
func TestHTTP10WithoutHost(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /host {
            default_type text/plain;
            return 200 "$http_host $server_protocol\n";
        }`})
	rev := startProxy(t, "http://"+ng.Addr())
	fwd := startProxy(t)
	for _, tc := range []struct{ px, req, body string }{
		{rev, "GET /host HTTP/1.0\r\n\r\n", ng.Addr() + " HTTP/1.1\n"},
		{fwd, "GET http://" + ng.Addr() + "/host HTTP/1.0\r\n\r\n", ng.Addr() + " HTTP/1.1\n"},
	} {
		resp, body := readOne(t, rawExchange(t, tc.px, tc.req, 20*time.Second))
		if resp.StatusCode != 200 || body != tc.body {
			t.Fatalf("%q: %d %q, want 200 %q", tc.req, resp.StatusCode, body, tc.body)
		}
	}
}

// TestHeadKeepsTransferEncoding: a response to HEAD carries the fields a
// GET's would (RFC 9110 §9.3.2), Transfer-Encoding included, which says
// nothing of a body there is not (RFC 9112 §6.3 rule 1). An HTTP/1.1
// client is told it; an HTTP/1.0 one cannot be (RFC 9112 §6.1). Either way
// no body follows, and the connection serves the next request.
func TestHeadKeepsTransferEncoding(t *testing.T) {
	bench.CheckLeaks(t)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodHead {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	px := startProxy(t, "http://"+origin.Addr())
	for _, tc := range []struct{ version, te string }{{"HTTP/1.1", "chunked"}, {"HTTP/1.0", ""}} {
		all := rawExchange(t, px, "HEAD /h "+tc.version+"\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"+
			"GET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 20*time.Second)
		br := bufio.NewReader(bytes.NewReader(all))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.version, err, all)
		}
		if got := strings.Join(resp.TransferEncoding, ", "); resp.StatusCode != 200 || got != tc.te ||
			resp.Header.Get("Content-Length") != "" {
			t.Fatalf("%s: HEAD reply %d, Transfer-Encoding %q, want %q\n%s", tc.version, resp.StatusCode, got, tc.te, all)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: the GET after the HEAD: %v\n%s", tc.version, err, all)
		}
		if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: the GET after the HEAD: %d %q", tc.version, resp.StatusCode, body)
		}
	}
}
