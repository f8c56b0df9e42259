package main

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// TestDetachAfterClientReset: a client sends the head of a chunked
// upload, which takes its connection off netpoll, and resets the
// connection before the proxy has duplicated the socket. The duplicate
// then has no peer address (getpeername fails on a reset socket): the
// connection is dropped, with nothing sent to the origin, where the
// proxy used to go on with the request and panic on the missing address
// when it logged it. The proxy serves the next client as before.
func TestDetachAfterClientReset(t *testing.T) {
	bench.CheckLeaks(t)
	var got atomic.Int32
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if lines, err := bench.ReadHead(br); err == nil && len(lines) > 0 {
			got.Add(1)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		}
	})
	reset := make(chan struct{})
	var armed atomic.Bool
	armed.Store(true)
	// The request's bytes are in netpoll's buffer when the hook runs: the
	// client resets while it waits.
	hook := func(*clientConn) {
		if armed.CompareAndSwap(true, false) {
			select {
			case <-reset:
			case <-time.After(5 * time.Second):
				t.Error("the client did not reset")
			}
		}
	}
	_, px := startParkProxy(t, clientConfig{AccessLog: true, ParkAfter: -1, requestHook: hook}, nil, "http://"+o.Addr())

	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Let netpoll read the head, then reset.
	for deadline := time.Now().Add(5 * time.Second); armed.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request did not reach the proxy's handler")
		}
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
	close(reset)

	// The proxy is still up and serves the next request.
	status, body := rawGet(t, px, "GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if status != 200 || body != "ok" {
		t.Fatalf("next request: %d %q", status, body)
	}
	if n := got.Load(); n != 1 {
		t.Errorf("the origin got %d requests, want 1 (the next one only)", n)
	}
}
