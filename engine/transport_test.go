package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
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
	if s := e.Stats()[u.Host]; s.Pool.Closed.Owner != 1 || s.Pool.Idle != 0 || s.Errors["body"] != 1 {
		t.Fatalf("stats %+v", s)
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
