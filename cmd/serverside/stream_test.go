package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// TestFullDuplexSuccessKeepsBody: an origin that answers 200 at once and
// then reads the request body (a streaming echo, an upload that reports
// its progress: Go's http.ResponseController.EnableFullDuplex) still gets
// the whole body, and the client the whole response. Only an error
// response ends the body early (RFC 9112 §9.5); a success before the body
// is not the origin refusing it.
func TestFullDuplexSuccessKeepsBody(t *testing.T) {
	headOut := make(chan struct{}, 1)
	got := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("full duplex: %v", err)
		}
		w.WriteHeader(200)
		_ = rc.Flush()
		headOut <- struct{}{}
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				all.Write(buf[:n])
				_, _ = w.Write(buf[:n])
				_ = rc.Flush()
			}
			if err != nil {
				break
			}
		}
		got <- all.String()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	px := startProxyConfig(t, engine.Config{ResponseHeaderTimeout: 3 * time.Second}, "http://"+ln.Addr().String())
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-headOut
	// Let the origin's head reach the proxy before the body does.
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(c, "6\r\nhello \r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(c, "5\r\nworld\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello world" || err != nil {
		t.Fatalf("status %d body %q err %v", resp.StatusCode, body, err)
	}
	select {
	case s := <-got:
		if s != "hello world" {
			t.Fatalf("origin got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("origin never finished reading the body")
	}
}
