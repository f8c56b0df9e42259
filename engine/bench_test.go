package engine

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/serverside-go/serverside/engine/balance"
	"github.com/serverside-go/serverside/parser"
)

// parallelism × GOMAXPROCS requests are in flight at once.
const parallelism = 8

// benchOrigin answers every request with a 512-byte body, keep-alive.
func benchOrigin(b *testing.B) *origin {
	body := make([]byte, 512)
	resp := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 512\r\n\r\n"), body...)
	o := newOrigin(b, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
	return o
}

// BenchmarkDo measures one request through the engine: shard hop, exchange
// worker hop, netpoll I/O, parse, body pipe to the caller.
func BenchmarkDo(b *testing.B) {
	o := benchOrigin(b)
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	req := get(o.addr(), b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			r := *req
			resp, err := e.Do(ctx, &r)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}

// BenchmarkSend is the sink form, without the pipe to another goroutine.
func BenchmarkSend(b *testing.B) {
	o := benchOrigin(b)
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	req := get(o.addr(), b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		s := &chanSink{done: make(chan error, 1)}
		for pb.Next() {
			r := *req
			if err := e.Send(ctx, &r, s); err != nil {
				b.Error(err)
				return
			}
			if err := <-s.done; err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkExchange is the synchronous sink form: with an idle connection
// the exchange runs on the caller's goroutine, no shard or worker hop.
func BenchmarkExchange(b *testing.B) {
	o := benchOrigin(b)
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	req := get(o.addr(), b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		s := &discardSink{}
		for pb.Next() {
			r := *req
			if err := e.Exchange(ctx, &r, s); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkExchangeGroup is BenchmarkExchange through a peer group of
// three origins, for each balancer: the cost of the choice.
func BenchmarkExchangeGroup(b *testing.B) {
	var peers []Peer
	for i := 0; i < 3; i++ {
		peers = append(peers, Peer{Addr: benchOrigin(b).addr()})
	}
	for _, kind := range []balance.Kind{balance.RoundRobin, balance.LeastConn, balance.P2C, balance.Hash} {
		b.Run(string(kind), func(b *testing.B) {
			e, err := New(Config{Groups: map[string]GroupConfig{"g": {Balancer: kind, Peers: peers}}})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			req := &Request{Upstream: Upstream{Group: "g", HashKey: "client"}, Head: head(b, "GET /r HTTP/1.1\r\nHost: o\r\n\r\n")}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			b.RunParallel(func(pb *testing.PB) {
				s := &discardSink{}
				for pb.Next() {
					r := *req
					if err := e.Exchange(ctx, &r, s); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// discardSink drops the response.
type discardSink struct{}

func (discardSink) OnHead(*parser.Response) error { return nil }
func (discardSink) OnBody([]byte) error           { return nil }
func (discardSink) OnDone(error)                  {}

// BenchmarkNetHTTP is the same request through net/http's Transport, for
// reference.
func BenchmarkNetHTTP(b *testing.B) {
	o := benchOrigin(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := "http://" + o.addr() + "/r"
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
