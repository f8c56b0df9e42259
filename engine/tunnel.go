package engine

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// Parent is a parent proxy reached with CONNECT.
type Parent struct {
	// Addr is the parent's resolved ip:port.
	Addr string
	// User and Password are sent as Basic Proxy-Authorization on the
	// CONNECT (or as Digest, once the parent asked for Digest: its 407 is
	// answered, and later CONNECTs answer the remembered challenge up
	// front); an empty User sends none. They are part of the pool key as
	// a hash, so connections never cross identities.
	User, Password string
	// TLS, when set, speaks TLS to the parent itself: the CONNECT goes
	// over a TLS connection verified as TLS says (its ServerName, when
	// empty, is the host of Addr). Like an Upstream's, a *TLS must not
	// change once used.
	TLS *TLS
}

// parentRoute is a Parent ready for use: its address, the key's Via
// naming it and, for a TLS-speaking parent, its TLS configuration with a
// session cache of its own. One is made per route key and reused. (The
// credentials sent on CONNECT are tunnelAuth's.)
type parentRoute struct {
	addr string
	via  string      // the key's Via naming the route
	tls  *tls.Config // nil: plaintext to the parent
	hs   time.Duration
}

// dial connects to the parent (and runs the TLS handshake with it).
func (r *parentRoute) dial(ctx context.Context, connect time.Duration) (net.Conn, error) {
	raw, err := conn.DialGo(ctx, r.addr, connect)
	if err != nil || r.tls == nil {
		return raw, err
	}
	return conn.HandshakeTLS(ctx, r.addr, raw, r.hs, r.tls)
}

// parentRouteFor returns p's route and the key fields naming it: Via
// ("connect=<addr>", and the parent's TLS identity) and Cred.
func (e *Engine) parentRouteFor(p *Parent) (r *parentRoute, via, cred string, err error) {
	if p.Addr == "" {
		return nil, "", "", fmt.Errorf("%w: parent without an address", ErrBadRequest)
	}
	via = "connect=" + p.Addr
	var prof *tlsProfile
	sni := ""
	if p.TLS != nil {
		if prof = e.profile(p.TLS); prof.err != nil {
			return nil, "", "", prof.err
		}
		sni = p.TLS.ServerName
		if sni == "" {
			sni = p.Addr
			if h, _, err := net.SplitHostPort(p.Addr); err == nil {
				sni = h
			}
		}
		via += ";tls=sni=" + sni + ";" + prof.id
	}
	cred = p.scope()
	rk := routeKey{via: via, cred: cred}
	if v, ok := e.tls.routes.Load(rk); ok {
		return v.(*parentRoute), via, cred, nil
	}
	r = &parentRoute{addr: p.Addr, via: via, hs: e.cfg.TLSHandshakeTimeout}
	if prof != nil {
		r.tls = prof.base.Clone()
		r.tls.ServerName = sni
		r.tls.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	v, loaded := e.tls.routes.LoadOrStore(rk, r)
	if !loaded && r.tls != nil && r.tls.InsecureSkipVerify {
		e.cfg.Logger.Warn("engine: TLS certificate verification is OFF for this parent proxy; anyone on the path can impersonate it",
			"parent", p.Addr)
	}
	return v.(*parentRoute), via, cred, nil
}

// routeKey names a parent route: the parent, its TLS identity and the
// credentials' scope.
type routeKey struct{ via, cred string }

// scope is the credential scope for the pool key: a hash, never the
// secret.
func (p *Parent) scope() string {
	if p.User == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("basic\x00" + p.User + "\x00" + p.Password))
	return hex.EncodeToString(sum[:8])
}

