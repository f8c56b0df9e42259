package bench

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// Origin is an in-process upstream on 127.0.0.1 for fault injection a real
// server cannot do (resets mid-body, malformed replies, stalls): serve runs
// on its own goroutine for each accepted connection, numbered from 0, and
// the connection is closed when serve returns. tb's cleanup closes the
// listener and every connection and waits for the serve goroutines.
type Origin struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

// NewOrigin starts an Origin.
func NewOrigin(tb testing.TB, serve func(i int, c net.Conn, br *bufio.Reader)) *Origin {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o := &Origin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.conns = append(o.conns, c)
			o.mu.Unlock()
			o.wg.Add(1)
			go func(i int) {
				defer o.wg.Done()
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			}(i)
		}
	}()
	tb.Cleanup(o.Close)
	return o
}

// Addr is the origin's host:port.
func (o *Origin) Addr() string { return o.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (o *Origin) Accepted() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.conns)
}

// Close stops the origin: the listener, every connection, then waits for
// the serve goroutines. It may be called more than once.
func (o *Origin) Close() {
	_ = o.ln.Close()
	o.mu.Lock()
	for _, c := range o.conns {
		_ = c.Close()
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// ReadHead reads one request head from br and returns its lines without
// their line ends.
func ReadHead(br *bufio.Reader) ([]string, error) {
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			return lines, nil
		}
		lines = append(lines, l)
	}
}
