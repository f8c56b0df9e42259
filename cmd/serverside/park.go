package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// Parking idle client connections.
//
// netpoll keeps about 4 KiB for every connection registered with it (its
// connection and operator, an input and an output buffer, an iovec
// barrier) however long the connection stays idle. A keep-alive client
// connection on which no request started for parkAfter leaves netpoll:
// the sweeper closes netpoll's connection, and a duplicate of its fd
// waits in the parking lot, an epoll set of the proxy's own, until the
// client sends again or goes; then it costs a 40-byte record (parkRec),
// or its clientConn if it authenticated.
//
// The lot is also the listener netpoll serves. Its fd is the epoll set's,
// which holds the listening socket besides the parked connections, so
// netpoll's poller wakes for either, and Accept returns a new connection
// or a parked one with bytes to read, which netpoll takes back as if just
// accepted (onPrepare finds its clientConn, or its record, in the lot).
// Parking costs no goroutine or thread of its own, and no system call on
// a request's way.
//
// The hand-over to the lot is safe whatever the client does meanwhile:
// netpoll's close takes the fd out of its epoll set first, and quiesce then
// waits for netpoll's poller to be done with any event it had already
// taken for the fd, so that whatever the poller read is in the input
// buffer. What is there then (a request that came in during the
// hand-over) is served off netpoll, as a detached connection is.

// parkLot is the epoll set of parked client connections, and the
// listener netpoll accepts from. Its fields are guarded by mu, which
// every transition out of stParked holds.
//
// Most parked connections keep no clientConn: what coming back needs
// (the pin key, which also names the shard, the idle time, the client's
// address) is a parkRec in recs, a slice indexed by fd (fds are small
// and dense), and a new clientConn is made when the lot gives the
// connection back. A connection that authenticated keeps its clientConn
// (parked, back): the pin registry and the engine's pinned session refer
// to it.
type parkLot struct {
	epfd, lnfd int
	addr       net.Addr
	log        *slog.Logger
	parkedN    atomic.Int64 // connections waiting in the set, for the metrics
	// recN counts the parkRecs in use (parked, or given back until
	// onPrepare has made their clientConn): connections no shard holds.
	recN atomic.Int64
	// dropped is called (outside mu) for each record closed by the lot:
	// the connection is gone.
	dropped func()

	mu     sync.Mutex
	closed bool
	parked map[int]*clientConn // fd → connection waiting in the set, kept whole
	back   map[int]*clientConn // fd → connection Accept gave back, until onPrepare
	// fresh maps the fd of a connection just accepted, held back from
	// netpoll in a race build (holdFresh), to its client's address.
	fresh map[int]net.Addr
	// watched maps the fd of each detached connection (watchDetached)
	// to it: the set reports the client's FIN or reset on it, so that a
	// reset aborts the request being served (clientGone), as netpoll's
	// OnDisconnect does on netpoll.
	watched map[int]*clientConn
	recs    []parkRec // fd → connection waiting in the set, or given back, as a record
	events  [1]syscall.EpollEvent
	// pause is the wait before the listening socket, taken out of the
	// set after accept4 failed (out of fds), goes back in (resume); 0
	// after an accept4 that worked.
	pause  time.Duration
	resume *time.Timer
	// acceptHook is clientConfig.acceptHook.
	acceptHook func()
}

// parkRec is a parked connection that kept no clientConn. It holds no
// pointer: the GC does not scan the lot's records.
type parkRec struct {
	serial    uint64 // the connection's pin key: its accept serial
	idleSince int64  // unix nanoseconds, as clientConn.idleSince
	ip        [16]byte
	port      uint16
	v4        bool
	kind      uint8 // recFree, recParked, recBack
}

// parkRec kinds.
const (
	recFree   uint8 = iota
	recParked       // waiting in the set
	recBack         // given back to netpoll by Accept, until onPrepare
)

// recOf is the record of cc, idle and leaving netpoll, and whether the lot
// may keep it as one: not a connection that authenticated (the pin
// registry refers to its clientConn, and the engine may hold a session
// pinned to it), nor one whose client's address has a zone or is not
// known.
func recOf(cc *clientConn) (parkRec, bool) {
	ra := cc.remote.Addr()
	if cc.authSeen.Load() || cc.pinLost.Load() || !ra.IsValid() || ra.Zone() != "" {
		return parkRec{}, false
	}
	return parkRec{serial: cc.pinKey, idleSince: cc.idleSince.Load(), ip: ra.As16(),
		port: cc.remote.Port(), v4: ra.Unmap().Is4(), kind: recParked}, true
}

