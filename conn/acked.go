package conn

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Whether the upstream can have received a request: TCP's view.
//
// A request that failed before any response byte may be sent again when
// the upstream cannot have acted on it (RFC 9110 §9.2.2: "some means to
// detect that the original request was never applied"). Written says that
// request bytes left for the socket, which is not that. In the stale
// keep-alive race the upstream closes an idle connection as the next
// request goes out: its FIN and the request cross, and the request
// reaches a socket that no longer exists, whose TCP answers with a reset.
// Linux shows both halves of that: the FIN carried the upstream's
// acknowledgement of everything it had received (tcp_info's
// tcpi_bytes_acked, cumulative from the SYN), which covers no byte of
// the request, and the reset that came after the FIN left EPIPE as the
// socket's error (a reset before any FIN leaves ECONNRESET). An upstream
// that had the request in its socket before it closed acknowledged it
// with its FIN; one that read it and then reset the connection without a
// FIN may not have sent its (delayed) acknowledgement, so a reset without
// a FIN never counts as proof. The FIN alone (CLOSE_WAIT) is no proof
// either: an upstream that only shut its sending side still reads, and
// takes in (and acknowledges, later) a request that came after its FIN.
// So a socket found in CLOSE_WAIT with nothing acknowledged is watched for
// a few round trips (resetWait): the reset, or an acknowledgement, comes
// within one once the request went out; without either, the request
// counts as delivered.
//
// Connections straight to the upstream over TCP are told apart, TLS
// included (the bytes counted are those on the wire: records, handshake);
// through a tunnel the upstream's TCP is not ours to ask, and a written
// request counts as delivered.

// ackUnknown marks a connection whose acknowledgements are not tracked.
const ackUnknown = -1

// trackAcks records the peer's acknowledged byte count right after the
// connect (1 on Linux: the SYN), the base that later counts compare with.
// A connection it cannot read it for stays untracked.
func (c *Conn) trackAcks(fd int) {
	c.ackBase = ackUnknown
	if n, ok := baseAcked(bytesAcked(fd)); ok {
		c.ackBase = n
	}
}

// baseAcked vets a count read as a base: a connected socket's counts the
// SYN, so 0 is a kernel without tcpi_bytes_acked (before Linux 4.1, which
// leaves the bytes past its tcp_info zero) or a stack that does not keep
// it, whose counts would all read "nothing acknowledged".
func baseAcked(n int64, ok bool) (int64, bool) {
	return n, ok && n > 0
}

// trackGoAcks is trackAcks for a Go net connection: tracked only when it
// is plain TCP (ClientTLS sets a TLS connection's base).
func (c *Conn) trackGoAcks(nc net.Conn) {
	c.ackBase = ackUnknown
	if n, ok := baseAcked(tcpAcked(nc)); ok {
		c.ackBase = n
	}
}

// tcpAcked reads tcpi_bytes_acked for nc when it is a TCP connection.
func tcpAcked(nc net.Conn) (n int64, ok bool) {
	tc, isTCP := nc.(*net.TCPConn)
	if !isTCP {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	if err := rc.Control(func(fd uintptr) { n, ok = bytesAcked(int(fd)) }); err != nil {
		return 0, false
	}
	return n, ok
}

// wireSent is the bytes the connection wrote to its socket: the request
// bytes, or for TLS the records that carried them and the handshake.
func (c *Conn) wireSent() int64 {
	if c.tlsRaw != nil {
		return c.tlsRaw.sent.Load()
	}
	return c.sent
}

// bytesAcked reads tcpi_bytes_acked for fd.
func bytesAcked(fd int) (int64, bool) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, false
	}
	return int64(ti.Bytes_acked), true
}

// delivered reports whether request bytes of the current exchange may
// have reached the upstream: some were written, and it cannot be shown
// that the upstream closed the connection before any of them reached it
// (neverReceived). It is called when the exchange fails, the socket still
// open.
func (c *Conn) delivered() bool {
	if !c.last.Written {
		return false
	}
	if c.last.Responded || c.ackBase == ackUnknown || c.pipelined() {
		// Pipelined heads are not counted in sent: take them as received.
		return true
	}
	var deadline time.Time
	for step := resetPollMin; ; step = min(2*step, resetPollMax) {
		v, rtt := ackMaybe, time.Duration(0)
		if !c.withFd(func(fd int) { v, rtt = c.neverReceived(fd) }) {
			return true
		}
		switch v {
		case ackNever:
			return false
		case ackMaybe:
			return true
		}
		// ackPending: the FIN and nothing acknowledged; the reset (or an
		// acknowledgement) is at most a round trip behind the request.
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(min(resetWaitMin+resetWaitRTTs*rtt, resetWaitMax))
		}
		if now.After(deadline) {
			return true
		}
		time.Sleep(step)
	}
}

// How long delivered watches a socket in CLOSE_WAIT for the reset: a few
// round trips (tcp_info's smoothed RTT) past a floor, under a ceiling,
// polling at steps that double. It delays only an exchange that failed.
const (
	resetWaitMin  = 20 * time.Millisecond
	resetWaitRTTs = 3
	resetWaitMax  = 500 * time.Millisecond
	resetPollMin  = 500 * time.Microsecond
	resetPollMax  = 10 * time.Millisecond
)

// Linux TCP states (tcp_info's tcpi_state).
const (
	tcpCloseWait = 8
)

// neverReceived's verdicts.
const (
	ackMaybe   = iota // the upstream may have received the request
	ackNever          // it cannot have: a reset after a FIN that acknowledged none of it
	ackPending        // its FIN acknowledged none of it, and no reset came yet
)

// neverReceived tells whether the upstream's FIN came in and acknowledged
// no byte of the current exchange, followed by a reset and none before it
// (see above); with the socket's smoothed round-trip time.
func (c *Conn) neverReceived(fd int) (verdict int, rtt time.Duration) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil || int64(ti.Bytes_acked) > c.ackBase+c.sentBefore {
		return ackMaybe, 0
	}
	rtt = time.Duration(ti.Rtt) * time.Microsecond
	switch ti.State {
	case tcpCloseWait: // the FIN, no reset yet
		return ackPending, rtt
	case tcpClose: // a reset: after the FIN if it left EPIPE
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && v == int(unix.EPIPE) {
			return ackNever, rtt
		}
	}
	return ackMaybe, rtt
}

// peerAcked reads the peer's acknowledged byte count on the connection's
// socket.
func (c *Conn) peerAcked() (n int64, ok bool) {
	_ = c.withFd(func(fd int) { n, ok = bytesAcked(fd) })
	return n, ok
}

// withFd runs f with the connection's socket while it is still the
// connection's; false when it is not (closed, or no socket to reach).
func (c *Conn) withFd(f func(fd int)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false // the fd may be another connection's by now
	}
	gc := c.gc
	if c.tlsRaw != nil {
		gc = c.tlsRaw.Conn // the socket under the TLS layer
	}
	switch {
	case gc != nil:
		sc, ok := gc.(syscall.Conn)
		if !ok {
			return false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		return rc.Control(func(fd uintptr) { f(int(fd)) }) == nil
	case c.detached.Load():
		if c.rawFD < 0 {
			return false
		}
		f(c.rawFD)
		return true
	default:
		d, ok := c.nc.(detacher)
		if !ok {
			return false
		}
		f(d.Fd())
		return true
	}
}
