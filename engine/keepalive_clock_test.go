package engine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// slowSink holds each piece of body for hold before taking it, as a client
// that reads its response slowly holds the exchange.
type slowSink struct {
	hold   time.Duration
	status int
}

func (s *slowSink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *slowSink) OnBody([]byte) error {
	time.Sleep(s.hold)
	return nil
}
func (s *slowSink) OnDone(error) {}

// TestKeepAliveHintCountsFromResponseEnd: an origin's idle timer starts
// when it has sent its response (Apache's KeepAliveTimeout does), so the
// window a "Keep-Alive: timeout=N" hint leaves counts from when the
// response's last byte was read, not from when a slow sink let the
// connection go back to the pool. The fake origin announces timeout=1 and
// takes itself as closed exactly one second after it finished each
// response: a request that comes later on that connection crossed its
// close, and is dropped unanswered, as Apache's lingering close does. The
// sink holds the body 700 ms and the next request comes 400 ms after:
// 1.1 s after the origin's timer started, 0.4 s after the connection went
// back. Counted from the return, the half-second window was still open
// and the request met the close (a race); counted from the response's
// end, the connection has expired and the request goes on a new one.
func TestKeepAliveHintCountsFromResponseEnd(t *testing.T) {
	checkLeaks(t)
	var late atomic.Int32 // requests that came after their connection's deadline
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		var deadline time.Time // zero until the first response
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				late.Add(1)
				return // closed: the request is dropped unanswered
			}
			const body = "hello"
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=100\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
			deadline = time.Now().Add(time.Second)
		}
	})
	e := newEngine(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	slow := &slowSink{hold: 700 * time.Millisecond}
	if err := e.Exchange(ctx, get(o.addr(), t), slow); err != nil || slow.status != 200 {
		t.Fatalf("first request: status %d, %v", slow.status, err)
	}
	time.Sleep(400 * time.Millisecond)
	next := &slowSink{}
	if err := e.Exchange(ctx, get(o.addr(), t), next); err != nil || next.status != 200 {
		t.Fatalf("second request: status %d, %v", next.status, err)
	}

	s := e.Stats()[o.addr()]
	if n := late.Load(); n != 0 || s.RacesHit != 0 {
		t.Errorf("origin saw %d requests after its close, engine hit %d races; want none", n, s.RacesHit)
	}
	if s.Pool.Closed.HintExpired != 1 || s.Pool.Dialed != 2 || o.accepted() != 2 {
		t.Errorf("closed for the hint %d, dialed %d, origin accepted %d; want 1, 2, 2 (the second request on a new connection)",
			s.Pool.Closed.HintExpired, s.Pool.Dialed, o.accepted())
	}
}