// TunnelRequest asks for a tunnel to Target.
type TunnelRequest struct {
	// Target is where the tunnel's bytes go, "host:port". Without a
	// parent it is dialed and must be a resolved ip:port; through a
	// parent it is the CONNECT request target, which the parent resolves.
	Target string
	// Via is the parent proxy to CONNECT through; nil dials Target
	// directly.
	Via *Parent
	// Group, instead of Via, names a peer group of parent proxies
	// (Peer.Parent): the group's balancer picks one (on HashKey for
	// balance.Hash, default Target), whose credentials and TLS are used.
	// The outcome feeds the peer's passive health: a failed connect, or
	// a connection closed or reset without an answer, counts against it,
	// any answer to the CONNECT (a refusal included) counts for it. A
	// failed connect (TCP or TLS to the parent: nothing was sent) moves
	// the tunnel to another parent of the group not tried yet; once all
	// were tried, the last error is returned. The tunnel counts against
	// the peer's MaxConns with its requests: at the cap it waits in the
	// peer's queue (MaxPending, PendingTimeout), and fails as they do,
	// PhasePoolWait, having sent nothing; a drain meanwhile moves it to
	// another parent.
	Group, HashKey string
	// ProxyAuthorization is the client's own Proxy-Authorization value,
	// if it sent one. It is forwarded to the parent only when the proxy
	// login is LoginPassThrough and the parent has no credentials of its
	// own; otherwise it is dropped (it was meant for the proxy embedding
	// the engine).
	ProxyAuthorization string
	// ViaValue, when not empty, is the Via field value the CONNECT to a
	// parent carries (RFC 9110 §7.6.3): the client's Via with the
	// proxy's own element added, so that a parent can tell a CONNECT
	// that went round back to it. A direct tunnel sends no request and
	// ignores it.
	ViaValue string
	// Auth, when set, is how this CONNECT authenticates to the parent
	// (its Proxy login; see Auth); otherwise Config.Auth decides, called
	// with the parent's Addr (and Group). A parent's own User and
	// Password take precedence over both.
	Auth *Auth
	// PinKey names the client connection the CONNECT came on (zero for
	// none). When the parent asks for a connection-based handshake (NTLM,
	// Negotiate), its refusal is returned and its connection kept,
	// pinned to PinKey: the next Tunnel with that key is sent on that
	// connection (whatever Via or Group say, as long as they name the
	// same parent), and fails with ErrPinnedGone if it is gone. Unpin
	// closes a pinned connection; so does PinnedIdleTimeout.
	PinKey uint64
}

// TunnelResponse is a parent's answer to CONNECT (nil for a direct
// tunnel).
type TunnelResponse = conn.ConnectResponse

// ErrTunnelRefused is conn.ErrTunnelRefused: the parent answered CONNECT
// with a non-2xx status.
var ErrTunnelRefused = conn.ErrTunnelRefused

// Tunnel opens a tunnel to req.Target: a direct TCP connection, or one to
// the parent on which CONNECT succeeded. The dial (and the CONNECT
// exchange) runs on the engine's dial pool, or on a goroutine of its own
// when the pool is full; the connection counts against
// MaxConnsPerUpstream of its key (Stats shows it under
// "<target> via=tunnel" or "<target> via=connect=<parent>", followed by
// " cred=<hash>" with credentials) until closed,
// and is never pooled or retried. The caller owns the returned connection
// (a *conn.TunnelConn holding any byte the parent sent after its answer)
// and must close it; Relay relays it to a client.
//
// Through a parent, a 407 with a Basic or Digest challenge is answered
// when the engine holds credentials for the parent (the Parent's User and
// Password, or a LoginOwn proxy login) and the CONNECT is sent again: on
// the same connection when the parent keeps it, else on a new one, for at
// most Auth.MaxRounds challenges (Digest stale=true rounds aside). A
// Digest challenge answered once is answered up front by later CONNECTs
// to the same parent. See TunnelRequest.PinKey for NTLM and Negotiate.
//
// A parent's non-2xx answer (its last one) returns a nil connection, the
// answer (status, header, raw head and body, to relay a 407 to the
// client, say) and an error matching ErrTunnelRefused. A 407 says
// ClientChallenge when the client's ProxyAuthorization goes to that
// parent (LoginPassThrough): only then can the client answer it, and a
// proxy relay its Proxy-Authenticate (see AuthNote.ClientProxy); any
// answer says ClientProxy then, and only then is its
// Proxy-Authentication-Info the client's. Other failures are
// *conn.Error values: PhaseDial, PhaseTunnel, PhaseProtocol, or
// PhasePoolWait when the cap did not free up within PendingTimeout or,
// matching ErrPinnedGone, when the connection pinned to PinKey is gone.
func (e *Engine) Tunnel(ctx context.Context, req TunnelRequest) (net.Conn, *TunnelResponse, error) {
	if req.Target == "" {
		return nil, nil, fmt.Errorf("%w: tunnel without a target", ErrBadRequest)
	}
	if ctx == nil {
		return nil, nil, fmt.Errorf("%w: nil context", ErrBadRequest)
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, nil, ErrClosed
	}
	if req.Group != "" && req.Via != nil {
		return nil, nil, fmt.Errorf("%w: tunnel with both Via and Group", ErrBadRequest)
	}
	if !validFieldValue(req.ProxyAuthorization) {
		return nil, nil, fmt.Errorf("%w: control characters in the Proxy-Authorization", ErrBadRequest)
	}
	if !validFieldValue(req.ViaValue) {
		return nil, nil, fmt.Errorf("%w: control characters in the Via", ErrBadRequest)
	}
	if req.PinKey != 0 {
		if ps, err := e.tpins.take(req); ps != nil || err != nil {
			if err != nil {
				return nil, nil, err
			}
			return e.tunnelPinned(ctx, req, ps)
		}
	}
	if req.Group != "" {
		hk := req.HashKey
		if hk == "" {
			hk = req.Target
		}
		return e.tunnelGroup(ctx, req, hk)
	}
	return e.tunnel(ctx, req, req.Via, nil, nil)
}

