package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/parser"
)

// detachAbove is how many request body bytes may still be to come, beyond
// what netpoll has buffered, before the connection leaves netpoll for the
// body (the engine's BodyHighWater for responses, on the client side).
const detachAbove = 1 << 20

// Client connections and large request bodies.
//
// netpoll reads every client socket into memory as fast as the client
// sends, whoever consumes it: a client uploading faster than the origin
// takes the body would have the proxy buffer all of it. So a request
// whose body may exceed detachAbove beyond what is buffered moves its
// connection off netpoll before the body is read: the handler calls
// Detach (which takes the fd out of netpoll's poller without closing it)
// and returns; netpoll then runs the close callbacks on the handler's
// goroutine, after the deregistration, and onDetached waits for the
// poller to be done with the fd (quiesce, park.go), takes what netpoll
// had buffered (the head, and any body bytes that came with it or during
// the hand-over) and wraps the fd in a Go net connection. A goroutine of
// its own serves the connection from then on, with blocking reads and
// writes: TCP flow control holds the client back while the origin is
// slow. Once idle for ParkAfter, the connection parks, and comes back to
// netpoll with its next request.

// needsDetach reports whether the request just parsed should be served
// off netpoll; buffered is how many bytes netpoll holds from the start of
// its head. A chunked body's length is unknown: it always detaches.
func (cc *clientConn) needsDetach(hl, buffered int) bool {
	if cc.detached.Load() {
		return false
	}
	switch cc.rs.req.Framing() {
	case parser.FramingChunked:
		return true
	case parser.FramingLength:
		return cc.rs.req.ContentLength()-int64(buffered-hl) > detachAbove
	}
	return false
}

// onDetached is the close callback of a connection that Detach took off
// netpoll. It runs on the goroutine of the connection's last OnRequest,
// after netpoll deregistered the fd and before it freed its buffers. fd
// is the connection's socket, closed here once duplicated into the Go net
// connection: c's own after a Detach, a duplicate of it when netpoll
// closes c's (onParked).
func (cc *clientConn) onDetached(c netpoll.Connection, fd int) {
	quiesce(c)
	r := c.Reader()
	var left []byte
	if n := r.Len(); n > 0 {
		b, err := r.Next(n)
		if err == nil {
			left = append(make([]byte, 0, max(n, 4096)), b...)
		}
	}
	nc, err := fileConn(fd)
	if err != nil {
		cc.p.log.Warn("detach client connection", "err", err)
		cc.dropTunnel()
		cc.unregister()
		return
	}
	if nc.RemoteAddr() == nil {
		// getpeername failed on the duplicate: the client reset the
		// connection during the hand-over. No answer can reach it, and
		// serving the request would send a part of it upstream (and
		// find no address to log).
		_ = nc.Close()
		cc.dropTunnel()
		cc.unregister()
		return
	}
	cc.c = nc
	cc.detached.Store(true)
	cc.closer.Store(closerOf{nc})
	if cc.tunnel != nil {
		go func() {
			defer cc.unregister()
			cc.runTunnel(left)
		}()
		return
	}
	cc.r = &connReader{c: nc, buf: left, w: len(left)}
	cc.w = &connWriter{c: nc}
	cc.watchDetached(nc)
	go cc.serveDetached()
}

// watchDetached has the parking lot report the client's FIN or reset on
// nc, the connection's socket off netpoll, so that a reset aborts the
// request being served as netpoll's OnDisconnect does (clientGone).
func (cc *clientConn) watchDetached(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { cc.p.lot.watch(cc, int(fd)) })
}

// fileConn turns a client socket off netpoll into a Go net connection (a
// duplicate) and closes fd.
func fileConn(fd int) (net.Conn, error) {
	if fd < 0 {
		return nil, errors.New("netpoll connection has no fd")
	}
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("file conn: %w", err)
	}
	return nc, nil
}

// serveDetached serves a detached connection's requests, from the one
// that detached it, on this goroutine, until the connection closes.
func (cc *clientConn) serveDetached() {
	parked := false
	nc := cc.c
	defer func() {
		if !parked {
			cc.p.lot.unwatch(cc)
			nc.Close()
			cc.unregister()
		}
	}()
	// The state is still busy from the OnRequest that detached.
	for first := true; ; first = false {
		if !first {
			// Between requests: wait for the next one's first byte.
			var ok bool
			if ok, parked = cc.waitDetached(); !ok {
				return
			}
			if !cc.state.CompareAndSwap(stIdle, stBusy) {
				return
			}
		}
		o := cc.serveOne()
		if o != served {
			cc.p.lot.unwatch(cc) // before lingerGo or the relay may close the fd
		}
		switch o {
		case served:
		case lingerIt:
			cc.state.Store(stClosing)
			lingerGo(cc.c)
			return
		case tunnelIt:
			cc.state.Store(stClosing)
			cc.runTunnel(cc.r.(*connReader).buffered())
			return
		default:
			cc.state.Store(stClosing)
			return
		}
		cc.idleSince.Store(time.Now().UnixNano())
		cc.state.Store(stIdle)
		if cc.p.closing.Load() {
			// Shutdown closed the idle connections when it began; this
			// one was busy then, and netpoll's Shutdown does not see it.
			return
		}
	}
}

