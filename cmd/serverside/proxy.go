package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/balance"
)

// Client-side defaults; the first two are flags of the binary.
const (
	// DefaultClientIdleTimeout closes a kept-alive client connection on
	// which no request started for this long.
	DefaultClientIdleTimeout = 60 * time.Second
	// DefaultClientHeaderTimeout bounds the time from the first byte of a
	// request head to its end.
	DefaultClientHeaderTimeout = 30 * time.Second
	// clientWriteTimeout bounds each flush to a client: a client that
	// takes no bytes for this long is dropped.
	clientWriteTimeout = 60 * time.Second
	// forceCloseWait bounds the wait for connections to finish after a
	// shutdown deadline closed them.
	forceCloseWait = 5 * time.Second
	// DefaultClientParkAfter parks a client connection idle for this
	// long (park.go).
	DefaultClientParkAfter = time.Second
	// releaseAfterParked: once this many connections were parked since
	// the last time, the memory they held goes back to the system: after
	// the first sweep that parks none (the burst is over), at most once
	// per releaseGap, or at least once per releaseEvery while parking
	// goes on.
	releaseAfterParked = 256
	releaseGap         = time.Second
	releaseEvery       = 30 * time.Second
)

// clientConfig configures the client side of the proxy.
type clientConfig struct {
	// IdleTimeout closes a client connection idle between requests;
	// HeaderTimeout bounds the read of one request head. Zero takes the
	// defaults above.
	IdleTimeout, HeaderTimeout time.Duration
	// ParkAfter takes a client connection idle for that long off netpoll
	// until its client sends again (park.go); zero takes the default,
	// negative never parks.
	ParkAfter time.Duration
	// parkHook, for tests, runs between a park's move to parking and its
	// close of netpoll's connection.
	parkHook func(*clientConn)
	// requestHook, for tests, runs in onRequest just before a request
	// takes its idle connection: where a sweeper's park may land.
	requestHook func(*clientConn)
	// prepareHook, for tests, runs in onPrepare once the connection is
	// bound to its clientConn, before netpoll registers its fd: where a
	// sweeper's tick may land when netpoll's poller is slow.
	prepareHook func(*clientConn)
	// acceptHook, for tests, runs in the lot's Accept, on netpoll's
	// poller, just before it accepts a connection.
	acceptHook func()
	// disconnectHook, for tests, runs in onDisconnect before it looks
	// at the connection.
	disconnectHook func(*clientConn)
	// AccessLog logs one line per request.
	AccessLog bool
	// ConnectPorts are the ports CONNECT may reach; the zero value allows
	// 443 only. TunnelIdleTimeout ends a tunnel idle both ways for that
	// long; zero takes DefaultTunnelIdleTimeout, a negative one never
	// ends it.
	ConnectPorts      portSet
	TunnelIdleTimeout time.Duration
	// ConnectTimeout and TLSHandshakeTimeout are the engine's, to bound
	// the wait for a tunnel (through a parent spoken to over TLS, the
	// handshake with it comes on top of the dials).
	ConnectTimeout, TLSHandshakeTimeout time.Duration
	// ForwardTLS is the TLS of https:// targets in forward mode (CA
	// bundle, verification); nil verifies against the system roots.
	ForwardTLS *engine.TLS
	// Lookup resolves the host names of forward targets (requests and
	// CONNECT); nil uses net.DefaultResolver.
	Lookup lookupFunc
	// ViaName is the received-by of the proxy's Via elements, by which
	// it finds a request that came round back to it (via.go); empty
	// takes the host's name and the listening port.
	ViaName string
}

