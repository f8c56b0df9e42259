package conn

import (
	"context"
	"net"
	"testing"
)

// plainConn hides *net.TCPConn's ReadFrom and WriteTo, so copies go
// through user space: the baseline splice(2) is measured against.
type plainConn struct{ net.Conn }

// BenchmarkRelayThroughput moves 64 MiB per op from a server to a client
// over loopback: directly, through Relay (splice), and through Relay with
// splice defeated (user-space copies).
func BenchmarkRelayThroughput(b *testing.B) {
	const size = 64 << 20
	for _, mode := range []string{"direct", "relay-splice", "relay-userspace"} {
		b.Run(mode, func(b *testing.B) {
			var client, server net.Conn
			var done chan error
			switch mode {
			case "direct":
				client, server = tcpPair(b)
			default:
				c, ra := tcpPair(b)
				rb, s := tcpPair(b)
				client, server = c, s
				var x, y net.Conn = ra, rb
				if mode == "relay-userspace" {
					x, y = plainConn{ra}, plainConn{rb}
				}
				done = make(chan error, 1)
				go func() { _, err := Relay(context.Background(), x, y, 0); done <- err }()
			}
			buf := make([]byte, 256<<10)
			rbuf := make([]byte, 256<<10)
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				go func() {
					for left := size; left > 0; left -= len(buf) {
						if _, err := server.Write(buf[:min(left, len(buf))]); err != nil {
							return
						}
					}
				}()
				for left := int64(size); left > 0; {
					n, err := client.Read(rbuf[:min(left, int64(len(rbuf)))])
					left -= int64(n)
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			_ = client.Close()
			_ = server.Close()
			if done != nil {
				<-done
			}
		})
	}
}