// remote is the client's address.
func (r *parkRec) remote() *net.TCPAddr {
	if r.v4 {
		return &net.TCPAddr{IP: net.IPv4(r.ip[12], r.ip[13], r.ip[14], r.ip[15]), Port: int(r.port)}
	}
	return &net.TCPAddr{IP: append(net.IP(nil), r.ip[:]...), Port: int(r.port)}
}

// recFor returns the record for fd, growing recs when fd is past its end.
// l.mu is held.
func (l *parkLot) recFor(fd int) *parkRec {
	if fd >= len(l.recs) {
		if fd >= cap(l.recs) {
			// Grown by a quarter rather than doubled: recs stays about
			// the size of the highest fd.
			n := max(fd+1, cap(l.recs)+cap(l.recs)/4)
			n = (n + 255) &^ 255
			recs := make([]parkRec, n)
			copy(recs, l.recs)
			l.recs = recs
		}
		l.recs = l.recs[:fd+1]
	}
	return &l.recs[fd]
}

// rec returns fd's record if it is of kind k, or nil. l.mu is held.
func (l *parkLot) rec(fd int, k uint8) *parkRec {
	if fd < 0 || fd >= len(l.recs) || l.recs[fd].kind != k {
		return nil
	}
	return &l.recs[fd]
}

// How long the lot stops accepting after accept4 failed: acceptPauseMin
// the first time, twice as long each time it fails again, at most
// acceptPauseMax.
const (
	acceptPauseMin = 10 * time.Millisecond
	acceptPauseMax = time.Second
)

