package engine

import (
	"bufio"
	"context"
	"io"
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

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// origin is bench's in-process upstream under the names these tests use.
type origin struct{ *bench.Origin }

func newOrigin(t testing.TB, serve func(i int, c net.Conn, br *bufio.Reader)) *origin {
	t.Helper()
	return &origin{bench.NewOrigin(t, serve)}
}

func (o *origin) addr() string  { return o.Addr() }
func (o *origin) accepted() int { return o.Accepted() }
func (o *origin) close()        { o.Close() }

func readHead(br *bufio.Reader) ([]string, error) { return bench.ReadHead(br) }

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
