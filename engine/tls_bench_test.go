package engine_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"testing"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// countSink counts body bytes and hands the outcome back.
type countSink struct {
	n    int64
	done chan error
}

func (s *countSink) OnHead(*parser.Response) error { return nil }
func (s *countSink) OnBody(p []byte) error         { s.n += int64(len(p)); return nil }
func (s *countSink) OnDone(err error)              { s.done <- err }

// BenchmarkUpstreamThroughput fetches nginx's /1m over one kept-alive
// connection, one request at a time: plain TCP (netpoll), TLS, and TLS
// inside a CONNECT tunnel through squid; and, for reference, net/http's
// client over TLS.
func BenchmarkUpstreamThroughput(b *testing.B) {
	pki := bench.NewPKI(b, "origin.test")
	ngx := bench.StartNginx(b, bench.NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	sq := bench.StartSquid(b, bench.SquidOptions{ConnectPorts: []int{bench.Port(b, ngx.TLSAddr())}})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	b.Run("tls-nethttp", func(b *testing.B) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pki.CAPEM)
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "origin.test", RootCAs: roots}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		b.SetBytes(bench.Size1M)
		for i := 0; i < b.N; i++ {
			resp, err := c.Get("https://" + ngx.TLSAddr() + "/1m")
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != bench.Size1M {
				b.Fatalf("%d bytes, %v", n, err)
			}
		}
	})
	for _, mode := range []string{"plain", "tls", "tls-via-squid"} {
		b.Run(mode, func(b *testing.B) {
			e, err := engine.New(engine.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			h := new(parser.Request)
			if _, err := h.Parse([]byte("GET /1m HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
				b.Fatal(err)
			}
			req := &engine.Request{Upstream: engine.Upstream{Addr: ngx.Addr()}, Head: h}
			switch mode {
			case "tls":
				req.Upstream = engine.Upstream{Addr: ngx.TLSAddr(), TLS: cfg}
			case "tls-via-squid":
				req.Upstream = engine.Upstream{Addr: ngx.TLSAddr(), TLS: cfg, Via: &engine.Parent{Addr: sq.Addr()}}
			}
			s := &countSink{done: make(chan error, 1)}
			b.SetBytes(bench.Size1M)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.n = 0
				if err := e.Exchange(context.Background(), req, s); err != nil {
					b.Fatal(err)
				}
				<-s.done
				if s.n != bench.Size1M {
					b.Fatalf("%d bytes", s.n)
				}
			}
		})
	}
}
