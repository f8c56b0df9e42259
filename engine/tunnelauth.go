package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine/auth"
	"github.com/serverside-go/serverside/poolset"
)

// Authentication of CONNECT to a parent proxy.
//
// A CONNECT has no body, so answering a 407 costs only a round trip: the
// engine answers Basic and Digest itself, on the same connection when the
// parent keeps it. NTLM and Negotiate authenticate the connection, not
// the request: the engine cannot answer them (it holds no such
// credentials) and bounces the challenge to the client, keeping the
// parent connection for the client's next CONNECT, which carries the
// next handshake message (tunnelPins).

// tunnelAuth is one Tunnel call's authentication to its parent.
type tunnelAuth struct {
	e      *Engine
	target string
	pinKey uint64
	// own are the credentials the engine answers challenges with: the
	// parent's, or the proxy login's with LoginOwn; nil for none.
	own *Credentials
	// pa is the Proxy-Authorization sent, "" for none.
	pa string
	// via is the Via sent (TunnelRequest.ViaValue), "" for none.
	via string
	// passConn: pa is the client's connection-based credentials (an
	// NTLM or Negotiate handshake message).
	passConn bool
	// pass: the client's credentials reach the parent (LoginPassThrough,
	// no credentials of the parent's own), so a connection-based
	// handshake can go on and is worth a pinned connection.
	pass      bool
	maxRounds int
	dkey      digestKey

	sentBasic, digest, preDigest bool
	rounds, stales               int
}

// newTunnelAuth decides what a CONNECT through p sends, and adds the
// credentials' scope to key.
func (e *Engine) newTunnelAuth(req TunnelRequest, p *Parent, key *poolset.Key) *tunnelAuth {
	a := &tunnelAuth{e: e, target: req.Target, pinKey: req.PinKey, via: req.ViaValue, maxRounds: DefaultAuthRounds}
	pol := req.Auth
	if pol == nil && e.cfg.Auth != nil {
		pol = e.cfg.Auth(Upstream{Addr: p.Addr, Group: req.Group})
	}
	if pol != nil && pol.MaxRounds > 0 {
		a.maxRounds = pol.MaxRounds
	}
	preemptive := false
	switch {
	case p.User != "":
		// The parent's own credentials (already in key.Cred) replace any
		// other, as for requests through a parent peer.
		a.own = &Credentials{User: p.User, Password: p.Password}
		preemptive = true
	case pol != nil && pol.Proxy.Mode == LoginOwn:
		c := pol.Proxy.Credentials
		a.own = &c
		preemptive = pol.Proxy.Preemptive
		// After a "+", as the scopes of requests through a parent
		// (setupAuth): a key of this parent's tunnels (peer.owns).
		key.Cred = "+" + credScope(&Auth{Proxy: pol.Proxy}, nil)
	case pol != nil && pol.Proxy.Mode == LoginPassThrough:
		a.pass = true
		a.pa = req.ProxyAuthorization
		if a.pa == "" {
			break
		}
		if auth.ConnectionBased(auth.CredentialsScheme(a.pa)) {
			// Handshake messages change with every CONNECT and live on a
			// pinned connection: they are no identity scope.
			a.passConn = true
		} else {
			key.Cred = "+" + credScope(&Auth{}, []byte(a.pa))
		}
	}
	a.dkey = digestKey{key: poolset.Key{Via: key.Via, Cred: key.Cred}, role: 1}
	if a.own != nil {
		// A Digest challenge of this parent answered before is answered
		// up front (sparing the round trip, and the parent a Basic
		// password it did not ask for).
		if v, ok := e.digests.authorizeKey(a.dkey, "CONNECT", a.target); ok {
			a.pa, a.preDigest = v, true
		} else if preemptive || e.digests.basicKnown(a.dkey) {
			a.pa, a.sentBasic = auth.Basic(*a.own), true
		}
	}
	return a
}

