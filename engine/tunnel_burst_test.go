package engine_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// burstTunnels is more CONNECTs than the dial pool has workers (256).
const burstTunnels = 300

// TestTunnelBurstSlowParent opens more tunnels at once than the dial pool
// has workers, through a TLS parent whose handshake does not finish while
// they are opening: every CONNECT waits for its parent, as a request's dial
// does, and none is turned away with ErrOverloaded for want of a worker.
func TestTunnelBurstSlowParent(t *testing.T) {
	leakBaseline(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var held sync.WaitGroup
	conns := make(chan net.Conn, 2*burstTunnels)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns <- c
			held.Add(1)
			go func() { // never answers the ClientHello
				defer held.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		close(conns)
		for c := range conns {
			_ = c.Close()
		}
		held.Wait()
	})

	e := startEngine(t, engine.Config{TLSHandshakeTimeout: time.Minute, PendingTimeout: time.Minute})
	parent := &engine.Parent{Addr: ln.Addr().String(), TLS: &engine.TLS{InsecureSkipVerify: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, burstTunnels)
	for i := 0; i < burstTunnels; i++ {
		go func() {
			nc, _, err := e.Tunnel(ctx, engine.TunnelRequest{Target: "origin.test:443", Via: parent})
			if nc != nil {
				_ = nc.Close()
			}
			errs <- err
		}()
	}
	// Every CONNECT reaches the parent, unless one fails first.
	var early error
	for deadline := time.Now().Add(requestTimeout); accepted.Load() < burstTunnels && time.Now().Before(deadline); {
		select {
		case early = <-errs:
		case <-time.After(10 * time.Millisecond):
		}
		if early != nil {
			break
		}
	}
	cancel()
	n := 0
	if early != nil {
		n = 1
	}
	for ; n < burstTunnels; n++ {
		err := <-errs
		if early == nil && errors.Is(err, engine.ErrOverloaded) {
			early = err
		}
	}
	if early != nil {
		t.Fatalf("a CONNECT failed while the others waited for the parent: %v", early)
	}
	if got := accepted.Load(); got != burstTunnels {
		t.Fatalf("%d connections reached the parent, want %d", got, burstTunnels)
	}
}