// lookupFunc is net.Resolver's LookupNetIP.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// proxy is the client side of the demo proxy.
//
// Client connections are netpoll connections served by one netpoll
// EventLoop. Each is assigned a client shard at accept (round-robin); the
// shard owns the connection's registration and its idle timer. The
// requests of one connection are handled by netpoll's OnRequest, which
// runs on a netpoll gopool goroutine, at most one at a time per connection
// (netpoll's per-connection processing lock): that goroutine parses the
// request straight out of netpoll's input buffer and runs the upstream
// exchange with engine.Exchange, whose inline path (an idle pooled
// upstream connection) runs the whole exchange, response relay included,
// on that same goroutine. The client connection's reader, writer and
// parser state are therefore touched by one goroutine at a time and need
// no lock; see docs/architecture.md ("The demo proxy's client side").
type proxy struct {
	eng *engine.Engine
	log *slog.Logger
	cfg clientConfig
	// group is the engine peer group requests go to (origins in reverse
	// mode, parents in forward mode; see peers.go); empty for direct
	// forwarding. parents marks a group of parent proxies; originHost is
	// the Host of a reverse-proxied request that has none.
	group      string
	parents    bool
	originHost string
	// parentWait is the longest a CONNECT may wait for a slot of a
	// parent's max_conns (its pending_timeout), which its deadline
	// allows for; zero without parents.
	parentWait time.Duration
	// hashHost says that the group's balancer is balance.Hash: requests
	// carry their host as the hash key (hostKey).
	hashHost bool
	metrics  proxyMetrics // read by the admin server
	states   sync.Pool    // *reqState, lent to a connection per request
	// replay: the engine may send any request again (it answers
	// challenges, Config.Auth, or resends requests the upstream never
	// received, unless Config.StrictResend), so a small request body is
	// kept for a resend whatever the method.
	replay  bool
	tunnels tunnelMetrics
	// viaName is the proxy's received-by, via11 and via10 its Via
	// elements, viaLine the field line of its own responses, loopMsg
	// the text of its 508 (setViaName). Set before the first request,
	// never written after.
	viaName      []byte
	via11, via10 []byte
	viaLine      string
	loopMsg      string
	// tunnelsLive counts the tunnels opened and not yet ended; tunnelCtx
	// ends them at shutdown.
	tunnelsLive  atomic.Int64
	tunnelCtx    context.Context
	tunnelCancel context.CancelFunc
	pins         *pinRegistry // client connections by pin key (auth.go)
	shards       []*clientShard
	nextSh       atomic.Uint64
	closing      atomic.Bool

	evl      netpoll.EventLoop
	lot      *parkLot     // set by Serve before netpoll accepts from it
	released atomic.Int64 // unix nanoseconds of the last memory release
	parks    atomic.Int64 // connections parked, ever
	parksRel atomic.Int64 // parks at the last memory release
	// parksSince is when a sweeper first found parks since the last
	// memory release (unix nanoseconds), 0 when none.
	parksSince atomic.Int64
	mu         sync.Mutex // guards started
	started    bool       // Serve handed a listener to netpoll
	serveDone  chan struct{}
	stopOnce   sync.Once
	stop       chan struct{} // closed by Shutdown: ends the sweepers
	sweepers   sync.WaitGroup
}

// clientShard is one shard of client connections: the set of its live
// connections, under its own lock (taken at accept, close, the idle sweep
// and shutdown, never on a request's path), and a sweeper goroutine that
// closes the ones idle for too long.
type clientShard struct {
	id    int
	mu    sync.Mutex
	conns map[*clientConn]struct{}
	// peak is the most connections conns has held since it was made: a
	// Go map keeps the room it grew to, so once most of a burst of
	// connections has parked as records, the sweeper makes a smaller one.
	peak int
}

// shrinkConnsAt is the peak from which conns is made anew once it holds
// under a quarter of it.
const shrinkConnsAt = 1024

