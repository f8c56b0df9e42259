package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/conn"
)

func TestConnCapWaitersShareOneConn(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2, MaxConnsPerUpstream: 1})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
					errs <- fmt.Errorf("%d %v", st, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := e.Stats()[o.addr()]
	if o.accepted() != 1 || s.Pool.Dialed != 1 || s.Requests != 40 {
		t.Fatalf("accepted %d stats %+v", o.accepted(), s)
	}
}

func TestPendingTimeoutAndCancel(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	defer close(release)
	e := newEngine(t, Config{Shards: 1, MaxConnsPerUpstream: 1, PendingTimeout: 100 * time.Millisecond})
	go do(t, e, get(o.addr(), t)) // holds the only connection
	time.Sleep(50 * time.Millisecond)

	_, _, err := do(t, e, get(o.addr(), t))
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhasePoolWait || !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("pending timeout: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := e.Do(ctx, get(o.addr(), t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancel while waiting: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	// The timeout is an error of the pool wait; the caller's own deadline
	// is counted apart, as canceled.
	for s := e.Stats()[o.addr()]; (s.Pool.Waiting != 0 || s.Canceled != 1) && time.Now().Before(deadline); s = e.Stats()[o.addr()] {
		time.Sleep(5 * time.Millisecond)
	}
	if s := e.Stats()[o.addr()]; s.Pool.Waiting != 0 || s.Errors["pool-wait"] != 1 || s.Canceled != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConcurrentRequests(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive("Keep-Alive: timeout=30\r\n"))
	e := newEngine(t, Config{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
					mu.Lock()
					failed = append(failed, fmt.Errorf("%d %v", st, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatal(failed[0])
	}
	s := e.Stats()[o.addr()]
	if s.Requests != 800 || int(s.Pool.Dialed) > 16 || s.ReuseRatio < 0.9 {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("800 requests over %d connections, reuse ratio %.3f", s.Pool.Dialed, s.ReuseRatio)
}
