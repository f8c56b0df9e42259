package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// Conn is one upstream HTTP/1.1 connection. One goroutine at a time runs
// an exchange on it (RoundTrip); State, Alive and Close are safe from any
// goroutine.
type Conn struct {
	addr  string
	born  time.Time
	slot  uint32 // picks the connection's set in an Abortable
	nc    netpoll.Connection
	state atomic.Uint32

	mu       sync.Mutex // guards gc, closed, rawFD, for Close racing a detach
	gc       net.Conn   // the Go net connection: after a detach, or from the start
	closed   bool
	detached atomic.Bool // off netpoll's poller (detach or the sink watchdog)
	rawFD    int         // the fd taken off the poller and not adopted by Go net yet; -1 none
	writing  bool        // a pipelined batch is being written (pipeline.go): the fd stays on the poller

	// The sink watchdog (watch.go): stops the poller while a sink blocks.
	watch    *time.Timer
	watching atomic.Bool  // an exchange's head or body is being delivered
	inSink   atomic.Bool  // a sink call (OnHead, OnBody) is running
	sinkAt   atomic.Int64 // nanotime the running sink call began; pipelined connections only
	consumed int64        // bytes skipped in netpoll's buffer; under mu
	wLen     int          // buffered bytes at the watchdog's last look; under mu
	wSeen    int64        // consumed at the watchdog's last look; under mu
	wAt      time.Time    // time of the watchdog's last look; under mu
	watchHW  int          // the high-water mark of the exchange being watched

	// Set once at creation for a connection on Go net from the start
	// (TLS, tunnels), or by an exchange that left netpoll during an
	// interim sink call (adoptGoNet): g is its buffered reader, used for
	// heads and bodies alike; tlsState its handshake's outcome (nil for
	// plaintext).
	g        *goSource
	tlsState *tls.ConnectionState
	tlsRaw   *tlsTransport // what the TLS layer reads from, for its EOF
	wto      time.Duration // the exchange's write timeout, for Go net writes
	hw       int           // the exchange's BodyHighWater, for the interim watchdog

	// Owned by the goroutine running RoundTrip, read by the owner after.
	requests int             // exchanges started on this connection
	resp     parser.Response // reused per exchange
	chunked  parser.ChunkedDecoder
	ownEdits parser.Edits // the exchange's edits plus framing; owned by the exchange
	clBuf    [20]byte     // Content-Length digits referenced by ownEdits
	last     Outcome
	noReuse  bool        // this exchange left the connection unusable
	wfail    bool        // a write of this exchange failed on the socket
	interims int         // interim responses of this exchange so far
	np       npSource    // the body source while on netpoll
	closeFn  func()      // closes c; the context watch's function, made once
	answerFn func() bool // c.answered, made once: a method value allocates
	note     any         // the layer above's per-connection value (SetNote)
	pl       *pipeline   // pipeline mode's state (pipeline.go); nil if never pipelined
	// kept is the buffer of a head sent with its inline body (writeHead),
	// held from the write until a response byte arrives or the exchange
	// ends, so that a request that failed before any can have its body
	// again (handBack); nil when there is none.
	kept *bytebufferpool.ByteBuffer

	// TCP acknowledgements (acked.go): the peer's acknowledged byte count
	// after the connect (ackUnknown: not tracked), the request bytes
	// written over the connection's life, and that count when the
	// current exchange started.
	ackBase    int64
	sent       int64
	sentBefore int64
}

// detacher is what netpoll's concrete connection offers beyond the
// Connection interface.
type detacher interface {
	Detach() error
	Fd() int
}