// header is the CONNECT's extra header lines.
func (a *tunnelAuth) header() []string {
	var h []string
	if a.via != "" {
		h = append(h, "Via: "+a.via)
	}
	if a.pa != "" {
		h = append(h, "Proxy-Authorization: "+a.pa)
	}
	return h
}

// answer decides whether the engine answers the parent's refusal, and
// computes the credentials when it does. The rules are the request
// path's (authState.answer): Basic once, Digest once per round unless the
// nonce went stale, at most maxRounds rounds.
func (a *tunnelAuth) answer(resp *TunnelResponse) (string, bool) {
	if resp.Status != 407 || a.own == nil {
		return "", false
	}
	cs, err := auth.ParseChallenges(resp.Header.Values("Proxy-Authenticate")...)
	if err != nil {
		return "", false
	}
	ch := auth.Pick(cs)
	if ch == nil {
		return "", false
	}
	switch {
	case ch.Is("Basic"):
		if a.sentBasic || a.rounds >= a.maxRounds {
			if a.sentBasic {
				a.e.digests.forgetBasic(a.dkey) // refused: do not offer it again
			}
			return "", false // our credentials were refused
		}
		a.sentBasic = true
		a.rounds++
		a.e.digests.rememberBasic(a.dkey)
		return auth.Basic(*a.own), true
	case auth.Stale(ch) && (a.digest || a.preDigest):
		if a.stales >= maxStale {
			return "", false
		}
		a.stales++
	default:
		if a.digest || a.rounds >= a.maxRounds {
			if a.digest {
				a.e.digests.forget(a.dkey) // refused: do not offer it again
			}
			return "", false
		}
		a.digest = true
		a.rounds++
	}
	d, err := auth.NewDigest(ch, *a.own)
	if err != nil {
		return "", false
	}
	// RFC 7616 §3.4: the uri is the request-target, for CONNECT the
	// authority.
	v := d.Authorize("CONNECT", a.target)
	a.e.digests.store(a.dkey, d)
	return v, true
}

// markClientChallenge marks an answer in resp to a CONNECT whose
// Proxy-Authorization is the client's (TunnelResponse's ClientProxy),
// and a 407 there as one the client can answer (ClientChallenge).
func (a *tunnelAuth) markClientChallenge(resp *TunnelResponse) {
	if a != nil && a.pass && resp != nil {
		resp.ClientProxy = true
		resp.ClientChallenge = resp.Status == 407
	}
}

// connectionBased reports a refusal that continues a connection-based
// handshake: a 407 offering NTLM or Negotiate, or answering such
// credentials, when the client's credentials reach the parent (without
// them the client cannot go on, and a pinned connection would only wait).
func (a *tunnelAuth) connectionBased(resp *TunnelResponse) bool {
	if resp.Status != 407 || !a.pass {
		return false
	}
	if a.passConn {
		return true
	}
	for _, v := range resp.Header.Values("Proxy-Authenticate") {
		cs, err := auth.ParseChallenges(v)
		if err != nil {
			// An unparsable field still names its scheme first.
			if auth.ConnectionBased(auth.CredentialsScheme(v)) {
				return true
			}
			continue
		}
		if auth.AnyConnectionBased(cs) {
			return true
		}
	}
	return false
}

// connectResult is the outcome of the CONNECT exchanges of one Tunnel.
type connectResult struct {
	tc   *conn.TunnelConn
	resp *TunnelResponse
	err  error
	// pin is a refused CONNECT's connection, left open for the
	// connection-based handshake the refusal continues.
	pin    net.Conn
	rounds int // challenges answered
}

