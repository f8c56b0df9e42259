package main

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// An origin's 103 Early Hints and 102 Processing reach an HTTP/1.1 client
// before the final response, each flushed as it comes, without their
// hop-by-hop fields and with Via (RFC 9110 §15.2, §7.6); an HTTP/1.0
// client gets only the final response. A fake origin: nginx and Apache
// here send no 1xx over HTTP/1.1.
func TestInterimRelayed(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n")
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: x-hint\r\nX-Hint: 1\r\n\r\n")
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	out := string(rawExchange(t, px, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10*time.Second))
	want := "HTTP/1.1 102 Processing\r\nVia: 1.1 proxy.test (serverside)\r\n\r\n" +
		"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nVia: 1.1 proxy.test (serverside)\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nVia: 1.1 proxy.test (serverside)\r\nConnection: close\r\n\r\nok"
	if out != want {
		t.Fatalf("HTTP/1.1 client got %q, want %q", out, want)
	}
	out = string(rawExchange(t, px, "GET /x HTTP/1.0\r\nHost: x\r\n\r\n", 10*time.Second))
	want = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nVia: 1.1 proxy.test (serverside)\r\nConnection: close\r\n\r\nok"
	if out != want {
		t.Fatalf("HTTP/1.0 client got %q, want %q", out, want)
	}
}

// An origin's 100 Continue to a request that did not ask for one (no
// Expect) is an interim response like any other, which a proxy must
// forward (RFC 9110 §15.2) to an HTTP/1.1 client. To a request with
// Expect the proxy sends its own when it reads the body, so the origin's
// is not relayed too.
func TestUnaskedContinueRelayed(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	final := "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nVia: 1.1 proxy.test (serverside)\r\nConnection: close\r\n\r\nok"
	out := string(rawExchange(t, px, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10*time.Second))
	if want := "HTTP/1.1 100 Continue\r\nVia: 1.1 proxy.test (serverside)\r\n\r\n" + final; out != want {
		t.Fatalf("HTTP/1.1 client got %q, want %q", out, want)
	}
	out = string(rawExchange(t, px, "GET /x HTTP/1.0\r\nHost: x\r\n\r\n", 10*time.Second))
	if out != final {
		t.Fatalf("HTTP/1.0 client got %q, want %q", out, final)
	}
}

// An interim response carries no content, and no server may send it with
// Content-Length (RFC 9110 §8.6): an origin's 103 that has one reaches
// the client without it, as a 204 does (Test204ContentLengthDropped), so
// a client that took it for a length cannot read the final response as
// the 103's body. (Transfer-Encoding is hop-by-hop and never relayed.)
func TestInterimFramingDropped(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 5\r\n\r\n")
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	out := string(rawExchange(t, px, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10*time.Second))
	want := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nVia: 1.1 proxy.test (serverside)\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nVia: 1.1 proxy.test (serverside)\r\nConnection: close\r\n\r\nok"
	if out != want {
		t.Fatalf("client got %q, want %q", out, want)
	}
}