// Dial connects to addr (an ip:port the caller resolved; a host name is
// resolved with the default resolver) within timeout and while ctx lasts:
// ctx's end stops a connect in progress. It blocks: callers off the hot
// path run it on a worker pool. The returned connection is Busy, held by
// the caller. A failure is an *Error with PhaseDial; one that ctx ended
// wraps ctx's error, one that timeout ended ErrConnectTimeout.
func Dial(ctx context.Context, addr string, timeout time.Duration) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Phase: PhaseDial, Addr: addr, Err: err}
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); timeout <= 0 || left < timeout {
			timeout = left
		}
	}
	c := &Conn{addr: addr, slot: slots.Add(1), rawFD: -1}
	c.state.Store(uint32(Connecting))
	start := time.Now()
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	nc, err := dialNetpoll(dctx, addr)
	if err != nil && errors.Is(err, netpoll.ErrConnClosed) && time.Since(start) < timeout && ctx.Err() == nil {
		// netpoll v0.7.2 reports any hang-up seen while connecting as
		// "closed by peer": a refusal, but also a stale poller event for
		// an fd number that was just reused (it logs "operator has
		// critical problem"). One more try, with Go's dialer, tells them
		// apart and names the cause (syscall.ECONNREFUSED, as on Go net
		// connections); nothing was sent yet. A connection it makes
		// runs on Go net, as with Config.GoNetIO.
		_ = c.transition(Closing)
		_ = c.transition(Closed)
		raw, gerr := DialGo(ctx, addr, timeout-time.Since(start))
		if gerr != nil {
			return nil, gerr
		}
		return NewGo(addr, raw), nil
	}
	if err != nil {
		_ = c.transition(Closing)
		_ = c.transition(Closed)
		// netpoll reports its dial context's deadline as an error of
		// its own, not a net.Error: the timeout is told by dctx.
		return nil, dialFailed(ctx, addr, err, errors.Is(dctx.Err(), context.DeadlineExceeded))
	}
	if err := ctx.Err(); err != nil {
		_ = nc.Close()
		_ = c.transition(Closing)
		_ = c.transition(Closed)
		return nil, &Error{Phase: PhaseDial, Addr: addr, Err: err}
	}
	c.nc = nc
	c.born = time.Now()
	c.ackBase = ackUnknown
	if d, ok := nc.(detacher); ok {
		c.trackAcks(d.Fd())
	}
	if err := c.transition(Busy); err != nil {
		_ = nc.Close()
		return nil, &Error{Phase: PhaseDial, Addr: addr, Err: err}
	}
	return c, nil
}