// tunnelGroup opens a tunnel through a parent of the group req.Group,
// picked on hashKey. A connect to the parent that fails (nothing was
// sent) moves the tunnel to another parent of the group that it has not
// tried, as a request's failed connect does; once every parent was
// tried, the last error is returned.
func (e *Engine) tunnelGroup(ctx context.Context, req TunnelRequest, hashKey string) (net.Conn, *TunnelResponse, error) {
	var tried uint64
	var from *peer // the peer whose connect failed, when moving
	var last error
	for {
		g, p, probe, err := e.pickParent(req.Group, hashKey, tried)
		if err != nil {
			if last != nil && errors.Is(err, ErrNoPeer) {
				return nil, nil, last
			}
			return nil, nil, err
		}
		if from != nil {
			from.rerouted.Add(1)
		}
		// The tunnel is load on p from now until it closes (or fails to
		// open), for the balancers that weigh load.
		p.tunnels.Add(1)
		c, resp, err := e.tunnel(ctx, req, p.parent, func() { p.tunnels.Add(-1) }, p)
		if c == nil {
			p.tunnels.Add(-1)
		}
		o := classify(err)
		if err != nil && resp != nil {
			o = healthy // the parent answered
		}
		g.report(p, probe, o, false, err, e.cfg.Logger.Info)
		ce := conn.AsError(err)
		// A drain of the peer while the tunnel waited for a slot of its
		// cap: nothing was sent, as after a failed connect.
		drained := ce != nil && ce.Phase == conn.PhasePoolWait && errors.Is(err, poolset.ErrDraining)
		if (o != failed || ce == nil || ce.Phase != conn.PhaseDial && ce.Phase != conn.PhaseTLS) && !drained || ctx.Err() != nil {
			return c, resp, err
		}
		tried |= 1 << uint(p.idx)
		from, last = p, err
	}
}

