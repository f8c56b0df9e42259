package engine

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/parser"
)

func TestMain(m *testing.M) {
	netpoll.Initialize()
	os.Exit(m.Run())
}

func checkLeaks(t *testing.T) { t.Helper(); bench.CheckLeaks(t) }

func fdCount(t *testing.T) int { return bench.FDCount(t) }

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// origin is an in-process upstream for fault injection: serve runs per
// accepted connection with the connection's index.
type origin struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newOrigin(t testing.TB, serve func(i int, c net.Conn, br *bufio.Reader)) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln}
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
	t.Cleanup(o.close)
	return o
}

func (o *origin) addr() string { return o.ln.Addr().String() }

func (o *origin) accepted() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.conns)
}

func (o *origin) close() {
	_ = o.ln.Close()
	o.mu.Lock()
	for _, c := range o.conns {
		_ = c.Close()
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// readHead reads one request head and returns its lines.
func readHead(br *bufio.Reader) ([]string, error) {
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

func head(t testing.TB, raw string) *parser.Request {
	t.Helper()
	r := new(parser.Request)
	if _, err := r.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return r
}

func get(addr string, t testing.TB) *Request {
	return &Request{Upstream: Upstream{Addr: addr}, Head: head(t, "GET /r HTTP/1.1\r\nHost: o\r\n\r\n")}
}

// do runs a request and reads the whole body.
func do(t *testing.T, e *Engine, req *Request) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.Do(ctx, req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.Status, string(b), err
}

// chanSink discards the body and reports the end on done.
type chanSink struct{ done chan error }

func (s *chanSink) OnHead(*parser.Response) error { return nil }
func (s *chanSink) OnBody([]byte) error           { return nil }
func (s *chanSink) OnDone(err error)              { s.done <- err }
