package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// idleDialers bounds how many connections the idle-memory measurement
// opens at once.
const idleDialers = 32

// idleSettle is how long the connections stay idle before the "after"
// figure: long enough for what a proxy does with connections that stay
// idle (serverside parks them after a second, -client-park-after) to have
// happened, as in a proxy whose clients keep connections open between
// page views.
const idleSettle = 3 * time.Second

// idleMemory starts a fresh proxy, opens n keep-alive client connections
// to it, each after one GET /small, and returns the growth of the proxy's
// resident memory (VmRSS summed over its processes) per connection, in
// KiB. "Before" is taken after the proxy has served its readiness
// request, so what is counted is what an extra idle connection costs.
func (e *env) idleMemory(ctx context.Context, o *origin, k proxyKind, n int) (float64, error) {
	p, addr, err := e.startProxy(k, o, false)
	if err != nil {
		return 0, err
	}
	defer e.procs.stop(p)
	// Let the start-up settle before the baseline.
	time.Sleep(300 * time.Millisecond)
	tree := processTree(p.PID())
	before, err := treeRSS(tree)
	if err != nil {
		return 0, err
	}

	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range idleDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openIdle(ctx, addr)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				conns[i] = c // each goroutine writes its own index
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	time.Sleep(idleSettle)
	if err := p.alive(); err != nil {
		return 0, err
	}
	after, err := treeRSS(tree)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// openIdle dials addr and completes one GET /small on the connection,
// leaving it open and idle.
func openIdle(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := fetch(c, bufio.NewReader(c), "/small", "", smallBody); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
