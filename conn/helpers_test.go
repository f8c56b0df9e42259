package conn

import (
	"bufio"
	"context"
	"hash/crc32"
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

// origin is an in-process upstream: serve runs per accepted connection.
type origin struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newOrigin(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.conns = append(o.conns, c)
			o.mu.Unlock()
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(o.close)
	return o
}

func (o *origin) addr() string { return o.ln.Addr().String() }

func (o *origin) close() {
	_ = o.ln.Close()
	o.mu.Lock()
	for _, c := range o.conns {
		_ = c.Close()
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// readHead reads one request head; it returns the head's lines.
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

func request(t testing.TB, raw string) *parser.Request {
	t.Helper()
	r := new(parser.Request)
	if _, err := r.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return r
}

// sink collects a response.
type sink struct {
	status int
	body   []byte
	sum    uint32
	n      int64
	keep   bool
	delay  time.Duration
}

func (s *sink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *sink) OnBody(p []byte) error {
	s.sum = crc32.Update(s.sum, crc32.IEEETable, p)
	s.n += int64(len(p))
	if s.keep {
		s.body = append(s.body, p...)
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	return nil
}

func dial(t *testing.T, addr string) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