// connectRounds sends the CONNECT on nc (nil: a new connection to the
// parent) and answers the parent's challenges it can. A connection the
// parent closes after a challenge is replaced by a new one, unless it was
// a pinned connection: a handshake never moves to another connection.
func (e *Engine) connectRounds(ctx context.Context, route *parentRoute, a *tunnelAuth, nc net.Conn) connectResult {
	pinned := nc != nil
	var r connectResult
	for {
		if nc == nil {
			raw, err := route.dial(ctx, e.cfg.ConnectTimeout)
			if err != nil {
				r.err = err
				return r
			}
			nc = raw
		}
		tc, resp, kept, err := conn.ConnectKeep(ctx, nc, route.addr, a.target, a.header(), e.cfg.ConnectTimeout)
		r.tc, r.resp, r.err = tc, resp, err
		if err == nil || resp == nil {
			return r
		}
		if !kept {
			nc = nil
		}
		if kept || !pinned {
			if v, ok := a.answer(resp); ok {
				a.pa, a.passConn = v, false
				r.rounds++
				continue
			}
		}
		if kept && a.pinKey != 0 && a.connectionBased(resp) {
			r.pin = nc
			return r
		}
		if kept {
			_ = nc.Close()
		}
		return r
	}
}

// tunnelPin is a parent connection pinned to a client connection for a
// connection-based handshake between CONNECTs. A pin whose connection is
// gone (idle timeout, a failed exchange) stays as a tombstone (nc nil):
// Tunnel calls with its key fail with ErrPinnedGone until Unpin.
type tunnelPin struct {
	nc     net.Conn // nil: gone
	key    poolset.Key
	route  *parentRoute
	parent *Parent
	group  string
	busy   bool      // a Tunnel call uses nc
	ending bool      // endPeer ran while busy: the pin ends after the call
	idle   time.Time // when the last Tunnel call on nc ended
	timer  *time.Timer
	// unhold gives back the slot of the parent peer's connection cap
	// that the connection holds (Pool.Hold), once it closes; nil for a
	// parent that is no group's peer.
	unhold func()
}

// closed accounts for the pin's connection, closed: the pool's pinned
// count of its tunnel key, and the slot it held of its parent's cap.
func (p *tunnelPin) closed(e *Engine) {
	e.pool.Closed(p.key, poolset.Pinned)
	if p.unhold != nil {
		p.unhold()
	}
}

// tunnelPins are the pinned tunnel connections by pin key. They are Go
// net connections owned by the engine, apart from the shards' pinned
// sessions (netpoll connections carrying requests); Unpin ends both.
type tunnelPins struct {
	mu     sync.Mutex
	m      map[uint64]*tunnelPin
	closed bool
}

func pinnedGone(addr string, pinKey uint64, why error) error {
	if why == nil {
		why = errors.New("connection closed")
	}
	return &conn.Error{Phase: conn.PhasePoolWait, Addr: addr,
		Err: fmt.Errorf("%w: tunnel session %d: %w", ErrPinnedGone, pinKey, why)}
}

// take hands req the pinned connection of req.PinKey, marked busy. It
// returns nil and no error when the key has no pin.
func (ps *tunnelPins) take(req TunnelRequest) (*tunnelPin, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.m[req.PinKey]
	switch {
	case p == nil:
		return nil, nil
	case p.nc == nil:
		return nil, pinnedGone(req.Target, req.PinKey, nil)
	case p.busy:
		return nil, fmt.Errorf("%w: tunnel session %d is in use", ErrBadRequest, req.PinKey)
	}
	same := req.Group != "" && req.Group == p.group ||
		req.Group == "" && p.group == "" && req.Via != nil &&
			req.Via.Addr == p.parent.Addr && req.Via.User == p.parent.User && req.Via.Password == p.parent.Password
	if !same {
		return nil, pinnedGone(req.Target, req.PinKey, fmt.Errorf("the session belongs to parent %s", p.parent.Addr))
	}
	p.busy = true
	p.timer.Stop()
	return p, nil
}

