package conn

import (
	"bufio"
	"context"
	"hash/crc32"
	"net"
	"os"
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

// origin is bench's in-process upstream under the names these tests use.
type origin struct{ *bench.Origin }

func newOrigin(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *origin {
	t.Helper()
	return &origin{bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) { serve(c, br) })}
}

func (o *origin) addr() string { return o.Addr() }

func readHead(br *bufio.Reader) ([]string, error) { return bench.ReadHead(br) }

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