// newParkLot makes the lot for the listening socket of ln, a
// *net.TCPListener; the lot has a duplicate of it. dropped is called for
// each connection kept as a record that the lot closes.
func newParkLot(ln net.Listener, log *slog.Logger, dropped func()) (*parkLot, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %T has no fd", ln)
	}
	lnfd, err := dupFd(sc)
	if err != nil {
		return nil, fmt.Errorf("dup listening socket: %w", err)
	}
	if err := syscall.SetNonblock(lnfd, true); err != nil {
		syscall.Close(lnfd)
		return nil, fmt.Errorf("listening socket: %w", err)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		syscall.Close(lnfd)
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lnfd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, lnfd, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(lnfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return &parkLot{epfd: epfd, lnfd: lnfd, addr: ln.Addr(), log: log, dropped: dropped,
		parked: make(map[int]*clientConn), back: make(map[int]*clientConn), watched: make(map[int]*clientConn)}, nil
}

// Fd is what netpoll's poller watches: the epoll set.
func (l *parkLot) Fd() int { return l.epfd }

// Addr is the listening address.
func (l *parkLot) Addr() net.Addr { return l.addr }

// Accept runs on netpoll's poller whenever the set has an event: it
// returns a new connection, or a parked one the client sent bytes on, or
// (nil, nil) when there is neither (netpoll's "try again"). It never
// blocks. When accept4 fails (out of fds: EMFILE, ENFILE), the listening
// socket leaves the set for a moment (pauseAccept), and parked
// connections are served meanwhile: netpoll never sees the error. (Its
// own back-off takes the lot out of its poller, and from its second time
// on fails to, and spins, starting a goroutine per try.)
func (l *parkLot) Accept() (net.Conn, error) {
	var gone *clientConn
	goneRec := false
	defer func() {
		if gone != nil {
			gone.unregister()
		}
		if goneRec {
			l.dropped()
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	n, err := syscall.EpollWait(l.epfd, l.events[:], 0)
	if n <= 0 {
		if err != nil && err != syscall.EINTR {
			return nil, fmt.Errorf("epoll_wait: %w", err)
		}
		return nil, nil
	}
	ev := l.events[0]
	fd := int(ev.Fd)
	if fd == l.lnfd {
		if l.acceptHook != nil {
			l.acceptHook()
		}
		nfd, sa, err := syscall.Accept4(l.lnfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			if err != syscall.EAGAIN && err != syscall.ECONNABORTED && err != syscall.EINTR {
				l.pauseAccept(err)
			}
			return nil, nil
		}
		l.pause = 0
		// netpoll sets TCP_NODELAY only on sockets it accepted itself.
		_ = syscall.SetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		remote := sockaddrAddr(sa)
		if raceEnabled && l.holdFresh(nfd, remote) {
			return nil, nil
		}
		return &pollConn{fd: nfd, local: l.addr, remote: remote}, nil
	}
	if remote, ok := l.fresh[fd]; ok {
		delete(l.fresh, fd)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
		return &pollConn{fd: fd, local: l.addr, remote: remote}, nil
	}
	hup := ev.Events&syscall.EPOLLIN == 0 || ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && !hasData(fd)
	if r := l.rec(fd, recParked); r != nil {
		l.parkedN.Add(-1)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
		if hup {
			r.kind = recFree
			l.recN.Add(-1)
			syscall.Close(fd)
			goneRec = true
			return nil, nil
		}
		r.kind = recBack
		return &pollConn{fd: fd, local: l.addr, remote: r.remote()}, nil
	}
	cc := l.parked[fd]
	if cc == nil {
		if wc := l.watched[fd]; wc != nil && wc.state.Load() == stBusy {
			wc.clientGone(fd)
		}
		return nil, nil
	}
	delete(l.parked, fd)
	l.parkedN.Add(-1)
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	if hup {
		// The client closed (the usual end of an idle keep-alive
		// connection) or the connection failed, with nothing to read:
		// no need for netpoll to find that out.
		cc.state.Store(stClosing)
		syscall.Close(fd)
		gone = cc
		return nil, nil
	}
	cc.state.Store(stJoining)
	l.back[fd] = cc
	return &pollConn{fd: fd, local: l.addr, remote: net.TCPAddrFromAddrPort(cc.remote)}, nil
}

// holdFresh keeps fd, a connection just accepted, in the set for one
// event (a new socket is writable at once), and reports whether it did:
// Accept hands it over to netpoll then, in a later batch of the poller's
// events. Only in a race build, in which netpoll looks a connection's
// events up by fd number. Accept runs on the poller, in the middle of a
// batch, which may hold an event of the socket that had fd's number and
// was closed since by another goroutine (its client's FIN, for a
// connection the sweeper parked or closed meanwhile): netpoll would hand
// it to the new connection, take that for hung up, and close it with its
// client's request unread. A batch fetched after accept4 holds none: the
// old socket left netpoll's set before its number was free. A normal
// build carries the connection's operator in the event, which netpoll
// skips once freed, and keeps until the batch is done.
func (l *parkLot) holdFresh(fd int, remote net.Addr) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLONESHOT, Fd: int32(fd)}
	if syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) != nil {
		return false
	}
	if l.fresh == nil {
		l.fresh = make(map[int]net.Addr)
	}
	l.fresh[fd] = remote
	return true
}

// pauseAccept takes the listening socket out of the set after accept4
// failed with err, and has resumeAccept put it back a moment later. The
// first failure after an accept that worked is logged. l.mu is held.
func (l *parkLot) pauseAccept(err error) {
	if syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, l.lnfd, nil) != nil {
		return
	}
	if l.pause == 0 {
		l.pause = acceptPauseMin
		l.log.Warn("accept client connection; accepting again in a moment", "err", err)
	} else {
		l.pause = min(2*l.pause, acceptPauseMax)
	}
	l.resume = time.AfterFunc(l.pause, l.resumeAccept)
}

// resumeAccept puts the listening socket back in the set.
func (l *parkLot) resumeAccept() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.lnfd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, l.lnfd, &ev); err != nil {
		l.log.Warn("accept client connections again", "err", err)
		l.resume = time.AfterFunc(l.pause, l.resumeAccept)
	}
}

// park puts cc's fd, just off netpoll, in the set. It reports
// false, leaving the fd to the caller, once the lot is closed. A
// connection that never authenticated (nothing but its shard refers to
// it) is kept as a record: cc moves to stMoved, and the caller takes it
// out of its shard (moved is true).
func (l *parkLot) park(cc *clientConn, fd int) (parked, moved bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false, false
	}
	l.parkedN.Add(1)
	// The poller may give the fd back as soon as mu is free.
	if rec, ok := recOf(cc); ok {
		*l.recFor(fd) = rec
		l.recN.Add(1)
		// Whoever still holds cc (a sweeper's list of idle connections,
		// Shutdown's) finds it done with.
		cc.state.Store(stMoved)
		return true, true
	}
	cc.fd = fd
	cc.state.Store(stParked)
	l.parked[fd] = cc
	return true, false
}