// waitDetached waits between requests for the first byte of the next
// one, up to the idle timeout; ok reports that it came. A connection that
// stays idle for ParkAfter, with nothing buffered, parks instead (parked),
// to come back on netpoll.
func (cc *clientConn) waitDetached() (ok, parked bool) {
	idle, park := cc.p.cfg.IdleTimeout, cc.p.cfg.ParkAfter
	if park > 0 && park < idle && cc.r.Len() == 0 {
		_ = cc.c.SetReadDeadline(time.Now().Add(park))
		_, err := cc.r.Peek(1)
		if err == nil {
			return true, false
		}
		if !isTimeout(err) {
			return false, false
		}
		if cc.parkDetached() {
			return false, true
		}
		idle -= park
	}
	_ = cc.c.SetReadDeadline(time.Now().Add(idle))
	_, err := cc.r.Peek(1)
	return err == nil, false
}

// parkDetached moves an idle detached connection to the parking lot: its
// fd (a duplicate; the Go net connection is closed) waits there, and its
// next request brings it back to netpoll. False leaves the connection as
// it was, unless it was closed meanwhile (idle timeout, shutdown).
func (cc *clientConn) parkDetached() bool {
	if !cc.state.CompareAndSwap(stIdle, stParking) {
		return false
	}
	fd, err := dupFd(cc.c)
	if err != nil {
		cc.state.Store(stIdle)
		return false
	}
	if ta, ok := cc.c.RemoteAddr().(*net.TCPAddr); ok {
		cc.remote = ta.AddrPort()
	}
	cc.p.lot.unwatch(cc) // the duplicate keeps the socket: its entry would stay
	_ = cc.c.Close()
	cc.c, cc.r, cc.w = nil, nil, nil
	cc.detaching = false
	cc.detached.Store(false)
	cc.closer.Store(closerOf{parkedCloser{cc}})
	parked, moved := cc.p.lot.park(cc, fd)
	if !parked {
		syscall.Close(fd)
		cc.state.Store(stClosing)
		cc.unregister()
		return true
	}
	cc.parkedNow(moved)
	return true
}

// dupFd duplicates the fd of a Go net connection or listener
// (close-on-exec).
func dupFd(c any) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("no fd")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = dupCloexec(int(f))
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

// dupCloexec duplicates fd (close-on-exec).
func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// connReader gives a Go net connection the part of netpoll's Reader the
// client side uses. Peek's result is valid until the next Peek.
type connReader struct {
	c    net.Conn
	buf  []byte
	r, w int // buf[r:w] is unread
}

func (cr *connReader) Len() int { return cr.w - cr.r }

func (cr *connReader) Peek(n int) ([]byte, error) {
	for cr.w-cr.r < n {
		if cr.r > 0 {
			cr.w = copy(cr.buf, cr.buf[cr.r:cr.w])
			cr.r = 0
		}
		if n > len(cr.buf) {
			nb := make([]byte, max(n, 2*len(cr.buf), 32<<10))
			copy(nb, cr.buf[:cr.w])
			cr.buf = nb
		}
		m, err := cr.c.Read(cr.buf[cr.w:])
		cr.w += m
		if err != nil && cr.w-cr.r < n {
			return nil, err
		}
	}
	return cr.buf[cr.r : cr.r+n], nil
}

func (cr *connReader) Skip(n int) error {
	if n > cr.w-cr.r {
		return errors.New("skip beyond buffered bytes")
	}
	cr.r += n
	return nil
}

func (cr *connReader) Release() error {
	if cr.r == cr.w {
		cr.r, cr.w = 0, 0
	}
	return nil
}

// readInto reads straight into p once nothing is buffered: request body
// bytes then cross no buffer of ours.
func (cr *connReader) readInto(p []byte) (int, error) {
	return cr.c.Read(p)
}

// connWriter gives a Go net connection the part of netpoll's Writer the
// client side uses: it keeps references to the pieces written and sends
// them with one writev at Flush, under the write timeout.
type connWriter struct {
	c    net.Conn
	bufs net.Buffers
}

func (cw *connWriter) WriteBinary(b []byte) (int, error) {
	cw.bufs = append(cw.bufs, b)
	return len(b), nil
}

func (cw *connWriter) Flush() error {
	keep := cw.bufs[:0]
	_ = cw.c.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	_, err := cw.bufs.WriteTo(cw.c)
	clear(keep[:cap(keep)])
	cw.bufs = keep
	return err
}

// closerOf wraps what closes the connection, so that an atomic.Value
// holds one concrete type whichever the connection is.
type closerOf struct{ c io.Closer }

// lingerClose ends a netpoll connection whose response went out while its
// client may still be sending the request body: the sending side is shut
// (the client sees the response end), and the connection stays open,
// dropping what arrives (onRequest), until the client closes it or the
// sweeper does, lingerTime later.
func (cc *clientConn) lingerClose(c netpoll.Connection) {
	fc, ok := c.(interface{ Fd() int })
	if !ok || syscall.Shutdown(fc.Fd(), syscall.SHUT_WR) != nil {
		cc.state.Store(stClosing)
		_ = c.Close()
		return
	}
	dropInput(c)
	cc.idleSince.Store(time.Now().UnixNano())
	cc.state.Store(stLinger)
	if cc.p.closing.Load() {
		cc.closeIfIdle() // Shutdown's pass over idle connections may be over
	}
}

// lingerGo is lingerClose for a detached connection, served on its own
// goroutine: shut the sending side, read and drop what the client still
// sends, for lingerTime at most; the caller closes it.
func lingerGo(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		return
	}
	_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, tc)
}
