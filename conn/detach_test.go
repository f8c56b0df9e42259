package conn

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"time"

	"github.com/serverside-go/serverside/parser"
)

// bigOrigin answers every request with size bytes of a position-dependent
// pattern, as fast as the socket takes them, and reports the checksum.
func bigOrigin(t *testing.T, size int64, sums chan<- uint32) *origin {
	return framedOrigin(t, "length", size, sums)
}

// framedOrigin serves one response of size pattern bytes framed as framing
// says ("length", "chunked" in 1 MiB chunks, or "close": delimited by the
// close) and sends the CRC-32 of the body on sums.
func framedOrigin(t *testing.T, framing string, size int64, sums chan<- uint32) *origin {
	return newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		block := make([]byte, 1<<20)
		for i := range block {
			block[i] = byte(i*7 + i>>9)
		}
		switch framing {
		case "length":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		case "chunked":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		default:
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
		}
		var sum uint32
		for off := int64(0); off < size; off += int64(len(block)) {
			binary.BigEndian.PutUint64(block, uint64(off))
			b := block[:min(int64(len(block)), size-off)]
			sum = crc32.Update(sum, crc32.IEEETable, b)
			if framing == "chunked" {
				fmt.Fprintf(c, "%x\r\n", len(b))
			}
			if _, err := c.Write(b); err != nil {
				sums <- 0
				return
			}
			if framing == "chunked" {
				_, _ = c.Write([]byte("\r\n"))
			}
		}
		if framing == "chunked" {
			_, _ = c.Write([]byte("0\r\n\r\n"))
		}
		sums <- sum
		if framing == "close" {
			_ = c.Close()
		}
	})
}

func TestDetachBoundsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB transfer")
	}
	checkLeaks(t)
	const size = 256 << 20
	sums := make(chan uint32, 1)
	o := bigOrigin(t, size, sums)
	c := dial(t, o.addr())

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	s := &sink{delay: 100 * time.Microsecond}
	out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	want := <-sums
	growth := int64(peak.Load()) - int64(base)
	t.Logf("heap in-use growth %.1f MiB, detached %v, recovered %d bytes", float64(growth)/(1<<20), out.Detached, out.Recovered)
	if s.n != size || s.sum != want {
		t.Fatalf("got %d bytes sum %x, want %d sum %x", s.n, s.sum, size, want)
	}
	if !out.Detached || c.Reusable() {
		t.Fatalf("detached %v reusable %v", out.Detached, c.Reusable())
	}
	if growth > 64<<20 {
		t.Fatalf("heap in-use grew by %d MiB", growth>>20)
	}
}

// TestDetachRecoversWindow holds the detach back after the slice, so that
// the poller reads more into netpoll's buffer in between; those bytes must
// arrive, in order. The body is chunked: one of known length leaves the
// poller before OnHead (stopPollerForLength), so nothing comes in between.
func TestDetachRecoversWindow(t *testing.T) {
	checkLeaks(t)
	const size = 48 << 20
	sums := make(chan uint32, 1)
	o := framedOrigin(t, "chunked", size, sums)
	c := dial(t, o.addr())
	// Wait, slice taken, until the poller has read more: the window
	// must not be empty (a fixed sleep was, when the origin was slow to
	// start its body).
	testHookBeforeDetach = func() {
		for deadline := time.Now().Add(5 * time.Second); c.nc.Reader().Len() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer func() { testHookBeforeDetach = nil }()
	s := &sink{delay: 2 * time.Millisecond}
	ex := &Exchange{Head: request(t, getReq), Config: Config{BodyHighWater: 256 << 10}}
	out, err := c.RoundTrip(context.Background(), ex, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := <-sums; s.n != size || s.sum != want {
		t.Fatalf("got %d bytes sum %x, want %d sum %x", s.n, s.sum, size, want)
	}
	if !out.Detached || out.Recovered == 0 {
		t.Fatalf("detached %v recovered %d", out.Detached, out.Recovered)
	}
	t.Logf("recovered %d bytes read by the poller between slice and detach", out.Recovered)
}

// stallSink blocks for a while inside its first OnHead or OnBody, then
// drains.
type stallSink struct {
	sink
	stall time.Duration
	head  bool // stall in OnHead instead of the first OnBody
	once  bool
}

func (s *stallSink) OnHead(r *parser.Response) error {
	if s.head {
		time.Sleep(s.stall)
	}
	return s.sink.OnHead(r)
}

func (s *stallSink) OnBody(p []byte) error {
	if !s.once && !s.head {
		s.once = true
		time.Sleep(s.stall)
	}
	return s.sink.OnBody(p)
}

// TestBlockedSinkBounded: a sink that blocks inside one call (OnHead, or
// its first OnBody) must not let netpoll take in the rest of a large body
// meanwhile, whatever the framing: a body of known length leaves netpoll's
// poller before OnHead (stopPollerForLength), and the sink watchdog takes
// the connection off the poller while a call blocks.
func TestBlockedSinkBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfers")
	}
	for _, framing := range []string{"length", "chunked", "close"} {
		for _, inHead := range []bool{false, true} {
			name := framing + "/body"
			if inHead {
				name = framing + "/head"
			}
			t.Run(name, func(t *testing.T) { testBlockedSink(t, framing, inHead) })
		}
	}
}

func testBlockedSink(t *testing.T, framing string, inHead bool) {
	checkLeaks(t)
	const size = 64 << 20
	sums := make(chan uint32, 1)
	o := framedOrigin(t, framing, size, sums)
	c := dial(t, o.addr())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	s := &stallSink{stall: time.Second, head: inHead}
	var mid runtime.MemStats
	timer := time.AfterFunc(800*time.Millisecond, func() { runtime.ReadMemStats(&mid) })
	ex := &Exchange{Head: request(t, getReq), Config: Config{BodyHighWater: 256 << 10}}
	out, err := c.RoundTrip(context.Background(), ex, s)
	timer.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if want := <-sums; s.n != size || s.sum != want {
		t.Fatalf("got %d bytes sum %x, want %d sum %x", s.n, s.sum, size, want)
	}
	growth := int64(mid.HeapInuse) - int64(base)
	t.Logf("heap in-use growth while the sink was blocked: %.1f MiB (detached %v)", float64(growth)/(1<<20), out.Detached)
	// Bounded, not proportional to the body: the high-water mark, what
	// arrives before the watchdog's first look (1 ms, later under load),
	// and netpoll's buffer nodes, which grow to 8 MiB each. Unbounded, it
	// is the whole body and more (72 MiB for a stalled OnHead).
	if !out.Detached || growth > 48<<20 {
		t.Fatalf("detached %v, heap grew %d MiB while the sink blocked", out.Detached, growth>>20)
	}
	if c.Reusable() {
		t.Fatal("a detached connection is reusable")
	}
}
