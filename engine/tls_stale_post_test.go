package engine_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// TestTLSPeerClosedBeforePost: a TLS origin closes its connection (close_notify,
// FIN) right after its answer, without saying so, and the next request, a
// POST whose body cannot be sent again, comes at once. The pooled
// connection is known closed before the POST is taken from the pool: it
// must get a fresh connection, not be written to the dead one and fail.
func TestTLSPeerClosedBeforePost(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	closed := make(chan struct{}, 2)
	o := bench.NewOrigin(t, func(i int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		defer tc.Close()
		br := bufio.NewReader(tc)
		h, err := bench.ReadHead(br)
		if err != nil {
			return
		}
		if strings.HasPrefix(h[0], "POST") {
			if _, err := io.ReadFull(br, make([]byte, 4)); err != nil {
				return
			}
		}
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = tc.Close()
		closed <- struct{}{}
	})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i, raw := range []string{
		"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 4\r\n\r\n",
	} {
		h := new(parser.Request)
		if _, err := h.Parse([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		req := &engine.Request{Upstream: engine.Upstream{Addr: o.Addr(), TLS: cfg}, Head: h}
		if i == 1 {
			req.Body, req.ContentLength = strings.NewReader("data"), 4
		}
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %v", i, err)
		}
		select {
		case <-closed:
		case <-time.After(requestTimeout):
			t.Fatal("origin did not close")
		}
	}
}

// TestTLSTruncatedCloseDelimited: a TLS origin's body delimited by the
// close is complete only when the close is a close_notify alert (RFC 9112
// §9.8). Cut by a bare TCP close, it is an error (conn.ErrTLSTruncated),
// never a short body passed off as whole; with close_notify it is whole.
func TestTLSTruncatedCloseDelimited(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	o := bench.NewOrigin(t, func(i int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		if _, err := bench.ReadHead(bufio.NewReader(tc)); err != nil {
			_ = tc.Close()
			return
		}
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart")
		if i == 0 {
			_ = c.Close() // TCP close, no close_notify
			return
		}
		_ = tc.Close()
	})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	get := func() (*engine.Response, []byte, error) {
		h := new(parser.Request)
		if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		return fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: o.Addr(), TLS: cfg}, Head: h})
	}
	if _, body, err := get(); !errors.Is(err, conn.ErrTLSTruncated) {
		t.Fatalf("body %q, err %v: want conn.ErrTLSTruncated", body, err)
	}
	if resp, body, err := get(); err != nil || resp.Status != 200 || string(body) != "part" {
		t.Fatalf("with close_notify: %v, %q, %v; want 200 and the whole body", resp, body, err)
	}
}

// TestTLSParentTruncatedCloseDelimited: plain http through a CONNECT tunnel
// to a parent spoken to over TLS. A body delimited by the close that ends
// with a bare TCP close of the parent connection, without the parent's
// close_notify (Squid sends one when the target closes), is
// conn.ErrTLSTruncated; with close_notify it is whole. A fault-injection
// parent: a real one drops its connection without close_notify only when
// it dies.
func TestTLSParentTruncatedCloseDelimited(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "parent.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	o := bench.NewOrigin(t, func(i int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		br := bufio.NewReader(tc)
		if _, err := bench.ReadHead(br); err != nil { // the CONNECT
			_ = tc.Close()
			return
		}
		_, _ = io.WriteString(tc, "HTTP/1.1 200 Connection established\r\n\r\n")
		if _, err := bench.ReadHead(br); err != nil { // the GET, through the tunnel
			_ = tc.Close()
			return
		}
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart")
		if i == 0 {
			_ = c.Close() // TCP close, no close_notify
			return
		}
		_ = tc.Close()
	})
	e := startEngine(t, engine.Config{})
	parent := &engine.Parent{Addr: o.Addr(), TLS: &engine.TLS{RootCAs: pki.CAPEM}}
	get := func() (*engine.Response, []byte, error) {
		h := new(parser.Request)
		if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		return fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: "origin.test:80", Via: parent}, Head: h})
	}
	if _, body, err := get(); !errors.Is(err, conn.ErrTLSTruncated) {
		t.Fatalf("body %q, err %v: want conn.ErrTLSTruncated", body, err)
	}
	if resp, body, err := get(); err != nil || resp.Status != 200 || string(body) != "part" {
		t.Fatalf("with close_notify: %v, %q, %v; want 200 and the whole body", resp, body, err)
	}
}
