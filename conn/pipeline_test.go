package conn

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// stallHeadSink blocks in OnHead for a while, noting the most netpoll
// held buffered meanwhile.
type stallHeadSink struct {
	sink
	c      *Conn
	stall  time.Duration
	maxBuf int
}

func (s *stallHeadSink) OnHead(r *parser.Response) error {
	for end := time.Now().Add(s.stall); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if !s.c.detached.Load() {
			s.maxBuf = max(s.maxBuf, s.c.nc.Reader().Len())
		}
	}
	return s.sink.OnHead(r)
}

// TestPipelineBlockedSinkBounded: a small response, buffered whole, with
// a large one pipelined behind it: while the small one's sink blocks (a
// client that does not read), netpoll must not take in the large one
// meanwhile. Behind a response there is no protocol error on a pipelined
// connection, only the next response, which the watchdog bounds as
// anywhere else; the connection then leaves netpoll, and the request
// behind goes unanswered (to be sent again elsewhere).
func TestPipelineBlockedSinkBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfer")
	}
	checkLeaks(t)
	const size = 64 << 20
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for range 2 {
			if _, err := readHead(br); err != nil {
				return
			}
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmallHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size); err != nil {
			return
		}
		block := make([]byte, 1<<20)
		for off := 0; off < size; off += len(block) {
			if _, err := c.Write(block); err != nil {
				return
			}
		}
	})
	c := dial(t, o.addr())
	if !c.StartPipeline(2, nil, 0, time.Hour) {
		t.Fatal("StartPipeline refused a netpoll connection")
	}
	exs := []*Exchange{
		{Head: request(t, "GET /small HTTP/1.1\r\nHost: o\r\n\r\n"), Config: Config{BodyHighWater: 256 << 10}},
		{Head: request(t, "GET /large HTTP/1.1\r\nHost: o\r\n\r\n"), Config: Config{BodyHighWater: 256 << 10}},
	}
	var turns []*Turn
	for _, ex := range exs {
		turn, ok := c.PipeSend(ex)
		if !ok {
			t.Fatal("PipeSend refused")
		}
		turns = append(turns, turn)
	}
	c.PipeFlush()
	s := &stallHeadSink{c: c, stall: 1500 * time.Millisecond, sink: sink{keep: true}}
	if _, err := c.PipeReceive(exs[0], s, turns[0]); err != nil || string(s.body) != "small" {
		t.Fatalf("first response: %q, %v", s.body, err)
	}
	if c.PipeDone(turns[0]) {
		t.Fatal("the first turn was the last")
	}
	detached := c.Detached() // by the watchdog, during the first response
	// Bounded as in TestBlockedSinkBounded.
	if s.maxBuf > 48<<20 {
		t.Errorf("netpoll buffered %d MiB of the next response while the first one's sink blocked (high-water mark 256 KiB)", s.maxBuf>>20)
	}
	var s2 sink
	_, err := c.PipeReceive(exs[1], &s2, turns[1])
	if !c.PipeDone(turns[1]) {
		t.Fatal("the second turn was not the last")
	}
	c.EndPipeline()
	if detached && !errors.Is(err, ErrUnanswered) {
		t.Errorf("second response on a connection detached before it: %v, want ErrUnanswered", err)
	}
	if !detached && (err != nil || s2.n != size) {
		t.Errorf("second response: %d bytes, %v", s2.n, err)
	}
	if c.Reusable() {
		t.Error("a detached connection is reusable")
	}
}

// TestPipelinable: only GETs and HEADs as sent, without a body, that do
// not ask to close or to switch protocols, may be pipelined.
func TestPipelinable(t *testing.T) {
	for _, c := range []struct {
		name, head string
		body       string
		method     string // Edits.Method, when set
		close      bool   // Edits sets Connection: close
		want       bool
	}{
		{name: "GET", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: true},
		{name: "HEAD", head: "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", want: true},
		{name: "GET with an empty Content-Length", head: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", want: true},
		{name: "POST", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
		{name: "OPTIONS", head: "OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "PUT", head: "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", body: "x"},
		{name: "GET with a body", head: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", body: "x"},
		{name: "GET asking to close", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"},
		{name: "GET whose edits close", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", close: true},
		{name: "GET asking to upgrade", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "GET sent as POST", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", method: "POST"},
		{name: "POST sent as GET", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", method: "GET", want: true},
	} {
		h := new(parser.Request)
		if _, err := h.Parse([]byte(c.head)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ex := &Exchange{Head: h}
		if c.body != "" {
			ex.Body, ex.ContentLength = strings.NewReader(c.body), int64(len(c.body))
		}
		if c.method != "" || c.close {
			ex.Edits = new(parser.Edits)
			if c.method != "" {
				ex.Edits.Method = []byte(c.method)
			}
			if c.close {
				ex.Edits.Set("Connection", []byte("close"))
			}
		}
		if got := Pipelinable(ex); got != c.want {
			t.Errorf("%s: Pipelinable %v, want %v", c.name, got, c.want)
		}
	}
}
