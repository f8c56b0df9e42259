package engine_test

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// TestHTTP2OnlyOrigin: nginx listening with HTTP/2 only (h2c with prior
// knowledge) answers an HTTP/1.1 request with its SETTINGS frame. The
// request fails at once as ErrNotHTTP1, naming HTTP/2, not as a head cut
// short by the close or a header timeout.
func TestHTTP2OnlyOrigin(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{HTTP2: true})
	e := startEngine(t, engine.Config{})
	_, _, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
	checkNotHTTP1(t, err)
}

// TestTLSHTTP2OnlyOrigin: an https origin that speaks only HTTP/2 but lets
// a client that offers http/1.1 through ALPN finish the handshake (as Go's
// server does), then sends its SETTINGS frame and waits for the HTTP/2
// preface. The request fails as soon as the frame arrives, rather than at
// the response-header timeout.
func TestTLSHTTP2OnlyOrigin(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(requestTimeout))
		// An empty SETTINGS frame (RFC 9113 §6.5), then wait.
		if _, err := c.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	}()
	e := startEngine(t, engine.Config{ResponseHeaderTimeout: requestTimeout})
	req := &engine.Request{Upstream: engine.Upstream{Addr: ln.Addr().String(), TLS: &engine.TLS{RootCAs: pki.CAPEM}},
		Head: new(parser.Request)}
	if _, err := req.Head.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_, _, err = fetch(e, req)
	checkNotHTTP1(t, err)
}

func checkNotHTTP1(t *testing.T, err error) {
	t.Helper()
	ce := conn.AsError(err)
	if !errors.Is(err, conn.ErrNotHTTP1) || ce == nil || ce.Phase != conn.PhaseProtocol || !strings.Contains(err.Error(), "HTTP/2") {
		t.Fatalf("err %v, want a PhaseProtocol error matching conn.ErrNotHTTP1 that names HTTP/2", err)
	}
}
