package conn

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// stallInterimSink blocks in its first OnInterim for a while, noting the
// most netpoll held buffered meanwhile.
type stallInterimSink struct {
	sink
	c        *Conn
	stall    time.Duration
	maxBuf   int
	interims int
}

func (s *stallInterimSink) OnInterim(*parser.Response) error {
	if s.interims++; s.interims > 1 {
		return nil
	}
	for end := time.Now().Add(s.stall); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if !s.c.detached.Load() {
			s.maxBuf = max(s.maxBuf, s.c.nc.Reader().Len())
		}
	}
	return nil
}

// TestBlockedInterimSinkBounded: a sink blocked in OnInterim (a client
// that does not read the relayed 103) must not let netpoll take in the
// final response's body meanwhile, as it may not while OnHead or OnBody
// blocks (TestBlockedSinkBounded); the exchange then goes on over Go net,
// the interim responses that follow and the final head included, and
// loses no byte. With Expect: 100-continue the interim responses come
// while the body waits (here the final one comes first: the body is not
// sent).
func TestBlockedInterimSinkBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("128 MiB transfers")
	}
	for _, expect := range []bool{false, true} {
		t.Run(fmt.Sprintf("expect=%v", expect), func(t *testing.T) { testBlockedInterim(t, expect) })
	}
}

func testBlockedInterim(t *testing.T, expect bool) {
	checkLeaks(t)
	const size = 128 << 20
	sums := make(chan uint32, 1)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
		block := make([]byte, 1<<20)
		for i := range block {
			block[i] = byte(i*7 + i>>9)
		}
		var sum uint32
		fmt.Fprintf(c, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		for off := 0; off < size; off += len(block) {
			block[0] = byte(off >> 20)
			sum = crc32.Update(sum, crc32.IEEETable, block)
			if _, err := c.Write(block); err != nil {
				sums <- 0
				return
			}
		}
		sums <- sum
	})
	c := dial(t, o.addr())
	s := &stallInterimSink{c: c, stall: 1500 * time.Millisecond}
	ex := &Exchange{Head: request(t, getReq), Config: Config{BodyHighWater: 256 << 10}}
	if expect {
		ex.Head = request(t, "PUT /u HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
		ex.Body, ex.ContentLength, ex.ExpectContinueTimeout = strings.NewReader("data"), 4, 10*time.Second
	}
	out, err := c.RoundTrip(context.Background(), ex, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := <-sums; s.interims != 2 || s.status != 200 || s.n != size || s.sum != want {
		t.Fatalf("interims %d status %d body %d bytes sum %x, want 2, 200, %d bytes sum %x", s.interims, s.status, s.n, s.sum, size, want)
	}
	// Bounded as in TestBlockedSinkBounded: the high-water mark, what
	// arrives before the watchdog's first look, netpoll's node sizes.
	if !out.Detached || s.maxBuf > 48<<20 {
		t.Fatalf("detached %v; netpoll buffered %d MiB while the sink blocked in OnInterim (high-water mark 256 KiB)", out.Detached, s.maxBuf>>20)
	}
	if c.Reusable() {
		t.Fatal("a detached connection is reusable")
	}
}