// newProxy builds the proxy and starts its engine. Origins, when given,
// become ecfg's peer group (round-robin); ecfg may instead carry the group
// already (withPeers).
func newProxy(logger *slog.Logger, origins []string, ecfg engine.Config, cfg clientConfig) (*proxy, error) {
	if err := withPeers(&ecfg, origins, nil, ""); err != nil {
		return nil, err
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultClientIdleTimeout
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultClientHeaderTimeout
	}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = DefaultClientParkAfter
	}
	if cfg.TunnelIdleTimeout == 0 {
		cfg.TunnelIdleTimeout = DefaultTunnelIdleTimeout
	}
	if cfg.ForwardTLS == nil {
		cfg.ForwardTLS = &engine.TLS{}
	}
	if cfg.ViaName != "" {
		if err := checkViaName(cfg.ViaName); err != nil {
			return nil, fmt.Errorf("%w: via name: %w", engine.ErrBadConfig, err)
		}
	}
	n := ecfg.Shards
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	pins := newPinRegistry(n)
	ecfg.OnPinnedClosed = pins.closed
	eng, err := engine.New(ecfg)
	if err != nil {
		return nil, err
	}
	p := &proxy{eng: eng, log: logger, cfg: cfg, pins: pins, replay: ecfg.Auth != nil || !ecfg.StrictResend,
		serveDone: make(chan struct{}), stop: make(chan struct{})}
	p.tunnelCtx, p.tunnelCancel = context.WithCancel(context.Background())
	if cfg.ViaName != "" {
		p.setViaName(cfg.ViaName)
	}
	if g, ok := ecfg.Groups[peerGroup]; ok {
		p.group, p.parents, p.originHost = peerGroup, g.Peers[0].Parent, g.Peers[0].Addr
		p.hashHost = g.Balancer == balance.Hash
		if p.parents {
			for _, pc := range g.Peers {
				w := pc.PendingTimeout
				if w <= 0 {
					w = cmp.Or(ecfg.PendingTimeout, engine.DefaultPendingTimeout)
				}
				p.parentWait = max(p.parentWait, w)
			}
		}
	}
	for i := range n {
		p.shards = append(p.shards, &clientShard{id: i, conns: make(map[*clientConn]struct{})})
	}
	p.evl, err = netpoll.NewEventLoop(p.onRequest,
		netpoll.WithOnPrepare(p.onPrepare),
		netpoll.WithOnConnect(p.onConnect),
		netpoll.WithOnDisconnect(p.onDisconnect),
		netpoll.WithReadTimeout(cfg.IdleTimeout),
		netpoll.WithWriteTimeout(clientWriteTimeout))
	if err != nil {
		p.tunnelCancel()
		_ = eng.Close()
		return nil, fmt.Errorf("netpoll event loop: %w", err)
	}
	for _, sh := range p.shards {
		p.sweepers.Add(1)
		go p.sweep(sh)
	}
	return p, nil
}

// hostPortScheme adds the scheme's default port (443 for https, else 80)
// to an authority without one, or with an empty one ("host:", which RFC
// 3986 §3.2.3 gives the default port).
func hostPortScheme(auth, scheme string) string {
	def := "80"
	if scheme == "https" {
		def = "443"
	}
	host, port, err := net.SplitHostPort(auth)
	switch {
	case err != nil:
		if len(auth) > 1 && auth[0] == '[' && auth[len(auth)-1] == ']' {
			auth = auth[1 : len(auth)-1] // an IPv6 literal: JoinHostPort adds the brackets
		}
		return net.JoinHostPort(auth, def)
	case port == "":
		return net.JoinHostPort(host, def)
	}
	return auth
}