// watch adds fd, the socket of cc just detached, to the set for its
// client's FIN or reset (edge-triggered: once each, whatever bytes come),
// which Accept takes to cc.clientGone while a request is being served.
// It stays there until unwatch, for the connection's time off netpoll:
// two system calls for its life, none per request.
func (l *parkLot) watch(cc *clientConn, fd int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	ev := syscall.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) != nil {
		return
	}
	cc.watchFd = fd
	l.watched[fd] = cc
}

// unwatch takes cc's socket out of the set, before the connection closes
// its fd or parks a duplicate of it: the set's entry would outlive the fd
// while a duplicate keeps the socket open. A connection closed from
// another goroutine meanwhile (the shutdown's deadline) left the set with
// its socket, and the fd may be another's by now, maybe parked here or
// just accepted and held (holdFresh): its entry is left alone then.
func (l *parkLot) unwatch(cc *clientConn) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fd := cc.watchFd
	if fd < 0 || l.watched[fd] != cc {
		return
	}
	cc.watchFd = -1
	delete(l.watched, fd)
	if _, held := l.fresh[fd]; l.parked[fd] == nil && !held && !l.closed {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	}
}

// hasData reports whether fd has a byte to read (a request that came
// with the client's FIN, say), without taking it.
func hasData(fd int) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == nil && n > 0
}

// takeBack returns the parked connection Accept gave back on fd: its
// clientConn when it kept one, else its record (ok); neither for a new
// connection. A record stays counted in recN until onPrepare has put its
// new clientConn in its shard.
func (l *parkLot) takeBack(fd int) (cc *clientConn, rec parkRec, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.rec(fd, recBack); r != nil {
		rec, *r = *r, parkRec{}
		return nil, rec, true
	}
	cc = l.back[fd]
	if cc != nil {
		delete(l.back, fd)
	}
	return cc, parkRec{}, false
}

// expire closes the connections parked as records and idle since before
// limit (unix nanoseconds), but not one with bytes from its client in the
// socket, which the lot has yet to give back (see closeIdleQuiet). The
// sweeper of the first shard calls it.
func (l *parkLot) expire(limit int64) {
	n := 0
	l.mu.Lock()
	for fd := range l.recs {
		r := &l.recs[fd]
		if r.kind != recParked || r.idleSince >= limit || hasData(fd) {
			continue
		}
		l.closeRecLocked(fd, r)
		n++
	}
	l.mu.Unlock()
	for range n {
		l.dropped()
	}
}

// closeRecs closes the connections parked as records (Shutdown).
func (l *parkLot) closeRecs() {
	l.mu.Lock()
	n := l.closeRecsLocked()
	l.mu.Unlock()
	for range n {
		l.dropped()
	}
}

// closeRecsLocked closes the connections parked as records and returns
// how many; l.mu is held.
func (l *parkLot) closeRecsLocked() int {
	n := 0
	for fd := range l.recs {
		if r := &l.recs[fd]; r.kind == recParked {
			l.closeRecLocked(fd, r)
			n++
		}
	}
	return n
}

// closeRecLocked closes fd, a connection parked as the record r, and
// frees r; l.mu is held.
func (l *parkLot) closeRecLocked(fd int, r *parkRec) {
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	syscall.Close(fd)
	r.kind = recFree
	l.recN.Add(-1)
	l.parkedN.Add(-1)
}

// hasInput reports whether cc is parked with bytes from its client in
// the socket, which the lot has yet to give back to netpoll for: looked
// at under the lot's lock, while the fd is the parked connection's.
func (l *parkLot) hasInput(cc *clientConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return cc.state.Load() == stParked && l.parked[cc.fd] == cc && hasData(cc.fd)
}

// closeParked closes cc if it is parked, and reports whether it did.
func (l *parkLot) closeParked(cc *clientConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !cc.state.CompareAndSwap(stParked, stClosing) {
		return false
	}
	delete(l.parked, cc.fd)
	l.parkedN.Add(-1)
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, cc.fd, nil)
	syscall.Close(cc.fd)
	return true
}

