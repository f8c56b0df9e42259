package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRelayIdle reports a relay that saw no byte in either direction for
// its idle timeout.
var ErrRelayIdle = errors.New("conn: relay idle timeout")

// relayChunk bounds one io.CopyN of a relay, so progress is seen (and the
// idle clock reset) at least this often in a steady stream.
const relayChunk = 256 << 10

// RelayStats is what a relay moved.
type RelayStats struct {
	AToB, BToA int64 // bytes copied from a to b and from b to a
}

// Relay copies a→b and b→a until both directions have ended, then closes
// both connections; it owns them from the call on. When one direction
// reaches EOF while the other still flows, the end is passed on as a
// half-close (CloseWrite on the writing side, when it has one) and the
// other direction goes on. A read or write error in either direction,
// ctx's end, or idle (when > 0) without a byte in either direction closes
// both at once; the first such error is returned (ErrRelayIdle for the
// idle timeout), nil when both directions ended with EOF.
//
// A read or write error (a peer that reset its connection, say) closes
// both with a TCP reset (SO_LINGER 0 on the sockets, under TLS and
// tunnels), so that the other peer sees the stream aborted, as it would
// on a connection of its own to the first, and not an end it could take
// for the stream's whole (a body delimited by the close, RFC 9112 §8).
// ctx's end and the idle timeout close with a FIN, as does a connection
// the caller closed meanwhile.
//
// Between two *net.TCPConn the copies are io.Copy (io.CopyN) calls, which
// the kernel runs as splice(2) on Linux: the bytes never enter user
// space. A *TunnelConn is unwrapped to its connection, its buffered bytes
// sent first. The idle clock advances in steps of idle/2, so an idle
// relay ends between idle and 1.5×idle after its last byte. A nil a or b
// is ErrRelayNil, with the other closed.
func Relay(ctx context.Context, a, b net.Conn, idle time.Duration) (RelayStats, error) {
	if a == nil || b == nil {
		for _, c := range []net.Conn{a, b} {
			if c != nil {
				_ = c.Close()
			}
		}
		return RelayStats{}, ErrRelayNil
	}
	r := &relay{a: a, b: b, idle: idle}
	r.touch()
	stop := context.AfterFunc(ctx, func() { r.abort(ctx.Err()) })
	defer stop()
	if idle > 0 {
		r.tick = max(idle/2, time.Millisecond)
		// Assigned before it can fire: the watchdog reads r.watch.
		r.watch = time.AfterFunc(time.Hour, r.watchdog)
		r.watch.Reset(r.tick)
	}
	var st RelayStats
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st.AToB = r.pump(a, b) }()
	st.BToA = r.pump(b, a)
	wg.Wait()
	r.done.Store(true)
	if r.watch != nil {
		r.watch.Stop()
	}
	r.abort(nil) // both ended: close them
	r.mu.Lock()
	defer r.mu.Unlock()
	return st, r.err
}

type relay struct {
	a, b  net.Conn
	idle  time.Duration
	tick  time.Duration
	last  atomic.Int64 // unix nanoseconds of the last progress
	watch *time.Timer
	done  atomic.Bool

	mu     sync.Mutex
	err    error
	closed bool
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *relay) expired() bool {
	return r.idle > 0 && time.Since(time.Unix(0, r.last.Load())) >= r.idle
}

// watchdog ends a relay whose only live direction is stuck writing to a
// peer that does not read: no read deadline fires there.
func (r *relay) watchdog() {
	if r.done.Load() {
		return
	}
	if r.expired() {
		r.abort(ErrRelayIdle)
		return
	}
	r.watch.Reset(r.tick)
}

// abort records err (the first one wins) and closes both connections.
func (r *relay) abort(err error) {
	r.mu.Lock()
	if r.err == nil && err != nil && !r.closed {
		r.err = err
	}
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	_ = r.a.Close()
	_ = r.b.Close()
}

// pump copies src to dst until EOF or an error, and returns the count.
func (r *relay) pump(src, dst net.Conn) int64 {
	var total int64
	if t, ok := src.(*TunnelConn); ok {
		if pre := t.takeBuffered(); len(pre) > 0 {
			n, err := dst.Write(pre)
			total += int64(n)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					r.reset()
				}
				r.abort(fmt.Errorf("relay: write: %w", err))
				return total
			}
			r.touch()
		}
		src = t.Conn
	}
	w := dst
	if t, ok := dst.(*TunnelConn); ok {
		w = t.Conn // its ReadFrom splices
	}
	for {
		if r.idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(r.tick))
		}
		n, err := io.CopyN(w, src, relayChunk)
		total += n
		if n > 0 {
			r.touch()
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			if cw, ok := w.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return total
		case errors.Is(err, os.ErrDeadlineExceeded) && r.idle > 0:
			if !r.expired() {
				continue
			}
			r.abort(ErrRelayIdle)
			return total
		}
		if !errors.Is(err, net.ErrClosed) {
			r.reset()
		}
		r.abort(fmt.Errorf("relay: %w", err))
		return total
	}
}

// reset makes the closes of a relay not yet closed send TCP resets: one
// direction failed on a peer's error, which the other peer is to see as
// an abort, not as the end of the stream.
func (r *relay) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	lingerZero(r.a)
	lingerZero(r.b)
}

// lingerZero sets SO_LINGER 0 on the TCP socket under c (through tunnels
// and TLS), so that its close sends a reset.
func lingerZero(c net.Conn) {
	sock, _ := socketUnder(c)
	if l, ok := sock.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
}
