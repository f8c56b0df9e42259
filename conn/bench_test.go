package conn

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/serverside-go/serverside/parser"
)

type discard struct{}

func (discard) OnHead(*parser.Response) error { return nil }
func (discard) OnBody([]byte) error           { return nil }

// BenchmarkRoundTrip is one exchange on a kept-alive connection, on the
// calling goroutine: the floor under the engine's per-request cost (the
// engine adds the shard and worker hops). 8 × GOMAXPROCS connections run
// at once; the origin answers with 512 bytes.
func BenchmarkRoundTrip(b *testing.B) {
	resp := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 512\r\n\r\n"), make([]byte, 512)...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := readHead(br); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	var head parser.Request
	if _, err := head.Parse([]byte(getReq)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		c, err := Dial(context.Background(), ln.Addr().String(), time.Second)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		ctx := context.Background()
		for pb.Next() {
			ex := Exchange{Head: &head}
			if _, err := c.RoundTrip(ctx, &ex, discard{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