// Close closes the listening socket, the parked connections and the set;
// netpoll calls it when it stops serving.
func (l *parkLot) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.resume != nil {
		l.resume.Stop()
	}
	var gone []*clientConn
	for fd, cc := range l.parked {
		cc.state.Store(stClosing)
		syscall.Close(fd)
		gone = append(gone, cc)
	}
	clear(l.parked)
	n := l.closeRecsLocked()
	l.parkedN.Store(0)
	for fd := range l.fresh {
		syscall.Close(fd)
	}
	clear(l.fresh)
	err := syscall.Close(l.lnfd)
	syscall.Close(l.epfd)
	l.mu.Unlock()
	for _, cc := range gone {
		cc.unregister()
	}
	for range n {
		l.dropped()
	}
	return err
}

// parkedCloser is what closes a parked connection (closerOf).
type parkedCloser struct{ cc *clientConn }

func (pc parkedCloser) Close() error {
	if pc.cc.p.lot.closeParked(pc.cc) {
		pc.cc.unregister()
	}
	return nil
}

// park takes cc, idle, off netpoll into the lot; false if it was not
// idle any more, or cannot leave netpoll. It closes netpoll's connection:
// the close callbacks finish the move (onParked), with a duplicate of the
// fd, whoever's close runs them.
func (cc *clientConn) park() bool {
	// A detached connection has a goroutine of its own, which takes it
	// out of idle when a request comes.
	if cc.detached.Load() {
		return false
	}
	// cc.c is the handler's while a request may start; the closer is
	// read atomically.
	c, ok := cc.closer.Load().(closerOf).c.(netpoll.Connection)
	if !ok || !canQuiesce(c) || !cc.state.CompareAndSwap(stIdle, stParking) {
		return false
	}
	// The connection is the sweeper's now: no request can start on it.
	// c is still its netpoll connection unless that ended (and another
	// took its place) between the look and the move.
	if cc.closer.Load().(closerOf).c != c {
		cc.state.CompareAndSwap(stParking, stIdle)
		return false
	}
	if h := cc.p.cfg.parkHook; h != nil {
		h(cc)
	}
	_ = c.Close()
	return true
}

// onParked is the close callback of a connection park closed, or that
// was closed otherwise while parking (its client went, netpoll's
// shutdown): it runs after netpoll took the fd out of its epoll set, on
// the goroutine that closed it, on that of an OnRequest that was running
// then, or on netpoll's hang-up goroutine. netpoll closes its fd after the
// close callbacks, so the connection goes on with a duplicate; a client
// that went is found so by the lot.
func (cc *clientConn) onParked(c netpoll.Connection) {
	quiesce(c)
	fd, err := dupCloexec(c.(interface{ Fd() int }).Fd())
	if err != nil {
		cc.p.log.Warn("park client connection", "err", err)
		cc.state.Store(stClosing)
		cc.unregister()
		return
	}
	if c.Reader().Len() > 0 {
		// A request came in during the hand-over: serve it off netpoll,
		// as a detached connection is from the request on.
		cc.state.Store(stBusy)
		cc.onDetached(c, fd)
		return
	}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cc.remote = ta.AddrPort()
	}
	cc.c, cc.r, cc.w = nil, nil, nil
	cc.closer.Store(closerOf{parkedCloser{cc}})
	parked, moved := cc.p.lot.park(cc, fd)
	if !parked {
		cc.state.Store(stClosing)
		syscall.Close(fd)
		cc.unregister()
		return
	}
	cc.parkedNow(moved)
}

// parkedNow follows a park: it counts it, takes a connection the lot keeps
// as a record (moved) out of its shard, and closes the connection if the
// engine ended its pinned session meanwhile (OnPinnedClosed found it
// parking, not idle), as the idle connection it is, so that its client
// logs in again on a new one rather than have its next request answered
// with a 502.
func (cc *clientConn) parkedNow(moved bool) {
	cc.p.parks.Add(1)
	if moved {
		cc.sh.mu.Lock()
		delete(cc.sh.conns, cc)
		cc.sh.mu.Unlock()
		return
	}
	if cc.pinLost.Load() {
		cc.closeIfIdle()
	}
}