// put pins p under key. The pool already counts p's connection as pinned.
func (ps *tunnelPins) put(e *Engine, key uint64, p *tunnelPin) {
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		_ = p.nc.Close()
		p.closed(e)
		return
	}
	if ps.m == nil {
		ps.m = make(map[uint64]*tunnelPin)
	}
	old := ps.m[key]
	ps.m[key] = p
	p.idle = time.Now()
	p.timer = time.AfterFunc(e.cfg.PinnedIdleTimeout, func() { ps.expire(e, key, p) })
	ps.mu.Unlock()
	if old != nil {
		ps.drop(e, old)
	}
}

// release gives back p, still pinned, after a Tunnel call used it. It
// reports false when p was unpinned meanwhile: its connection is then the
// caller's to close and account for. A pin whose peer endPeer drained
// during the call ends here, as an idle one did then: its connection
// closed, a tombstone left, and the embedder told before the call
// returns.
func (ps *tunnelPins) release(e *Engine, key uint64, p *tunnelPin) bool {
	ps.mu.Lock()
	if ps.m[key] != p {
		ps.mu.Unlock()
		return false
	}
	if p.ending {
		nc := p.nc
		p.nc, p.busy = nil, false
		ps.mu.Unlock()
		_ = nc.Close()
		p.closed(e)
		if f := e.cfg.OnPinnedClosed; f != nil {
			f(key)
		}
		return true
	}
	p.busy = false
	p.idle = time.Now()
	p.timer.Reset(e.cfg.PinnedIdleTimeout)
	ps.mu.Unlock()
	return true
}

// end ends p after a Tunnel call on it closed or took over its
// connection: a tombstone stays when the connection failed. It reports
// false when p was unpinned meanwhile.
func (ps *tunnelPins) end(key uint64, p *tunnelPin, tombstone bool) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m[key] != p {
		return false
	}
	if tombstone {
		p.nc, p.busy = nil, false
	} else {
		delete(ps.m, key)
	}
	return true
}

// expire ends an idle pin whose PinnedIdleTimeout passed, leaving a
// tombstone, and tells the embedder.
func (ps *tunnelPins) expire(e *Engine, key uint64, p *tunnelPin) {
	ps.mu.Lock()
	if ps.m[key] != p || p.busy || p.nc == nil {
		ps.mu.Unlock()
		return
	}
	if left := e.cfg.PinnedIdleTimeout - time.Since(p.idle); left > 0 {
		// A late firing from before the last use: wait for the rest.
		p.timer.Reset(left)
		ps.mu.Unlock()
		return
	}
	nc := p.nc
	p.nc = nil
	ps.mu.Unlock()
	_ = nc.Close()
	p.closed(e)
	if f := e.cfg.OnPinnedClosed; f != nil {
		f(key)
	}
}

// endPeer ends the pins on the parent at addr of group (its peer is
// draining), as expire does: an idle one at once, a busy one when its
// Tunnel call gives it back.
func (ps *tunnelPins) endPeer(e *Engine, group, addr string) {
	type ended struct {
		key uint64
		p   *tunnelPin
		nc  net.Conn
	}
	var gone []ended
	ps.mu.Lock()
	for k, p := range ps.m {
		if p.nc == nil || p.group != group || p.parent.Addr != addr {
			continue
		}
		if p.busy {
			p.ending = true
			continue
		}
		p.timer.Stop()
		gone = append(gone, ended{k, p, p.nc})
		p.nc = nil
	}
	ps.mu.Unlock()
	for _, g := range gone {
		_ = g.nc.Close()
		g.p.closed(e)
		if f := e.cfg.OnPinnedClosed; f != nil {
			f(g.key)
		}
	}
}

// unpin forgets key, closing its connection.
func (ps *tunnelPins) unpin(e *Engine, key uint64) {
	ps.mu.Lock()
	p := ps.m[key]
	delete(ps.m, key)
	ps.mu.Unlock()
	if p != nil {
		ps.drop(e, p)
	}
}

