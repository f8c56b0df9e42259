package engine

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// Parent is a parent proxy reached with CONNECT.
type Parent struct {
	// Addr is the parent's resolved ip:port.
	Addr string
	// User and Password are sent as Basic Proxy-Authorization on the
	// CONNECT; an empty User sends none. They are part of the pool key as
	// a hash, so connections never cross identities.
	User, Password string
}

// parentRoute is a Parent ready for use: the header lines to send.
type parentRoute struct {
	addr   string
	header []string
}

func (p *Parent) route() *parentRoute {
	r := &parentRoute{addr: p.Addr}
	if p.User != "" {
		r.header = []string{"Proxy-Authorization: Basic " +
			base64.StdEncoding.EncodeToString([]byte(p.User+":"+p.Password))}
	}
	return r
}

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
}

// TunnelResponse is a parent's answer to CONNECT (nil for a direct
// tunnel).
type TunnelResponse = conn.ConnectResponse

// ErrTunnelRefused is conn.ErrTunnelRefused: the parent answered CONNECT
// with a non-2xx status.
var ErrTunnelRefused = conn.ErrTunnelRefused

// Tunnel opens a tunnel to req.Target: a direct TCP connection, or one to
// the parent on which CONNECT succeeded. The dial (and the CONNECT
// exchange) runs on the engine's dial pool; the connection counts against
// MaxConnsPerUpstream of its key (Stats shows it under
// "<target> via=tunnel" or "<target> via=connect=<parent>", followed by
// " cred=<hash>" with credentials) until closed,
// and is never pooled or retried. The caller owns the returned connection
// (a *conn.TunnelConn holding any byte the parent sent after its answer)
// and must close it; Relay relays it to a client.
//
// A parent's non-2xx answer returns a nil connection, the answer (status,
// header, raw head and body, to relay a 407 to the client, say) and an
// error matching ErrTunnelRefused. Other failures are *conn.Error values:
// PhaseDial, PhaseTunnel, PhaseProtocol, or PhasePoolWait when the cap
// did not free up within PendingTimeout.
func (e *Engine) Tunnel(ctx context.Context, req TunnelRequest) (net.Conn, *TunnelResponse, error) {
	if req.Target == "" || req.Via != nil && req.Via.Addr == "" {
		return nil, nil, fmt.Errorf("%w: tunnel without a target or parent address", ErrBadRequest)
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, nil, ErrClosed
	}
	key := poolset.Key{Addr: req.Target, Via: "tunnel"}
	var route *parentRoute
	dialAddr := req.Target
	if req.Via != nil {
		key.Via = "connect=" + req.Via.Addr
		key.Cred = req.Via.scope()
		route = req.Via.route()
		dialAddr = req.Via.Addr
	}
	// Opening gives up when the engine closes, as a request would.
	ctx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	stopRoot := context.AfterFunc(e.root, cancelOpen)
	defer stopRoot()
	ctr := e.stats.For(key)
	fail := func(err error) (net.Conn, *TunnelResponse, error) {
		ctr.Requests.Add(1)
		if ce := conn.AsError(err); ce != nil {
			ctr.Errors[ce.Phase].Add(1)
		}
		return nil, nil, err
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

	type result struct {
		tc   *conn.TunnelConn
		resp *TunnelResponse
		err  error
	}
	ch := make(chan result, 1)
	job := func() {
		raw, err := conn.DialGo(ctx, dialAddr, e.cfg.ConnectTimeout)
		if err != nil {
			ch <- result{err: err}
			return
		}
		if route == nil {
			ch <- result{tc: conn.NewTunnelConn(raw, nil, nil)}
			return
		}
		tc, resp, err := conn.Connect(ctx, raw, route.addr, req.Target, route.header, e.cfg.ConnectTimeout)
		ch <- result{tc: tc, resp: resp, err: err}
	}
	if err := e.shards.Go(job); err != nil {
		e.pool.DialFailed(key)
		return fail(&conn.Error{Phase: conn.PhaseDial, Addr: dialAddr, Err: err})
	}
	// The job gives up when ctx ends (the dial and the CONNECT exchange
	// watch it), so waiting for it is bounded.
	r := <-ch
	if r.err != nil {
		e.pool.DialFailed(key)
		ctr.Requests.Add(1)
		if ce := conn.AsError(r.err); ce != nil {
			ctr.Errors[ce.Phase].Add(1)
		}
		return nil, r.resp, r.err
	}
	e.pool.Dialed(key)
	ctr.Requests.Add(1)
	ctr.Tunnels.Add(1)
	pool := e.pool
	tc := conn.NewTunnelConn(r.tc.Conn, takeBuffered(r.tc), func() { pool.Closed(key, poolset.Busy) })
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
// half-close on, and closes both; see conn.Relay. idle (> 0) ends a relay
// that moved no byte for that long. It is conn.Relay, here so that
// callers of Tunnel need only this package.
func Relay(ctx context.Context, a, b net.Conn, idle time.Duration) (conn.RelayStats, error) {
	return conn.Relay(ctx, a, b, idle)
}
