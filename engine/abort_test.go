package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestAbortAwaitingHead: a request waiting for the head of an origin that
// stalls is ended by its Abort from another goroutine at once, not at the
// response-header timeout: the origin sees its connection closed, the
// request fails with ErrAborted, counted in CallerErrors and not sent
// again (a closed connection before any response byte would otherwise
// pass for the stale keep-alive race on a reused one, or for a peer that
// refuses on a new one). A later request under the same Abort fails at
// once, uncounted, with nothing dialed. On netpoll and on Go net.
func TestAbortAwaitingHead(t *testing.T) {
	for _, goNet := range []bool{false, true} {
		t.Run(fmt.Sprintf("GoNetIO=%v", goNet), func(t *testing.T) {
			gotHead := make(chan struct{}, 4)
			closed := make(chan error, 4)
			o := newOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				gotHead <- struct{}{}
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := br.ReadByte() // stalls: no response, until the proxy closes
				closed <- err
			})
			e := newEngine(t, Config{Shards: 1, GoNetIO: goNet, ResponseHeaderTimeout: time.Minute})
			req := get(o.addr(), t)
			req.Abort = new(Abort)
			res := make(chan error, 1)
			go func() { res <- e.Exchange(context.Background(), req, &chanSink{done: make(chan error, 1)}) }()
			select {
			case <-gotHead:
			case <-time.After(10 * time.Second):
				t.Fatal("the origin got no request")
			}
			start := time.Now()
			req.Abort.Abort()
			select {
			case err := <-closed:
				if !errors.Is(err, io.EOF) {
					t.Fatalf("origin's read: %v, want EOF (the engine's close)", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the origin's connection is still open 2s after the abort")
			}
			var err error
			select {
			case err = <-res:
			case <-time.After(2 * time.Second):
				t.Fatal("Exchange still running 2s after the abort")
			}
			if !errors.Is(err, ErrAborted) {
				t.Fatalf("Exchange: %v, want ErrAborted", err)
			}
			t.Logf("aborted in %v: %v", time.Since(start), err)
			if err := e.Exchange(context.Background(), req, &chanSink{done: make(chan error, 1)}); !errors.Is(err, ErrAborted) {
				t.Fatalf("a request under the aborted Abort: %v, want ErrAborted", err)
			}
			s := e.Stats()[o.addr()]
			if s.CallerErrors != 1 || len(s.Errors) != 0 || s.Retries != 0 || s.RacesHit != 0 || s.Pool.Idle != 0 {
				t.Errorf("stats: %d caller errors, errors %v, %d retries, %d races, %d idle; want 1 caller error and nothing else",
					s.CallerErrors, s.Errors, s.Retries, s.RacesHit, s.Pool.Idle)
			}
			if n := o.accepted(); n != 1 {
				t.Errorf("origin accepted %d connections, want 1", n)
			}
		})
	}
}