// validPort reports whether hp's port is one a connection can go to,
// 1 to 65535: the target's syntax allows any digits (RFC 3986 §3.2.3),
// so a port out of range is the client's error, found before any lookup.
func validPort(hp string) bool {
	_, port, err := net.SplitHostPort(hp)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// resolveTimeout bounds one name lookup.
const resolveTimeout = 10 * time.Second

// resolve turns host:port into ip:port with net.DefaultResolver, the
// name's first address; an IP literal (a reverse proxy's usual -origin)
// needs no lookup.
func resolve(ctx context.Context, hp string) (string, error) {
	addrs, err := resolveAll(ctx, nil, hp)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// maxDialAddrs bounds the addresses of one forward target tried in turn.
const maxDialAddrs = 4

// resolveAll turns host:port into the ip:port of each of the name's
// addresses (at most maxDialAddrs), in the resolver's order of
// preference, with lookup (nil: net.DefaultResolver). A forward target is
// tried address by address while connects fail (nextAddr), as clients and
// Squid do: a name whose first address does not answer (an IPv6 address
// of localhost where the server listens on 127.0.0.1 only, one server of
// several down) is still reached.
func resolveAll(ctx context.Context, lookup lookupFunc, hp string) ([]string, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return []string{hp}, nil
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ips, err := lookup(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no address for %q", host)
	}
	addrs := make([]string, 0, min(len(ips), maxDialAddrs))
	for _, ip := range ips {
		a := net.JoinHostPort(ip.Unmap().String(), port)
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
		if len(addrs) == maxDialAddrs {
			break
		}
	}
	return addrs, nil
}

// connectFailed reports an upstream exchange or tunnel that failed in its
// connect: nothing was sent, so another address of the same name may be
// tried.
func connectFailed(err error) bool {
	e := conn.AsError(err)
	return e != nil && e.Phase == conn.PhaseDial && !e.Written && !e.BodyRead && !e.Responded
}

// nextAddr moves er to the next address of its forward target's name
// after a connect to the current one failed (connectFailed) before any of
// the request or the response moved, and reports whether it did.
func (cc *clientConn) nextAddr(er *engine.Request, err error) bool {
	rs := cc.rs
	if len(rs.addrs) == 0 || !connectFailed(err) || rs.s.headSent || rs.s.pending || rs.s.status != 0 {
		return false
	}
	cc.p.log.Debug("connect failed, trying the target's next address", "addr", er.Upstream.Addr, "next", rs.addrs[0], "err", err)
	er.Upstream.Addr, rs.addrs = rs.addrs[0], rs.addrs[1:]
	return true
}

// Serve serves client connections accepted on ln (a *net.TCPListener)
// until Shutdown. netpoll accepts from the parking lot, which has a
// duplicate of the listening socket.
func (p *proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.closing.Load() || p.started {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	lot, err := newParkLot(ln, p.log, p.metrics.connClosed)
	if err != nil {
		p.mu.Unlock()
		ln.Close()
		return fmt.Errorf("listener: %w", err)
	}
	lot.acceptHook = p.cfg.acceptHook
	p.nameVia(ln.Addr())
	p.lot, p.started = lot, true
	p.mu.Unlock()
	defer close(p.serveDone)
	err = p.evl.Serve(lot)
	if err != nil {
		// netpoll failed to start serving it. When it stops serving
		// (Shutdown), it returns first and then takes the lot's fd out of
		// its epoll set and closes the lot itself: closed here, the fd
		// number could be another connection's by the time netpoll takes
		// it out, and that connection would lose its events.
		lot.Close()
	}
	ln.Close()
	return err
}

// onPrepare runs on the netpoll poller goroutine that accepted c, before c
// is registered for reads: it must not block. It assigns the shard.
func (p *proxy) onPrepare(c netpoll.Connection) context.Context {
	fd := -1
	if fc, ok := c.(interface{ Fd() int }); ok {
		fd = fc.Fd()
	}
	// The lot accepts with SOCK_CLOEXEC: client sockets stay out of the
	// processes we start (nginx, curl in tests; helpers later).
	cc, rec, fromRec := p.lot.takeBack(fd)
	switch {
	case cc != nil:
		cc.unpark(c)
	case fromRec:
		// A connection the lot kept as a record: a new clientConn with
		// its pin key (and so its shard); it is counted open already.
		cc = p.addConn(c, rec.serial)
		p.lot.recN.Add(-1)
	default:
		cc = p.addConn(c, p.nextSh.Add(1)) // never 0: a pin key
		p.metrics.connOpened()
	}
	if h := p.cfg.prepareHook; h != nil {
		h(cc)
	}
	cc.hupMu.Lock()
	cc.hupConn = c
	cc.hupMu.Unlock()
	// Close callbacks run after the last OnRequest of c has returned
	// (netpoll defers them while one runs), on whichever goroutine closed
	// c or netpoll's hang-up goroutine.
	_ = c.AddCloseCallback(func(c netpoll.Connection) error {
		cc.hupMu.Lock()
		if cc.hupConn == c {
			cc.hupConn = nil // its fd is closed from here on
		}
		cc.hupMu.Unlock()
		switch {
		case cc.detaching:
			// netpoll leaves the fd of a detached connection open.
			fd := -1
			if fc, ok := c.(interface{ Fd() int }); ok {
				fd = fc.Fd()
			}
			cc.onDetached(c, fd)
		case cc.state.Load() == stParking:
			cc.onParked(c)
		default:
			cc.unregister()
		}
		return nil
	})
	if p.closing.Load() {
		_ = c.Close()
	}
	return context.WithValue(context.Background(), ccKey{}, cc)
}

type ccKey struct{}

// addConn makes the clientConn of c, whose accept serial (pin key) is
// serial, and adds it to its shard.
func (p *proxy) addConn(c netpoll.Connection, serial uint64) *clientConn {
	sh := p.shards[(serial-1)%uint64(len(p.shards))]
	cc := newClientConn(p, c, sh)
	cc.pinKey = serial
	sh.mu.Lock()
	sh.conns[cc] = struct{}{}
	sh.peak = max(sh.peak, len(sh.conns))
	sh.mu.Unlock()
	return cc
}

// onConnect is netpoll's OnConnect: it runs on a gopool goroutine once
// netpoll has registered c's fd, before c's first OnRequest. Only then
// does the connection become idle, one the sweeper may park or close:
// until netpoll's registration, which follows onPrepare on the poller, a
// close from another goroutine would come before it, and netpoll would
// register a closed fd (TestNoParkBeforeRegistered).
func (p *proxy) onConnect(ctx context.Context, c netpoll.Connection) context.Context {
	cc, _ := ctx.Value(ccKey{}).(*clientConn)
	if cc == nil {
		return ctx
	}
	// A new connection's idle time starts here, and so does that of one
	// the lot gave back, whose client just sent something: not a
	// candidate for the next sweep.
	cc.idleSince.Store(time.Now().UnixNano())
	if cc.state.CompareAndSwap(stJoining, stIdle) && p.closing.Load() {
		// Shutdown's pass over idle connections found it joining.
		cc.closeIfIdle()
	}
	return ctx
}

// onDisconnect is netpoll's OnDisconnect: its poller saw the client's
// FIN or a reset, maybe while a request is being served. It runs on a
// goroutine netpoll starts for the poller's hang-ups, once the poller let
// go of the fd: a look at the state, and for a busy connection, or an
// idle one with a request buffered that OnRequest has yet to take (one
// sent just before the reset), a look at the socket (clientGone), unless
// the connection's close callback has begun (hupMu): the fd may be
// another socket's then (TestClientFINNotTakenForResetOnReusedFd), and a
// detached connection's reset is the parking lot's to see. The usual end
// of a keep-alive connection, idle with nothing buffered, costs no
// system call.
func (p *proxy) onDisconnect(ctx context.Context, c netpoll.Connection) {
	cc, _ := ctx.Value(ccKey{}).(*clientConn)
	if cc == nil {
		return
	}
	if h := p.cfg.disconnectHook; h != nil {
		h(cc)
	}
	cc.hupMu.Lock()
	defer cc.hupMu.Unlock()
	if cc.hupConn != c {
		return
	}
	if st := cc.state.Load(); st != stBusy && (st != stIdle || c.Reader().Len() == 0) {
		return
	}
	if fc, ok := c.(interface{ Fd() int }); ok {
		cc.clientGone(fc.Fd())
	}
}

// onRequest is netpoll's OnRequest: it runs on a gopool goroutine when
// bytes arrived, and again as long as unread bytes remain. Each call
// serves one request. It blocks (reading the rest of the request, waiting
// for the upstream, flushing to the client): that is netpoll's blocking
// handler model, and it holds only this connection.
func (p *proxy) onRequest(ctx context.Context, c netpoll.Connection) error {
	cc, _ := ctx.Value(ccKey{}).(*clientConn)
	if !p.startRequest(cc, c) {
		return nil
	}
	o := cc.serveOne()
	for cc.halfClosed && o == served && cc.r.Len() > 0 {
		// The client pipelined more requests before its half-close:
		// those already in are answered too, in order, on the same
		// duplicate; an incomplete head ends it (readHead).
		o = cc.serveOne()
	}
	if cc.halfClosed && o == tunnelIt && cc.tunnelHead == nil {
		// A CONNECT pipelined behind a request answered after the
		// client's half-close: its tunnel runs on the duplicate, as a
		// CONNECT followed by the half-close does on the detached
		// connection (the end passed on to the target, its answer
		// relayed back).
		cc.runHalfClosedTunnel()
		cc.state.Store(stClosing)
		_ = c.Close()
		return nil
	}
	if cc.halfClosed {
		// The client sends no more requests; its response went out on
		// the duplicate, which ends the connection. A protocol switch
		// that got this far (an interim response went out first) ends
		// with it: its upstream connection is closed.
		_ = cc.halfConn.Close()
		cc.dropTunnel()
		o = closeIt
	}
	switch o {
	case closeIt:
		cc.state.Store(stClosing)
		_ = c.Close()
		return nil
	case lingerIt:
		cc.lingerClose(c)
		return nil
	case detachIt, tunnelIt:
		// The close callbacks, which netpoll runs on this goroutine once
		// this handler returned, hand the connection to serveDetached (or
		// to runTunnel).
		cc.detaching = true
		if d, ok := c.(interface{ Detach() error }); ok && d.Detach() == nil {
			return nil
		}
		cc.detaching = false
		cc.dropTunnel()
		cc.state.Store(stClosing)
		_ = c.Close()
		return nil
	}
	cc.idleSince.Store(time.Now().UnixNano())
	cc.state.Store(stIdle)
	return nil
}

// startRequest moves cc from idle to busy for the bytes c has, and
// reports whether it did. If not, it has dealt with them: they stay for
// onParked if the sweeper is parking the connection, are dropped if it
// lingers, and dropped with it if it was closed as idle. The move comes
// first and the state is looked at only when it failed: a look first and
// the move then took a park that came in between for a close as idle,
// and dropped the request of a client that then waited for its answer
// on the parked connection.
func (p *proxy) startRequest(cc *clientConn, c netpoll.Connection) bool {
	if h := p.cfg.requestHook; h != nil && cc != nil {
		h(cc)
	}
	for cc != nil {
		if cc.state.CompareAndSwap(stIdle, stBusy) {
			return true
		}
		switch cc.state.Load() {
		case stIdle:
			// A park that gave up (park) came and went.
			continue
		case stParking:
			// Bytes came in as the sweeper parks the connection: they
			// stay for onParked, which runs as soon as the sweeper's
			// close is in (netpoll calls again until then).
			runtime.Gosched()
			return false
		case stLinger:
			// The rest of an upload whose answer went out: dropped.
			dropInput(c)
			return false
		}
		break
	}
	// Closed as idle (timeout, shutdown) just as bytes arrived: the
	// keep-alive race, which clients retry. Consume, or netpoll calls
	// again.
	dropInput(c)
	_ = c.Close()
	return false
}

// dropInput drops what c has buffered.
func dropInput(c netpoll.Connection) {
	r := c.Reader()
	_ = r.Skip(r.Len())
	_ = r.Release()
}

// sweep is shard sh's timer goroutine: it closes the connections that
// have been idle for longer than the idle timeout, and parks those idle
// for longer than ParkAfter.
func (p *proxy) sweep(sh *clientShard) {
	defer p.sweepers.Done()
	every := min(max(p.cfg.IdleTimeout/4, 10*time.Millisecond), time.Second)
	parking := p.cfg.ParkAfter > 0
	if parking {
		every = min(every, max(p.cfg.ParkAfter/2, 10*time.Millisecond))
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var victims, parkable []*clientConn
	var parksSeen int64
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			limit := now.Add(-p.cfg.IdleTimeout).UnixNano()
			parkBefore := now.Add(-p.cfg.ParkAfter).UnixNano()
			victims, parkable = victims[:0], parkable[:0]
			sh.mu.Lock()
			lingered := now.Add(-lingerTime).UnixNano()
			for cc := range sh.conns {
				switch since := cc.idleSince.Load(); cc.state.Load() {
				case stIdle:
					if since < limit {
						victims = append(victims, cc)
					} else if parking && since < parkBefore {
						parkable = append(parkable, cc)
					}
				case stParked:
					if since < limit {
						victims = append(victims, cc)
					}
				case stLinger:
					if since < lingered {
						victims = append(victims, cc)
					}
				}
			}
			if sh.peak >= shrinkConnsAt && len(sh.conns) < sh.peak/4 {
				conns := make(map[*clientConn]struct{}, len(sh.conns))
				for cc := range sh.conns {
					conns[cc] = struct{}{}
				}
				sh.conns, sh.peak = conns, len(conns)
			}
			sh.mu.Unlock()
			if sh.id == 0 {
				// The connections the lot keeps as records are in no
				// shard: the first shard's sweeper closes those idle
				// past the idle timeout.
				if lot := p.parkLot(); lot != nil {
					lot.expire(limit)
				}
			}
			// Close outside the lock: close callbacks take it.
			for _, cc := range victims {
				cc.closeIdleQuiet()
			}
			for _, cc := range parkable {
				if p.closing.Load() {
					break
				}
				cc.park()
			}
			// The lists keep no connection alive: a parked one's
			// clientConn is garbage once the lot holds its record.
			clear(victims)
			clear(parkable)
			if parking {
				// Parks since the last tick, by this sweeper or by handlers
				// (a connection's first request), on any shard.
				parks := p.parks.Load()
				p.releaseMemory(now, parks-parksSeen)
				parksSeen = parks
			}
		}
	}
}

// releaseMemory returns the memory that parked connections held to the
// system once enough of them were parked (see releaseAfterParked): after
// a burst of clients went idle, the Go runtime would keep it (netpoll's
// buffers wait in its pools until two collections have passed, the heap
// grown for the burst is returned only slowly). recent is how many were
// parked since the last tick. It waits for the burst to end (a tick that
// parked none), also the first time, so that one release follows the
// whole burst; releaseEvery counts from the first tick that found parks
// since the last release.
func (p *proxy) releaseMemory(now time.Time, recent int64) {
	rel := p.parksRel.Load()
	pending := p.parks.Load() - rel
	if pending <= 0 {
		return
	}
	t := now.UnixNano()
	p.parksSince.CompareAndSwap(0, t)
	last := p.released.Load()
	if pending < releaseAfterParked ||
		!(recent == 0 && t-last >= int64(releaseGap) || t-p.parksSince.Load() >= int64(releaseEvery)) {
		return
	}
	if !p.released.CompareAndSwap(last, t) || !p.parksRel.CompareAndSwap(rel, rel+pending) {
		return
	}
	p.parksSince.Store(0)
	runtime.GC() // the pools' buffers move to their victim caches
	debug.FreeOSMemory()
}

// forward reports a forward proxy: requests go to their targets, directly
// or through parents, rather than to the origins of a reverse proxy.
func (p *proxy) forward() bool { return p.group == "" || p.parents }

// each calls fn for every live client connection.
func (p *proxy) each(fn func(*clientConn)) {
	var all []*clientConn
	for _, sh := range p.shards {
		sh.mu.Lock()
		for cc := range sh.conns {
			all = append(all, cc)
		}
		sh.mu.Unlock()
	}
	for _, cc := range all {
		fn(cc)
	}
}

// parkLot is the parking lot, nil before Serve.
func (p *proxy) parkLot() *parkLot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lot
}

// parked is how many client connections are parked now.
func (p *proxy) parked() int64 {
	lot := p.parkLot()
	if lot == nil {
		return 0
	}
	return lot.parkedN.Load()
}

// live is how many client connections are open: those of the shards, and
// those the parking lot keeps as records.
func (p *proxy) live() int {
	n := 0
	if lot := p.parkLot(); lot != nil {
		n += int(lot.recN.Load())
	}
	for _, sh := range p.shards {
		sh.mu.Lock()
		n += len(sh.conns)
		sh.mu.Unlock()
	}
	return n
}

// Shutdown stops accepting, closes idle client connections, lets requests
// in flight finish until ctx ends (then closes their connections), then
// drains and closes the engine.
func (p *proxy) Shutdown(ctx context.Context) error {
	p.closing.Store(true)
	p.stopOnce.Do(func() { close(p.stop) })
	p.each((*clientConn).closeIfIdle)
	p.mu.Lock()
	started, lot := p.started, p.lot
	p.mu.Unlock()
	if lot != nil {
		lot.closeRecs()
	}
	var err error
	if started {
		// netpoll's Shutdown closes the listener, then closes connections
		// as they become idle until none is left or ctx ends. A Shutdown
		// that comes before Serve handed netpoll the listener finds
		// nothing to stop; try again until Serve returns.
		for {
			err = p.evl.Shutdown(ctx)
			if err != nil {
				break
			}
			select {
			case <-p.serveDone:
			case <-time.After(time.Millisecond):
				continue
			}
			break
		}
	}
	if err == nil {
		// netpoll's Shutdown waits for its own connections only: one
		// detached for a large body (detach.go) is served off netpoll,
		// and is waited for here, until ctx ends like the others.
		err = p.waitLive(ctx)
	}
	if err != nil {
		p.each((*clientConn).shutdownClose)
	}
	// Tunnels are requests in flight too: they may run until ctx ends.
	p.waitTunnels(ctx)
	if derr := p.eng.Drain(ctx); err == nil {
		err = derr
	}
	// Closed connections are gone once their handlers returned.
	deadline := time.Now().Add(forceCloseWait)
	for p.live() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.sweepers.Wait()
	return err
}

// waitLive waits until no client connection is left, or ctx ends (its
// error then).
func (p *proxy) waitLive(ctx context.Context) error {
	for p.live() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// upstreamStatus picks the status and text for an upstream failure.
func upstreamStatus(err error) (int, string) {
	switch {
	case errors.Is(err, engine.ErrPoolTimeout), errors.Is(err, engine.ErrQueueFull):
		// The origin's connection cap (max_conns, max_pending,
		// pending_timeout) turned the request away: nothing went
		// upstream, and a later try may pass.
		return 503, "upstream connection limit reached: " + err.Error()
	case errors.Is(err, conn.ErrConnectTimeout), errors.Is(err, conn.ErrHeaderTimeout), errors.Is(err, conn.ErrReadTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return 504, "upstream timed out: " + err.Error()
	case errors.Is(err, conn.ErrTLSHandshakeTimeout):
		// The upstream took the connection but did not finish the
		// handshake in time: a timeout, as a connect timeout is.
		return 504, "upstream timed out: upstream TLS: " + tlsReason(err)
	case errors.Is(err, engine.ErrOverloaded):
		return 503, "proxy overloaded: " + err.Error()
	case errors.Is(err, engine.ErrClosed):
		return 503, "proxy shutting down"
	case errors.Is(err, engine.ErrPinnedGone):
		return 502, pinnedGoneMsg
	case errors.Is(err, engine.ErrNoPeer):
		return 503, "no peer available: every one is down or drained"
	}
	var coded *codingsError
	if errors.As(err, &coded) {
		return 502, coded.Error()
	}
	if ce := conn.AsError(err); ce != nil && (ce.Phase == conn.PhaseTLS || tlsAlert(err) != nil) {
		return 502, "upstream TLS: " + tlsReason(err)
	}
	if errors.Is(err, engine.ErrTunnelRefused) {
		return 502, "upstream tunnel refused: " + err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 504, "upstream timed out: " + err.Error()
	}
	return 502, "upstream error: " + err.Error()
}

// tlsReason names why a TLS handshake failed: the certificate problem
// when there is one ("certificate signed by unknown authority"), the
// upstream's alert when it sent one ("alert from upstream: tls:
// certificate required"), else the error.
func tlsReason(err error) string {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) && cve.Err != nil {
		return strings.TrimPrefix(cve.Err.Error(), "x509: ")
	}
	if a := tlsAlert(err); a != nil {
		return "alert from upstream: " + a.Error()
	}
	return err.Error()
}

// tlsAlert returns the TLS alert the upstream sent, found in err, or nil.
// crypto/tls reports an alert received on a TCP connection as a
// *net.OpError whose Op is "remote error". With TLS 1.3 a server that
// refuses the client certificate, or wants one and got none, sends its
// alert after the client's handshake is done: the request fails reading
// the response, not in the handshake, and is a TLS failure all the same.
func tlsAlert(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil {
		return oe.Err
	}
	var ae tls.AlertError // QUIC's alerts
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

func reason(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 414:
		return "URI Too Long"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	case 508:
		return "Loop Detected"
	}
	return "Error"
}