// drop closes a pin's connection, no longer in the map. A busy one's
// Tunnel call finds it gone (release and end report false) and accounts
// for it.
func (ps *tunnelPins) drop(e *Engine, p *tunnelPin) {
	ps.mu.Lock()
	p.timer.Stop()
	nc, busy := p.nc, p.busy
	ps.mu.Unlock()
	if nc == nil {
		return
	}
	_ = nc.Close()
	if !busy {
		p.closed(e)
	}
}

// closeAll ends every pin as the engine closes.
func (ps *tunnelPins) closeAll(e *Engine) {
	ps.mu.Lock()
	ps.closed = true
	m := ps.m
	ps.m = nil
	ps.mu.Unlock()
	for _, p := range m {
		ps.drop(e, p)
	}
}

// tunnelPinned runs req's CONNECT on the connection pinned to its key,
// taken by take.
func (e *Engine) tunnelPinned(ctx context.Context, req TunnelRequest, p *tunnelPin) (net.Conn, *TunnelResponse, error) {
	ctx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	stopRoot := context.AfterFunc(e.root, cancelOpen)
	defer stopRoot()
	key := p.key
	ta := e.newTunnelAuth(req, p.parent, &poolset.Key{Via: key.Via, Cred: key.Cred})
	ctr := e.stats.For(key)
	ch := make(chan connectResult, 1)
	nc := p.nc
	if err := e.shards.Go(func() { ch <- e.connectRounds(ctx, p.route, ta, nc) }); err != nil {
		// Not sent: the pin stays for another try.
		if !e.tpins.release(e, req.PinKey, p) {
			_ = nc.Close()
			p.closed(e)
		}
		ctr.Requests.Add(1)
		ctr.Errors[conn.PhaseDial].Add(1)
		return nil, nil, &conn.Error{Phase: conn.PhaseDial, Addr: p.parent.Addr, Err: err}
	}
	r := <-ch
	ctr.Requests.Add(1)
	ctr.AuthRounds.Add(uint64(r.rounds))
	ta.markClientChallenge(r.resp)
	switch {
	case r.err == nil:
		if !e.tpins.end(req.PinKey, p, false) {
			// Unpinned while the CONNECT ran: the client is gone.
			_ = r.tc.Close()
			p.closed(e)
			ctr.Errors[conn.PhasePoolWait].Add(1)
			return nil, nil, pinnedGone(req.Target, req.PinKey, errors.New("unpinned"))
		}
		e.pool.Unpin(key)
		ctr.Tunnels.Add(1)
		pool := e.pool
		// A tunnel through a group's parent is load on that peer until it
		// closes, as one opened by Tunnel.
		gp := e.tunnelPeer(p.group, p.parent.Addr)
		if gp != nil {
			gp.tunnels.Add(1)
		}
		tc := conn.NewTunnelConn(r.tc.Conn, takeBuffered(r.tc), func() {
			pool.Closed(key, poolset.Busy)
			if p.unhold != nil {
				p.unhold()
			}
			if gp != nil {
				gp.tunnels.Add(-1)
			}
		})
		return tc, r.resp, nil
	case r.pin != nil:
		// The handshake goes on: the same connection stays pinned.
		if !e.tpins.release(e, req.PinKey, p) {
			_ = r.pin.Close()
			p.closed(e)
		}
		ctr.Errors[conn.PhaseTunnel].Add(1)
		return nil, r.resp, r.err
	}
	// The connection is closed. A refusal ends the handshake (the client
	// starts over, on a new connection); a failure leaves a tombstone.
	failed := r.resp == nil
	e.tpins.end(req.PinKey, p, failed)
	p.closed(e)
	err := r.err
	if failed {
		err = pinnedGone(req.Target, req.PinKey, err)
	}
	ctr.Failed(ctx, err)
	return nil, r.resp, err
}

// validFieldValue reports a value that cannot break out of its header
// line.
func validFieldValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}
