package conn

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// TestProbeSeesCloseInKernel: Probe reads the kernel's view of a netpoll
// connection: once the peer's FIN is in the socket (bench.WaitPeerFIN),
// Probe reports the connection dead, whether or not the poller has
// handled the close; a connection whose peer keeps it open probes alive.
func TestProbeSeesCloseInKernel(t *testing.T) {
	checkLeaks(t)
	for _, peerCloses := range []bool{false, true} {
		ends := make(chan [2]string, 1) // the connection's: ours, the origin's
		o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			ends <- [2]string{c.RemoteAddr().String(), c.LocalAddr().String()}
			if peerCloses {
				_ = c.Close()
				return
			}
			_, _ = readHead(br) // open until the test's end closes it
		})
		c := dial(t, o.addr())
		if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{}); err != nil {
			t.Fatal(err)
		}
		e := <-ends
		if peerCloses {
			bench.WaitPeerFIN(t, e[0], e[1], 5*time.Second)
		}
		if got := c.Probe(); got == peerCloses {
			t.Errorf("peer closes %v: Probe %v", peerCloses, got)
		}
	}
}