// unpark binds a connection Accept gave back to c, its new netpoll
// connection. It stays joining until netpoll has registered c
// (onConnect).
func (cc *clientConn) unpark(c netpoll.Connection) {
	cc.c, cc.r, cc.w = c, c.Reader(), c.Writer()
	cc.closer.Store(closerOf{c})
}

// netpoll internals quiesce relies on: the connection's operator, and the
// operator's state, which netpoll's poller moves from 1 to 2 while it
// handles an event for the fd and back when done, and which 0 keeps it
// away (netpoll v0.7.2, fd_operator.go).
var (
	operatorType = reflect.TypeFor[*netpoll.FDOperator]()
	stateField   = func() *reflect.StructField {
		f, ok := reflect.TypeFor[netpoll.FDOperator]().FieldByName("state")
		if !ok || f.Type.Kind() != reflect.Int32 {
			return nil
		}
		return &f
	}()
	pollField = func() *reflect.StructField {
		f, ok := reflect.TypeFor[netpoll.FDOperator]().FieldByName("poll")
		if !ok || f.Type != reflect.TypeFor[netpoll.Poll]() {
			return nil
		}
		return &f
	}()
)

// operatorOf returns c's netpoll operator, or nil.
func operatorOf(c netpoll.Connection) *netpoll.FDOperator {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("operator")
	if !f.IsValid() || f.Type() != operatorType {
		return nil
	}
	return (*netpoll.FDOperator)(f.UnsafePointer())
}

// canQuiesce reports whether quiesce works for c (the netpoll internals
// it needs are there).
func canQuiesce(c netpoll.Connection) bool {
	return stateField != nil && pollField != nil && operatorOf(c) != nil
}

// quiesce makes sure netpoll took c's fd out of its epoll set, then waits
// until the poller is done with any event it had taken for the fd before,
// and makes it skip any it still holds: then the input buffer has all that
// was read from the fd. It is what netpoll itself does when it frees the
// operator, which comes only after the close callbacks and the buffers'
// release. It takes the operator out of use before netpoll frees it,
// which then finds it so.
//
// The deregistration is netpoll's own (once per operator, so netpoll's
// later one is a no-op), made here because netpoll skips it when a Close
// from another goroutine (the sweeper's park) meets a handler that is
// just returning: the close callbacks then run without it. The fd we keep
// would stay in netpoll's set, and the next registration of a socket at
// that number, a parked connection coming back, fail with EEXIST.
func quiesce(c netpoll.Connection) {
	op := operatorOf(c)
	if op == nil || stateField == nil || pollField == nil {
		return
	}
	if *(*netpoll.Poll)(unsafe.Add(unsafe.Pointer(op), pollField.Offset)) != nil {
		_ = op.Control(netpoll.PollDetach)
	}
	st := (*int32)(unsafe.Add(unsafe.Pointer(op), stateField.Offset))
	for !atomic.CompareAndSwapInt32(st, 1, 0) {
		if atomic.LoadInt32(st) == 0 {
			return
		}
		runtime.Gosched()
	}
}

// pollConn is a connected socket handed to netpoll by the lot: netpoll
// takes its fd and addresses, and does all I/O itself.
type pollConn struct {
	fd            int
	local, remote net.Addr
}

var errPollConn = errors.New("pollConn: I/O goes through netpoll")

func (c *pollConn) Fd() int                          { return c.fd }
func (c *pollConn) LocalAddr() net.Addr              { return c.local }
func (c *pollConn) RemoteAddr() net.Addr             { return c.remote }
func (c *pollConn) Read([]byte) (int, error)         { return 0, errPollConn }
func (c *pollConn) Write([]byte) (int, error)        { return 0, errPollConn }
func (c *pollConn) Close() error                     { return syscall.Close(c.fd) }
func (c *pollConn) SetDeadline(time.Time) error      { return errPollConn }
func (c *pollConn) SetReadDeadline(time.Time) error  { return errPollConn }
func (c *pollConn) SetWriteDeadline(time.Time) error { return errPollConn }

// sockaddrAddr is the TCP address of an accepted peer.
func sockaddrAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		z := ""
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				z = ifi.Name
			}
		}
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port, Zone: z}
	}
	return &net.TCPAddr{}
}