// dialNetpoll is netpoll's DialConnection bounded by ctx instead of by a
// timeout alone (netpoll.DialTCP waits for the connect under ctx), so that
// a caller giving up (its client gone, the engine aborting) ends the dial
// at once rather than at ConnectTimeout. As DialConnection does, it
// resolves a host name and tries each of its addresses in turn.
func dialNetpoll(ctx context.Context, addr string) (netpoll.Connection, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	portnum, err := net.DefaultResolver.LookupPort(ctx, "tcp", port)
	if err != nil {
		return nil, err
	}
	var ips []net.IPAddr
	if ip := net.ParseIP(host); ip != nil || host == "" {
		ips = []net.IPAddr{{IP: ip}}
	} else if ips, err = net.DefaultResolver.LookupIPAddr(ctx, host); err != nil {
		return nil, err
	} else if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var first error
	for _, ip := range ips {
		network := "tcp"
		if ip.IP != nil && ip.IP.To4() == nil {
			network = "tcp6"
		}
		raddr := &netpoll.TCPAddr{TCPAddr: net.TCPAddr{IP: ip.IP, Port: portnum, Zone: ip.Zone}}
		nc, err := netpoll.DialTCP(ctx, network, nil, raddr)
		if err == nil {
			return nc, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dialFailed returns the error of a dial to addr that failed with err.
// One that the caller's context ended, canceled or past its deadline
// (which bounds the dial, and whose passing the dial may report as its own
// timeout a moment before the context does), fails with the context's
// error too: the upstream did not fail. It waits for the context's end
// once the deadline has passed (dials run on the dial pool). One that
// timedOut, the dial's own timeout over while the context lasts, wraps
// ErrConnectTimeout: the upstream did not answer the connect.
func dialFailed(ctx context.Context, addr string, err error, timedOut bool) *Error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) && ctx.Done() != nil {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	} else if cerr == nil && timedOut {
		err = fmt.Errorf("%w: %w", ErrConnectTimeout, err)
	}
	return &Error{Phase: PhaseDial, Addr: addr, Err: err}
}

// Addr is the upstream address.
func (c *Conn) Addr() string { return c.addr }

// Born is when the connection was established.
func (c *Conn) Born() time.Time { return c.born }

// Requests is how many exchanges the connection has started.
func (c *Conn) Requests() int { return c.requests }

// Note returns the value SetNote last stored with the connection, nil if
// none. Like an exchange, it belongs to the connection's holder: one
// goroutine at a time.
func (c *Conn) Note() any { return c.note }

// SetNote stores v with the connection for the layer above, for as long
// as the connection lives (the engine keeps a connection's own Digest
// nonces there). conn never reads it.
func (c *Conn) SetNote(v any) { c.note = v }

// Detached reports that the connection left netpoll for Go net I/O.
func (c *Conn) Detached() bool { return c.detached.Load() }

// Alive reports, without blocking, that the peer has not closed the
// connection and no unread byte is buffered on it: bytes on an idle
// HTTP/1.1 connection mean it is broken or closing. It implements
// poolset.Conn and is called under the pool's lock.
func (c *Conn) Alive() bool {
	if c.detached.Load() {
		return false
	}
	s := c.State()
	if s == Closing || s == Closed {
		return false
	}
	if c.g != nil {
		return c.goAlive()
	}
	return c.nc.IsActive() && c.nc.Reader().Len() == 0
}

// Probe reports, with a non-blocking look at the socket (MSG_PEEK), that
// the kernel holds nothing from the peer on a connection about to carry a
// request: no FIN, no reset, no byte. Alive's view of a netpoll
// connection is the poller's, which turns only once the poller has
// handled the peer's close, a moment after the kernel has it: an origin
// that closes right after a response without saying so, or at its idle
// timeout, leaves that moment in which the pool hands the connection out
// as alive. A request that could not go again after meeting the close (a
// POST, which goes again only when the upstream's TCP shows it never
// received it, or one whose body cannot be had again) is then lost, so
// its caller probes first. One system call. A Go net connection (TLS,
// Config.GoNetIO) is looked at the same way, under its TLS layers,
// whatever the grace in which Alive takes it as alive without a look
// (goProbeGrace after its last exchange).
func (c *Conn) Probe() bool {
	if c.g != nil {
		return c.goLook(false)
	}
	if c.detached.Load() {
		return true
	}
	alive := false
	ok := c.withFd(func(fd int) {
		var b [1]byte
		_, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = err == unix.EAGAIN || err == unix.EWOULDBLOCK
	})
	return ok && alive
}

// closeAtOnce closes the connection without waiting on its peer: a TLS
// connection's close sends close_notify, which waits (up to its write
// deadline) for room in a send buffer an origin that stopped reading
// keeps full, so the socket under the TLS layers is closed first and the
// alert fails at once. For an abort, which may run on netpoll's poller:
// the exchange it ends needs no orderly close.
func (c *Conn) closeAtOnce() {
	c.mu.Lock()
	gc, closed := c.gc, c.closed
	c.mu.Unlock()
	if gc != nil && !closed {
		if sock, _ := socketUnder(gc); sock != nil && sock != gc {
			_ = sock.Close()
		}
	}
	_ = c.Close()
}

// Close closes the connection. It is idempotent and safe from any
// goroutine; an exchange blocked on the connection fails with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	gc := c.gc
	c.mu.Unlock()
	if err := c.transition(Closing); err != nil {
		// Only Closing or Closed can refuse it, and closed guards those.
		return err
	}
	var err error
	if gc != nil {
		err = gc.Close()
	} else if c.detached.Load() {
		// The watchdog took the fd off the poller and no Go net
		// connection adopted it yet: it is ours to close.
		c.mu.Lock()
		if c.rawFD >= 0 {
			err = syscall.Close(c.rawFD)
			c.rawFD = -1
		}
		c.mu.Unlock()
	} else if c.nc != nil {
		// Under mu: netpoll frees the input buffer on close, and the
		// exchange goroutine changes that buffer (Skip, Release, Slice,
		// Detach) only under mu, so a close from the context's watch never
		// lands in the middle of one.
		c.mu.Lock()
		err = c.nc.Close()
		c.mu.Unlock()
	}
	_ = c.transition(Closed)
	return err
}

// skip drops n parsed bytes from netpoll's input buffer and releases what
// was read. It reports false, dropping nothing, when the connection was
// closed meanwhile (by the context's watch or an abort): netpoll keeps an
// unread buffer after a close and would hand the same bytes out again, so
// the exchange must fail rather than read on.
func (c *Conn) skip(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.g != nil {
		c.g.r += n
		return true
	}
	r := c.nc.Reader()
	_ = r.Skip(n)
	c.consumed += int64(n)
	if !c.detached.Load() {
		// After a detach the fd operator is freed: Release would touch it.
		// The skipped nodes go when the rest is sliced out.
		_ = r.Release()
	}
	return true
}

// isClosed reports whether Close has been called.
func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
