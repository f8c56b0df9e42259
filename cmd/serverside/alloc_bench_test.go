package main

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// BenchmarkProxiedGET is a plain keep-alive GET through the reverse
// proxy to nginx, one at a time on one client connection: allocs/op is
// the proxy's per request (the client reads into one buffer and
// allocates nothing), with the access log on, as by default, but
// discarded.
func BenchmarkProxiedGET(b *testing.B) {
	if bench.NginxBinary() == "" {
		b.Skip("nginx not installed")
	}
	ng := bench.StartNginx(b, bench.NginxOptions{})
	px := startProxyClient(b, engine.Config{}, clientConfig{AccessLog: true}, "http://"+ng.Addr())
	c, err := net.Dial("tcp", px)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
	buf := make([]byte, 4096)
	end := []byte(bench.SmallBody)
	get := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], end) {
			m, err := c.Read(buf[n:])
			if err != nil || n+m == len(buf) {
				b.Fatalf("read: %v after %q", err, buf[:n+m])
			}
			n += m
		}
	}
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	for range 100 {
		get() // warm the pools
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		get()
	}
	b.StopTimer()
}
