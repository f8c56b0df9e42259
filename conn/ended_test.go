package conn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/parser"
)

// stampSink notes when each sink call begins, holds each call a while (a
// slow client), and tells the origin when the first piece of body came.
type stampSink struct {
	head   time.Time // when OnHead began
	last   time.Time // when the latest call began
	pieces int
	first  chan struct{}
}

func (s *stampSink) OnHead(*parser.Response) error {
	s.head = time.Now()
	s.last = s.head
	time.Sleep(20 * time.Millisecond)
	return nil
}

func (s *stampSink) OnBody([]byte) error {
	s.last = time.Now()
	if s.pieces++; s.pieces == 1 {
		s.first <- struct{}{}
	}
	time.Sleep(20 * time.Millisecond)
	return nil
}

// TestOutcomeEnded: Outcome.Ended, where the pool's idle clock starts, is
// when the response's last byte was found read, before the sink call that
// delivers it, whatever the sink then takes: for a response without body,
// one whose body came with its head, and bodies (Content-Length, chunked)
// whose last part comes after the first was delivered.
func TestOutcomeEnded(t *testing.T) {
	checkLeaks(t)
	var lastSent atomic.Int64 // UnixNano when the origin began to send the response's last part
	first := make(chan struct{}, 1)
	// The first two come whole in one write, so in one read: their end is
	// in hand before OnHead.
	parts := [][2]string{
		{"HTTP/1.1 204 No Content\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", ""},
		{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "world"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "5\r\nworld\r\n0\r\n\r\n"},
	}
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for _, p := range parts {
			if _, err := readHead(br); err != nil {
				return
			}
			lastSent.Store(time.Now().UnixNano())
			if _, err := c.Write([]byte(p[0])); err != nil || p[1] == "" {
				continue
			}
			<-first // the sink has the first piece: the rest is read later
			lastSent.Store(time.Now().UnixNano())
			if _, err := c.Write([]byte(p[1])); err != nil {
				return
			}
		}
		_, _ = readHead(br) // kept open until the client is done
	})
	c := dial(t, o.addr())
	for i, p := range parts {
		s := &stampSink{first: first}
		out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, "GET / HTTP/1.1\r\nHost: o\r\n\r\n")}, s)
		if err != nil || !c.Reusable() {
			t.Fatalf("response %d: %v, reusable %v", i, err, c.Reusable())
		}
		sent, by := time.Unix(0, lastSent.Load()), s.last
		if p[1] == "" {
			by = s.head
		}
		if out.Ended.Before(sent) || out.Ended.After(by) {
			t.Errorf("response %d (%q): ended %v, want between the origin's last write %v and the sink call that delivered it %v",
				i, p[0][:12], out.Ended.Format(time.StampMicro), sent.Format(time.StampMicro), by.Format(time.StampMicro))
		}
	}
}

// inHandSink holds its first body piece until the rest of the body is in
// netpoll's buffer, then notes when each later piece's call began.
type inHandSink struct {
	c         *Conn
	cl        int64 // the body's length
	delivered int64
	first     chan struct{}
	second    time.Time // when the second OnBody began
	calls     int
}

func (*inHandSink) OnHead(*parser.Response) error { return nil }

func (s *inHandSink) OnBody(b []byte) error {
	s.calls++
	switch s.calls {
	case 1:
		s.first <- struct{}{}
		// Called on the reading goroutine: the buffer's length is its own.
		for int64(s.c.nc.Reader().Len()) < s.cl-s.delivered {
			time.Sleep(time.Millisecond)
		}
	case 2:
		s.second = time.Now()
	}
	s.delivered += int64(len(b))
	time.Sleep(5 * time.Millisecond) // a slow client
	return nil
}

// TestOutcomeEndedWhenRestBuffered: a Content-Length body longer than a
// piece whose rest came into netpoll's buffer while its first piece was
// being delivered ended when the next look found it all in hand, not
// pieces later, when the sink reached its last byte.
func TestOutcomeEndedWhenRestBuffered(t *testing.T) {
	checkLeaks(t)
	const n = 3*maxPiece + 100
	first := make(chan struct{}, 1)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n0123456789", n); err != nil {
			return
		}
		<-first
		if _, err := c.Write(bytes.Repeat([]byte("x"), n-10)); err != nil {
			return
		}
		_, _ = readHead(br) // kept open until the client is done
	})
	c := dial(t, o.addr())
	s := &inHandSink{c: c, cl: n, first: first}
	out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, "GET / HTTP/1.1\r\nHost: o\r\n\r\n")}, s)
	if err != nil || !c.Reusable() || s.delivered != n {
		t.Fatalf("%v, reusable %v, %d bytes delivered", err, c.Reusable(), s.delivered)
	}
	if s.calls < 3 || out.Ended.After(s.second) {
		t.Fatalf("%d pieces; ended %v, want by the second piece's call %v, when the whole body was in hand",
			s.calls, out.Ended.Format(time.StampMicro), s.second.Format(time.StampMicro))
	}
}

// TestOutcomeEndedTLS: on a TLS connection (Go net reads), a response
// whose Content-Length body, empty or not, came with its head ended
// before OnHead, as on netpoll.
func TestOutcomeEndedTLS(t *testing.T) {
	checkLeaks(t)
	pki := bench.NewPKI(t, "origin.test")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	resps := []string{
		"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	}
	o := newOrigin(t, func(raw net.Conn, _ *bufio.Reader) {
		c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{pki.Server}})
		defer c.Close()
		br := bufio.NewReader(c)
		for _, r := range resps {
			if _, err := readHead(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, r); err != nil {
				return
			}
		}
		_, _ = readHead(br) // kept open until the client is done
	})
	raw, err := net.Dial("tcp", o.addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ClientTLS(context.Background(), o.addr(), raw, time.Second, &tls.Config{ServerName: "origin.test", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for i, r := range resps {
		s := &stampSink{first: make(chan struct{}, 1)}
		out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, "GET / HTTP/1.1\r\nHost: o\r\n\r\n")}, s)
		if err != nil || !c.Reusable() {
			t.Fatalf("response %d: %v, reusable %v", i, err, c.Reusable())
		}
		if out.Ended.IsZero() || out.Ended.After(s.head) {
			t.Errorf("response %d (%q): ended %v, want by OnHead %v", i, r[:12], out.Ended.Format(time.StampMicro), s.head.Format(time.StampMicro))
		}
	}
}
