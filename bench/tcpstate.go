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
// socket of the connection from local to remote (IPv4 "host:port" pairs:
// local is the end of the code under test), whether or not that code has
// looked yet: the socket is in CLOSE_WAIT, or past it (LAST_ACK, CLOSING,
// TIME_WAIT, or gone). It fails tb after timeout. Linux only
// (/proc/net/tcp).
func WaitPeerFIN(tb testing.TB, local, remote string, timeout time.Duration) {
	tb.Helper()
	l, r := procAddr(tb, local), procAddr(tb, remote)
	deadline := time.Now().Add(timeout)
	for {
		switch st := tcpState(tb, l, r); st {
		case "08", "09", "0B", "06", "07", "": // CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT, CLOSE, gone
			return
		default:
			if time.Now().After(deadline) {
				tb.Fatalf("WaitPeerFIN: %s→%s in TCP state %s after %v, want the peer's FIN received", local, remote, st, timeout)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// procAddr writes an IPv4 host:port as /proc/net/tcp does: the 32-bit
// address word in host order (little-endian here), then the port, in hex.
func procAddr(tb testing.TB, hostPort string) string {
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil || !ap.Addr().Is4() {
		tb.Fatalf("WaitPeerFIN: %q is not an IPv4 host:port", hostPort)
	}
	a := ap.Addr().As4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
}

// tcpState returns the state column of /proc/net/tcp for the socket from
// local to remote, or "" when there is none. (A local port alone is not
// enough: an earlier connection's socket in TIME_WAIT may hold it too.)
func tcpState(tb testing.TB, local, remote string) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		tb.Fatalf("WaitPeerFIN: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && fs[1] == local && fs[2] == remote {
			return fs[3]
		}
	}
	return ""
}
