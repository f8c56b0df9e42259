package bench

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// WaitPeerFIN waits until the peer's FIN has reached the kernel's TCP
// socket bound to local (an IPv4 "host:port", the local end of a
// connection of the code under test), whether or not that code has
// looked yet: the socket is in CLOSE_WAIT, or already closed by the code
// (LAST_ACK, or gone). It fails tb after timeout. Linux only
// (/proc/net/tcp).
func WaitPeerFIN(tb testing.TB, local string, timeout time.Duration) {
	tb.Helper()
	ap, err := netip.ParseAddrPort(local)
	if err != nil || !ap.Addr().Is4() {
		tb.Fatalf("WaitPeerFIN: %q is not an IPv4 host:port", local)
	}
	a := ap.Addr().As4()
	// /proc/net/tcp writes the address as the 32-bit word in host order
	// (little-endian here), then the port, in hex.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	deadline := time.Now().Add(timeout)
	for {
		switch st := tcpState(tb, want); st {
		case "08", "09", "07", "": // CLOSE_WAIT, LAST_ACK, CLOSE, gone
			return
		default:
			if time.Now().After(deadline) {
				tb.Fatalf("WaitPeerFIN: %s in TCP state %s after %v, want the peer's FIN received", local, st, timeout)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// tcpState returns the state column of /proc/net/tcp for the socket whose
// local address column is local, or "" when there is none.
func tcpState(tb testing.TB, local string) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		tb.Fatalf("WaitPeerFIN: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && fs[1] == local {
			return fs[3]
		}
	}
	return ""
}
