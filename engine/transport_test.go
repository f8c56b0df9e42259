package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

func httpOrigin(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Len", r.Header.Get("Content-Length"))
			w.Write(b)
		case "/big":
			w.Header().Set("Content-Type", "application/octet-stream")
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for i := 0; i < 256; i++ { // 16 MiB, chunked
				w.Write(chunk)
			}
		default:
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			io.WriteString(w, "hello "+r.URL.RawQuery)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestTransportHTTPClient(t *testing.T) {
	checkLeaks(t)
	srv := httpOrigin(t)
	e := newEngine(t, Config{Shards: 2})
	c := &http.Client{Transport: e.Transport()}
	for i := 0; i < 3; i++ {
		resp, err := c.Get(srv.URL + "/x?q=1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello q=1" || len(resp.Header["X-Multi"]) != 2 {
			t.Fatalf("%d %q %v", resp.StatusCode, b, resp.Header)
		}
	}
	for _, body := range []io.Reader{strings.NewReader("payload"), io.MultiReader(strings.NewReader("pay"), strings.NewReader("load"))} {
		resp, err := c.Post(srv.URL+"/echo", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "payload" || resp.Header.Get("X-Method") != "POST" {
			t.Fatalf("%q %v", b, resp.Header)
		}
	}
	// A body read in full with a sha256 through the streaming path.
	resp, err := c.Get(srv.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	want := sha256.Sum256(bytes.Repeat([]byte("0123456789abcdef"), 4096*256))
	if err != nil || n != 16<<20 || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("big: %d bytes, %v", n, err)
	}
	u, _ := url.Parse(srv.URL)
	s := e.Stats()[u.Host]
	if s.Requests != 6 || s.Pool.Dialed != 1 || len(s.Errors) != 0 {
		t.Fatalf("stats %+v", s)
	}
	c.CloseIdleConnections()
}

// TestTransportResponseFields: the Transport fills an http.Response as
// net/http's own Transport does for the same replies: a chunked body's
// coding in TransferEncoding, not in Header; Close for a reply that ends
// its connection.
func TestTransportResponseFields(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		w.(http.Flusher).Flush() // no length: chunked
		io.WriteString(w, "body")
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, Config{Shards: 1})
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	for _, path := range []string{"/chunked", "/close"} {
		var got [2]*http.Response
		for i, rt := range []http.RoundTripper{e.Transport(), std} {
			resp, err := (&http.Client{Transport: rt}).Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "body" {
				t.Fatalf("%s: %q %v", path, b, err)
			}
			got[i] = resp
		}
		ours, theirs := got[0], got[1]
		if !slices.Equal(ours.TransferEncoding, theirs.TransferEncoding) || ours.Close != theirs.Close ||
			ours.ContentLength != theirs.ContentLength || ours.Header.Get("Transfer-Encoding") != "" {
			t.Errorf("%s: TransferEncoding %q, Close %v, ContentLength %d, Header %v; net/http: %q, %v, %d",
				path, ours.TransferEncoding, ours.Close, ours.ContentLength, ours.Header,
				theirs.TransferEncoding, theirs.Close, theirs.ContentLength)
		}
	}
}

func TestTransportBehindReverseProxy(t *testing.T) {
	checkLeaks(t)
	srv := httpOrigin(t)
	e := newEngine(t, Config{Shards: 2})
	target, _ := url.Parse(srv.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.Transport()
	front := httptest.NewServer(rp)
	defer front.Close()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, err := client.Post(front.URL+"/echo", "text/plain", strings.NewReader("via proxy"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "via proxy" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	}
	resp, err := client.Get(front.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 16<<20 {
		t.Fatalf("big via proxy: %d bytes", n)
	}
	if s := e.Stats()[target.Host]; s.Requests != 4 || s.ReuseRatio < 0.7 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDoSlowReaderDetaches streams a body larger than the high-water mark
// to a slow reader: the connection moves to blocking I/O and is counted.
func TestDoSlowReaderDetaches(t *testing.T) {
	checkLeaks(t)
	srv := httpOrigin(t)
	e := newEngine(t, Config{Shards: 1, BodyHighWater: 256 << 10})
	u, _ := url.Parse(srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := e.Do(ctx, &Request{Upstream: Upstream{Addr: u.Host}, Head: head(t, "GET /big HTTP/1.1\r\nHost: o\r\n\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var n int
	for {
		k, err := resp.Body.Read(buf)
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	resp.Body.Close()
	if n != 16<<20 {
		t.Fatalf("%d bytes", n)
	}
	if s := e.Stats()[u.Host]; s.Detached != 1 || s.Pool.Closed.Owner != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBodyCloseEarlyClosesConn(t *testing.T) {
	checkLeaks(t)
	srv := httpOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	u, _ := url.Parse(srv.URL)
	resp, err := e.Do(context.Background(), &Request{Upstream: Upstream{Addr: u.Host}, Head: head(t, "GET /big HTTP/1.1\r\nHost: o\r\n\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, resp.Body, 1000)
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats()[u.Host].Requests != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := e.Stats()[u.Host]; s.Pool.Closed.Owner != 1 || s.Pool.Idle != 0 || s.Canceled != 1 || len(s.Errors) != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestBodyCloseEarlyStalledOrigin: a body closed early while the origin
// sends nothing more closes the connection at once, as net/http does; the
// exchange does not wait out the read timeout on it. The caller gave up,
// so the request counts as canceled, not as an upstream error.
func TestBodyCloseEarlyStalledOrigin(t *testing.T) {
	checkLeaks(t)
	gone := make(chan error, 1)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := br.ReadByte()
		gone <- err
	})
	e := newEngine(t, Config{Shards: 1, ResponseHeaderTimeout: time.Minute})
	resp, err := e.Do(context.Background(), get(o.addr(), t))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "0123456789" {
		t.Fatalf("%q %v", b, err)
	}
	time.Sleep(50 * time.Millisecond) // the exchange waits for more body bytes
	resp.Body.Close()
	if err := <-gone; err != io.EOF {
		t.Fatalf("the origin's connection after the body was closed: %v, want EOF", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats()[o.addr()].Requests != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := e.Stats()[o.addr()]; s.Requests != 1 || s.Canceled != 1 || len(s.Errors) != 0 || s.Pool.Busy != 0 || s.Pool.Closed.Owner != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestBodyReadToLengthThenClosed: a caller that reads exactly
// Content-Length bytes and closes the body, without reading to EOF, as
// net/http's clients may, leaves the connection for reuse: no body
// error, one connection for all the requests.
func TestBodyReadToLengthThenClosed(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	const n = 50
	for i := 0; i < n; i++ {
		resp, err := e.Do(context.Background(), get(o.addr(), t))
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}
	if s := e.Stats()[o.addr()]; s.Requests != n || len(s.Errors) != 0 || s.Pool.Dialed != 1 || o.accepted() != 1 {
		t.Fatalf("stats %+v, accepted %d: want %d requests on one connection, no error", s, o.accepted(), n)
	}
}

// TestCloseWithUnreadBody: a caller that neither reads nor closes a body
// does not hold Close up, and nothing leaks.
func TestCloseWithUnreadBody(t *testing.T) {
	checkLeaks(t)
	srv := httpOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	u, _ := url.Parse(srv.URL)
	resp, err := e.Do(context.Background(), &Request{Upstream: Upstream{Addr: u.Host}, Head: head(t, "GET /big HTTP/1.1\r\nHost: o\r\n\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("body complete after Close")
	}
}

// TestTransportInterimTrace: the interim responses an origin sends before
// its final one reach the request's httptrace hooks, as net/http's
// Transport delivers them, so that httputil.ReverseProxy (which forwards
// them from Got1xxResponse) relays a 103 Early Hints to its client, and a
// client that sent "Expect: 100-continue" sees the 100.
func TestTransportInterimTrace(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	ng := bench.StartNginx(t, bench.NginxOptions{})
	e := newEngine(t, Config{Shards: 2})

	// Directly: an http.Client whose request carries a trace.
	type interim struct {
		code int
		link string
	}
	var got []interim
	var got100 int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { got100++ },
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, interim{code, h.Get("Link")})
			return nil
		},
	})
	c := &http.Client{Transport: e.Transport()}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+o.addr()+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := []interim{{103, "</style.css>; rel=preload"}}; resp.StatusCode != 200 || string(b) != "ok" || !slices.Equal(got, want) {
		t.Fatalf("%d %q, interim %v, want %v", resp.StatusCode, b, got, want)
	}

	// nginx answers "Expect: 100-continue" with a 100 before the body.
	got = nil
	req, _ = http.NewRequestWithContext(ctx, "POST", ng.URL("/echo"), strings.NewReader("hello"))
	req.Header.Set("Expect", "100-continue")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := []interim{{100, ""}}; string(b) != "5\n" || got100 != 1 || !slices.Equal(got, want) {
		t.Fatalf("%q, Got100Continue %d, interim %v, want %v", b, got100, got, want)
	}

	// Through httputil.ReverseProxy: its client gets the 103.
	target, _ := url.Parse("http://" + o.addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.Transport()
	front := httptest.NewServer(rp)
	defer front.Close()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	got = nil
	req, _ = http.NewRequestWithContext(ctx, "GET", front.URL+"/", nil)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := []interim{{103, "</style.css>; rel=preload"}}; string(b) != "ok" || !slices.Equal(got, want) {
		t.Fatalf("via ReverseProxy: %q, interim %v, want %v", b, got, want)
	}
}

// TestTransportNotModifiedLength: a 304 may carry the Content-Length of
// the representation it stands for (RFC 9110 §8.6), but no body follows.
// As net/http's Transport, the engine's reports ContentLength 0 for it, so
// a caller that trusts ContentLength (≥ 0: that many bytes may be read
// from Body) does not wait for 1000 bytes that never come; a HEAD still
// reports the announced length, and -1 when it announces none.
func TestTransportNotModifiedLength(t *testing.T) {
	checkLeaks(t)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch {
			case req.Method == http.MethodHead && req.URL.Path == "/unknown":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nETag: \"a\"\r\n\r\n")
			case req.Method == http.MethodHead:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			case req.URL.Path == "/cached":
				_, _ = io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 1000\r\n\r\n")
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	e := newEngine(t, Config{Shards: 2})
	for _, rt := range []struct {
		name string
		rt   http.RoundTripper
	}{{"engine", e.Transport()}, {"net/http", &http.Transport{}}} {
		c := &http.Client{Transport: rt.rt}
		for _, tc := range []struct {
			method, path string
			status       int
			length       int64
			body         string
		}{
			{"GET", "/cached", 304, 0, ""},
			{"HEAD", "/", 200, 1000, ""},
			{"HEAD", "/unknown", 200, -1, ""},
			{"GET", "/", 200, 2, "ok"},
		} {
			req, _ := http.NewRequest(tc.method, "http://"+origin.Addr()+tc.path, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %s %s: %v", rt.name, tc.method, tc.path, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status || resp.ContentLength != tc.length || string(b) != tc.body {
				t.Errorf("%s: %s %s: status %d, ContentLength %d, body %q, %v; want %d, %d, %q",
					rt.name, tc.method, tc.path, resp.StatusCode, resp.ContentLength, b, err, tc.status, tc.length, tc.body)
			}
		}
		c.CloseIdleConnections()
	}
}

// TestTransportCodingsOuterFirst: http.Response.TransferEncoding lists
// the codings from the outermost to the innermost, the reverse of the
// field's order on the wire ("gzip, chunked": gzip applied first, then
// chunked). net/http's own Transport refuses any coding but chunked, so
// only its documented order can be compared with.
func TestTransportCodingsOuterFirst(t *testing.T) {
	checkLeaks(t)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	c := &http.Client{Transport: e.Transport()}
	resp, err := c.Get("http://" + origin.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "ab" || !slices.Equal(resp.TransferEncoding, []string{"chunked", "gzip"}) {
		t.Fatalf("body %q, %v, TransferEncoding %q; want \"ab\" and [chunked gzip]", b, err, resp.TransferEncoding)
	}
}

// Status and User-Agent as net/http has them: a status line without a
// reason phrase gives Status "200", and a User-Agent set to "" (as
// httputil.ReverseProxy sets it for a client that sent none) sends none.
func TestTransportStatusAndEmptyUserAgent(t *testing.T) {
	checkLeaks(t)
	uas := make(chan []string, 4)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			var ua []string
			for _, l := range lines {
				if strings.HasPrefix(strings.ToLower(l), "user-agent:") {
					ua = append(ua, l)
				}
			}
			uas <- ua
			io.WriteString(c, "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	for _, rt := range []http.RoundTripper{e.Transport(), std} {
		req, _ := http.NewRequest("GET", "http://"+o.addr()+"/", nil)
		req.Header.Set("User-Agent", "")
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if ua := <-uas; resp.Status != "200" || len(ua) != 0 {
			t.Errorf("%T: Status %q, User-Agent lines %q; want \"200\" and none", rt, resp.Status, ua)
		}
	}
}

// TestTransportEmptyBodyContentLength: a POST, PUT or PATCH without a
// body goes out with "Content-Length: 0", as net/http's Transport sends
// it (RFC 9110 §8.6: a user agent SHOULD send it when the method defines
// a meaning for content; some origins answer 411 without it), also when
// httputil.ReverseProxy hands a client's empty POST on as a nil Body. A
// GET or DELETE without a body goes out without it, as with net/http.
func TestTransportEmptyBodyContentLength(t *testing.T) {
	checkLeaks(t)
	lengths := make(chan []string, 1)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			var cl []string
			for _, l := range lines {
				if strings.HasPrefix(strings.ToLower(l), "content-length:") || strings.HasPrefix(strings.ToLower(l), "transfer-encoding:") {
					cl = append(cl, l)
				}
			}
			lengths <- cl
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	target, _ := url.Parse("http://" + o.addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.Transport()
	front := httptest.NewServer(rp)
	defer front.Close()
	client := &http.Client{}
	defer client.CloseIdleConnections()

	for _, tc := range []struct {
		method string
		body   io.Reader
		want   []string
	}{
		{"POST", nil, []string{"Content-Length: 0"}},
		{"POST", http.NoBody, []string{"Content-Length: 0"}},
		{"PUT", http.NoBody, []string{"Content-Length: 0"}},
		{"PATCH", nil, []string{"Content-Length: 0"}},
		{"GET", nil, nil},
		{"DELETE", nil, nil},
	} {
		for _, rt := range []struct {
			name string
			rt   http.RoundTripper
		}{{"engine", e.Transport()}, {"net/http", std}} {
			req, _ := http.NewRequest(tc.method, "http://"+o.addr()+"/", tc.body)
			resp, err := rt.rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s %s: %v", rt.name, tc.method, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := <-lengths; !slices.Equal(got, tc.want) {
				t.Errorf("%s: %s without a body sent %q, want %q", rt.name, tc.method, got, tc.want)
			}
		}
	}
	// A client's empty POST through httputil.ReverseProxy.
	req, _ := http.NewRequest("POST", front.URL+"/", strings.NewReader(""))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got, want := <-lengths, []string{"Content-Length: 0"}; resp.StatusCode != 200 || !slices.Equal(got, want) {
		t.Errorf("via ReverseProxy: %d, the origin got %q, want %q", resp.StatusCode, got, want)
	}
}

// TestTransportBodyContextError: a response body read cut short by the
// end of the request's context returns the context's own error, as with
// net/http's Transport, not an error that wraps it: httputil.ReverseProxy
// compares the error with context.Canceled to tell a client that went
// away from a broken upstream, and logs "read error during body copy"
// for anything else. A body the origin truncates (a Content-Length it
// does not fill, a chunked body without its last chunk) fails with an
// error errors.Is matches with io.ErrUnexpectedEOF, as net/http's does.
func TestTransportBodyContextError(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		lines, err := readHead(br)
		if err != nil {
			return
		}
		switch strings.Fields(lines[0])[1] {
		case "/short":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			return
		case "/shortchunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789")
			return
		}
		// A body that stalls after its first bytes, until the client
		// goes.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br.ReadByte()
	})
	e := newEngine(t, Config{Shards: 1})
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	for _, rt := range []struct {
		name string
		rt   http.RoundTripper
	}{{"engine", e.Transport()}, {"net/http", std}} {
		for _, path := range []string{"/short", "/shortchunked"} {
			req, _ := http.NewRequest("GET", "http://"+o.addr()+path, nil)
			resp, err := rt.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "0123456789" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s %s: %q, %v; want the 10 bytes and io.ErrUnexpectedEOF", rt.name, path, b, err)
			}
		}
		for _, want := range []error{context.Canceled, context.DeadlineExceeded} {
			ctx, cancel := context.WithCancel(context.Background())
			if want == context.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+o.addr()+"/stall", nil)
			resp, err := rt.rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, b); err != nil {
				t.Fatal(err)
			}
			if want == context.Canceled {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if err != want {
				t.Errorf("%s: body read after the context ended: %T %v, want %v itself", rt.name, err, err, want)
			}
		}

		// Through httputil.ReverseProxy: a client that goes away mid-body
		// leaves nothing in its log.
		target, _ := url.Parse("http://" + o.addr())
		rp := httputil.NewSingleHostReverseProxy(target)
		rp.Transport = rt.rt
		rp.FlushInterval = -1
		var logged syncBuf
		rp.ErrorLog = log.New(&logged, "", 0)
		front := httptest.NewServer(rp)
		client := &http.Client{}
		resp, err := client.Get(front.URL + "/stall")
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 10)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // unread: the client's connection closes
		client.CloseIdleConnections()
		front.Close() // waits for the handler
		if s := logged.String(); s != "" {
			t.Errorf("%s: ReverseProxy logged %q for a client that went away", rt.name, s)
		}
	}
}

// syncBuf is a bytes.Buffer safe for a logger on another goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTransportNoHost: a URL without a host (http:///path, or a
// Director that set the scheme and forgot the host) is refused, as
// net/http refuses it, and the request body is closed: it is not sent to
// ":80", which is this machine's port 80.
func TestTransportNoHost(t *testing.T) {
	checkLeaks(t)
	e := newEngine(t, Config{Shards: 1})
	for _, u := range []string{"http:///small", "https:///small"} {
		body := &closeCounter{Reader: strings.NewReader("x")}
		req, _ := http.NewRequest("POST", u, body)
		req.Host = "example.com"
		resp, err := e.Transport().RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: %d, want an error", u, resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "no host") || body.closed != 1 {
			t.Errorf("%s: %v, body closed %d times; want a \"no host\" error and one close", u, err, body.closed)
		}
	}
	if s := e.Stats(); len(s) != 0 {
		t.Errorf("stats %+v: want no upstream tried", s)
	}
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// TestTransportTEWithoutTrailers: the Transport drops trailer fields, so
// it does not send "trailers" in TE, which promises the origin that they
// are kept (RFC 9110 §10.1.4): httputil.ReverseProxy sends "Te: trailers"
// for a client that offered it. Other members of TE go out as given.
func TestTransportTEWithoutTrailers(t *testing.T) {
	checkLeaks(t)
	tes := make(chan []string, 1)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			var te []string
			for _, l := range lines {
				if strings.HasPrefix(strings.ToLower(l), "te:") {
					te = append(te, l)
				}
			}
			tes <- te
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: 1\r\n\r\n")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	target, _ := url.Parse("http://" + o.addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.Transport()
	front := httptest.NewServer(rp)
	defer front.Close()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for _, tc := range []struct {
		url, te string
		want    []string
	}{
		{front.URL + "/", "trailers", nil},
		{"http://" + o.addr() + "/", "trailers", nil},
		{"http://" + o.addr() + "/", "gzip;q=0.5, Trailers", []string{"TE: gzip;q=0.5"}},
	} {
		req, _ := http.NewRequest("GET", tc.url, nil)
		req.Header.Set("TE", tc.te)
		var resp *http.Response
		var err error
		if strings.HasPrefix(tc.url, front.URL) {
			resp, err = client.Do(req)
		} else {
			resp, err = e.Transport().RoundTrip(req)
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := <-tes; string(b) != "ok" || !slices.Equal(got, tc.want) {
			t.Errorf("%s with TE %q: body %q, the origin got %q, want %q", tc.url, tc.te, b, got, tc.want)
		}
	}
}