// tunnel opens a tunnel on a new connection, through parent when not nil.
// onClose, when not nil, runs when the returned tunnel is closed. through,
// when not nil, is the group's peer that parent is: the tunnel is a
// connection to it, and holds a slot of its connection cap (Peer.MaxConns,
// shared with its requests) from before the CONNECT until the tunnel, or
// the connection pinned for its handshake, closes.
func (e *Engine) tunnel(ctx context.Context, req TunnelRequest, parent *Parent, onClose func(), through *peer) (net.Conn, *TunnelResponse, error) {
	key := poolset.Key{Addr: req.Target, Via: "tunnel"}
	var route *parentRoute
	var ta *tunnelAuth
	dialAddr := req.Target
	if parent != nil {
		var err error
		if route, key.Via, key.Cred, err = e.parentRouteFor(parent); err != nil {
			return nil, nil, err
		}
		ta = e.newTunnelAuth(req, parent, &key)
		dialAddr = parent.Addr
	}
	// Opening gives up when the engine closes, as a request would.
	ctx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	stopRoot := context.AfterFunc(e.root, cancelOpen)
	defer stopRoot()
	ctr := e.stats.For(key)
	fail := func(err error) (net.Conn, *TunnelResponse, error) {
		ctr.Requests.Add(1)
		ctr.Failed(ctx, err)
		return nil, nil, err
	}

	// unhold gives back the slot of the parent's cap; kept says that the
	// tunnel or the pin took it over.
	unhold, kept := func() {}, false
	if through != nil {
		hctx, cancel := context.WithTimeout(ctx, through.cfg.PendingTimeout)
		err := e.pool.Hold(hctx, through.key)
		cancel()
		if err != nil {
			return fail(&conn.Error{Phase: conn.PhasePoolWait, Addr: through.cfg.Addr, Err: err})
		}
		var once sync.Once
		pool, held := e.pool, through.key
		unhold = func() { once.Do(func() { pool.Unhold(held) }) }
		defer func() {
			if !kept {
				unhold()
			}
		}()
	}

	wctx, cancel := context.WithTimeout(ctx, e.cfg.PendingTimeout)
	g, err := e.pool.Acquire(wctx, key)
	cancel()
	if err != nil {
		return fail(&conn.Error{Phase: conn.PhasePoolWait, Addr: req.Target, Err: err})
	}
	if g.Conn != nil {
		// Nothing is ever pooled under a tunnel key; should a connection
		// appear there, it is not a tunnel.
		_ = g.Conn.Close()
		e.pool.Closed(key, poolset.Busy)
		return fail(&conn.Error{Phase: conn.PhasePoolWait, Addr: req.Target, Err: fmt.Errorf("%w: pooled connection under a tunnel key", ErrBadRequest)})
	}

	ch := make(chan connectResult, 1)
	job := func() {
		if route == nil {
			raw, err := conn.DialGo(ctx, dialAddr, e.cfg.ConnectTimeout)
			if err != nil {
				ch <- connectResult{err: err}
				return
			}
			ch <- connectResult{tc: conn.NewTunnelConn(raw, nil, nil)}
			return
		}
		ch <- e.connectRounds(ctx, route, ta, nil)
	}
	if err := e.shards.Go(job); err != nil {
		e.pool.DialFailed(key)
		return fail(&conn.Error{Phase: conn.PhaseDial, Addr: dialAddr, Err: err})
	}
	// The job gives up when ctx ends (the dial and the CONNECT exchange
	// watch it), so waiting for it is bounded.
	r := <-ch
	ctr.Requests.Add(1)
	ctr.AuthRounds.Add(uint64(r.rounds))
	ta.markClientChallenge(r.resp)
	if r.err != nil {
		// A refusal is the parent's answer (a 407, a 403), as to a GET,
		// where Stats count no failure either: the upstream did not
		// fail.
		refused := r.resp != nil && errors.Is(r.err, ErrTunnelRefused)
		if r.pin != nil {
			// A connection-based handshake goes on on this connection.
			e.pool.Dialed(key)
			e.pool.Pin(key)
			kept = true
			e.tpins.put(e, req.PinKey, &tunnelPin{nc: r.pin, key: key, route: route,
				group: req.Group, parent: parent, unhold: unhold})
			if req.Group != "" && e.peerDraining(req.Group, parent.Addr) {
				// DrainPeer ran while this CONNECT was in flight, before
				// there was a pin for it to end: it ends now, as there.
				e.tpins.endPeer(e, req.Group, parent.Addr)
			}
		} else if ctx.Err() != nil || refused {
			// Given up by the caller or the engine, or refused.
			e.pool.DialCanceled(key)
		} else {
			e.pool.DialFailed(key)
		}
		if !refused {
			ctr.Failed(ctx, r.err)
		}
		return nil, r.resp, r.err
	}
	e.pool.Dialed(key)
	ctr.Tunnels.Add(1)
	pool := e.pool
	kept = true
	tc := conn.NewTunnelConn(r.tc.Conn, takeBuffered(r.tc), func() {
		pool.Closed(key, poolset.Busy)
		unhold()
		if onClose != nil {
			onClose()
		}
	})
	return tc, r.resp, nil
}

// takeBuffered returns the bytes a TunnelConn holds unread.
func takeBuffered(t *conn.TunnelConn) []byte {
	n := t.Buffered()
	if n == 0 {
		return nil
	}
	p := make([]byte, n)
	_, _ = t.Read(p) // served from the buffer: never blocks
	return p
}

// Relay copies between a and b until both directions end, passing a
// half-close on, and closes both (with a TCP reset after a peer's error);
// see conn.Relay. idle (> 0) ends a relay
// that moved no byte for that long. It is conn.Relay, here so that
// callers of Tunnel need only this package.
func Relay(ctx context.Context, a, b net.Conn, idle time.Duration) (conn.RelayStats, error) {
	return conn.Relay(ctx, a, b, idle)
}
