package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// CONNECT in forward mode.
//
// A CONNECT to an allowed port opens a tunnel with engine.Tunnel: to the
// target directly, or through a parent picked from the -parent group.
// The tunnel is opened while the client connection is still on netpoll,
// so a refusal or a failure is answered there like any response. Once
// the tunnel is up, the connection leaves netpoll (the detach of
// detach.go) and only then is "200 Connection established" sent: a client
// sends its tunnel bytes after the 200, so none arrives while netpoll
// hands the fd over. Bytes a client sent early, after the CONNECT head
// and before the 200, are already in netpoll's buffer and are taken over
// and forwarded first. The two Go net connections are then relayed with
// engine.Relay (splice(2) both ways, half-close passed on, an idle
// timeout), on a goroutine of the connection's own. A tunnel is never
// pooled or retried.
//
// Authentication to a parent: the engine answers the parent's Basic and
// Digest 407s with the -parent URL's credentials (the peer's own, or the
// preemptive=0 login of Config.Auth). The client's own
// Proxy-Authorization is handed to Tunnel, which forwards it only when
// Config.Auth says LoginPassThrough for the parent (-client-auth pass); a
// refusal it cannot answer is relayed to the client, whose connection
// stays open. A CONNECT with credentials carries the connection's pin key
// (requestPinKey): a 407 offering NTLM or Negotiate then keeps the parent
// connection pinned to the client connection, so the client's next
// CONNECT, with the next handshake message, goes on that parent
// connection; if that one is gone meanwhile, the client gets a 502 and
// its connection is closed, to start the handshake over.

// DefaultTunnelIdleTimeout ends a tunnel that moved no byte either way
// for this long.
const DefaultTunnelIdleTimeout = 5 * time.Minute

// portSet is the set of ports CONNECT may reach; the zero value allows
// 443 only.
type portSet struct {
	any   bool
	ports []int
}

// parsePorts parses -connect-ports: "any", or a comma-separated list of
// ports.
func parsePorts(s string) (portSet, error) {
	s = strings.TrimSpace(s)
	if s == "any" || s == "*" {
		return portSet{any: true}, nil
	}
	var ps portSet
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 65535 {
			return portSet{}, fmt.Errorf("connect ports %q: want \"any\" or ports 1-65535 separated by commas", s)
		}
		ps.ports = append(ps.ports, n)
	}
	return ps, nil
}

func (ps portSet) allows(port int) bool {
	if ps.any {
		return true
	}
	if ps.ports == nil {
		return port == 443
	}
	return slices.Contains(ps.ports, port)
}

func (ps portSet) String() string {
	switch {
	case ps.any:
		return "any"
	case ps.ports == nil:
		return "443"
	}
	s := make([]string, len(ps.ports))
	for i, p := range ps.ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// tunnelMetrics count CONNECT tunnels.
type tunnelMetrics struct {
	opened  atomic.Uint64 // tunnels established (200 sent)
	open    atomic.Int64  // tunnels relaying now
	refused atomic.Uint64 // CONNECTs answered with a parent's refusal
	failed  atomic.Uint64 // CONNECTs that failed (403, 502, 504)
	up      atomic.Uint64 // bytes client → target
	down    atomic.Uint64 // bytes target → client

	// Protocol switches (WebSocket, ...), relayed the same way.
	upgraded     atomic.Uint64 // switched sessions started (101 sent)
	upgradedOpen atomic.Int64  // switched sessions relaying now
}

// write adds the tunnel families to a /metrics exposition.
func (m *tunnelMetrics) write(e expo) {
	e.family("serverside_tunnels_open", "gauge", "CONNECT tunnels relaying now.")
	e.sample("serverside_tunnels_open", strconv.FormatInt(m.open.Load(), 10))
	e.family("serverside_tunnels_total", "counter", "CONNECT tunnels established (200 sent).")
	e.sample("serverside_tunnels_total", u64(m.opened.Load()))
	e.family("serverside_tunnel_refusals_total", "counter", "CONNECTs answered with a parent proxy's refusal (407, 403, ...).")
	e.sample("serverside_tunnel_refusals_total", u64(m.refused.Load()))
	e.family("serverside_tunnel_failures_total", "counter", "CONNECTs that failed in the proxy (port not allowed, resolve, connect, timeout).")
	e.sample("serverside_tunnel_failures_total", u64(m.failed.Load()))
	e.family("serverside_tunnel_bytes_total", "counter", "Bytes relayed by ended tunnels, by direction (up: client to target).")
	e.sample("serverside_tunnel_bytes_total", u64(m.up.Load()), "direction", "up")
	e.sample("serverside_tunnel_bytes_total", u64(m.down.Load()), "direction", "down")
	e.family("serverside_upgrades_open", "gauge", "Protocol switches (WebSocket, ...) relaying now.")
	e.sample("serverside_upgrades_open", strconv.FormatInt(m.upgradedOpen.Load(), 10))
	e.family("serverside_upgrades_total", "counter", "Protocol switches relayed (101 sent to the client).")
	e.sample("serverside_upgrades_total", u64(m.upgraded.Load()))
}

// serveConnect answers a CONNECT request whose head (hl bytes) was just
// parsed. On success it leaves the tunnel in cc.tunnel and returns
// tunnelIt, the CONNECT head consumed and any byte after it still
// buffered.
func (cc *clientConn) serveConnect(hl int, start time.Time) outcome {
	req := &cc.rs.req
	s := &cc.rs.s
	s.reset(req.Version().AtLeast11(), cc.keepAsked(req))
	target := string(req.Authority())
	fail := func(status int, msg string) outcome {
		_ = cc.r.Skip(hl)
		_ = cc.r.Release()
		s.keepAlive = false
		cc.writeErrorSink(s, status, msg)
		cc.p.metrics.served(s.status, s.bytes)
		cc.p.tunnels.failed.Add(1)
		cc.logConnect(target, s.status, s.bytes, start)
		return closeIt
	}
	if !cc.p.forward() {
		// 501, not 405: a 405 must list the target's methods in Allow
		// (RFC 9110 §15.5.6), which a reverse proxy does not know, and
		// no resource here takes CONNECT.
		return fail(501, "CONNECT is for forward mode; this proxy is a reverse proxy")
	}
	if viaHas(&req.Header, cc.p.viaName) {
		// A CONNECT that came round back to this proxy (via.go). The
		// connection stays open, unless bytes for the tunnel followed
		// the head.
		_ = cc.r.Skip(hl)
		_ = cc.r.Release()
		keep := s.keepAlive && cc.r.Len() == 0
		if !cc.writeText(s, 508, cc.p.loopMsg, keep) {
			keep = false
		}
		cc.p.metrics.served(s.status, s.bytes)
		cc.p.tunnels.failed.Add(1)
		cc.logConnect(target, s.status, s.bytes, start)
		if !keep {
			return closeIt
		}
		return served
	}
	if declaresContent(req) {
		return fail(400, "a CONNECT request has no body")
	}
	host, portStr, err := net.SplitHostPort(target)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || host == "" || port < 1 || port > 65535 {
		return fail(400, "CONNECT needs a host:port target")
	}
	if !cc.p.cfg.ConnectPorts.allows(port) {
		return fail(403, "CONNECT to port "+portStr+" is not allowed")
	}
	// Through a parent, the CONNECT may first wait for a slot of the
	// parent's max_conns.
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout+2*cc.p.connectTimeout()+cc.p.tlsHandshakeTimeout()+cc.p.parentWait)
	defer cancel()
	treq := engine.TunnelRequest{Target: target, PinKey: cc.requestPinKey(),
		ProxyAuthorization: string(req.Get(parser.HdrProxyAuthorization))}
	var addrs []string // the target's other addresses, tried in turn
	if cc.p.parents {
		treq.Group = cc.p.group
		// The parent, and the ones after it, can tell a CONNECT that
		// comes round back to them, as a request.
		treq.ViaValue = cc.forwardedVia(req)
		if cc.p.hashHost {
			treq.HashKey = hostKey([]byte(target))
		}
	} else {
		all, err := resolveAll(ctx, cc.p.cfg.Lookup, target)
		if err != nil {
			return fail(502, "cannot resolve "+target+": "+err.Error())
		}
		treq.Target, addrs = all[0], all[1:]
	}
	nc, resp, err := cc.p.eng.Tunnel(ctx, treq)
	for len(addrs) > 0 && err != nil && connectFailed(err) && ctx.Err() == nil {
		cc.p.log.Debug("connect failed, trying the target's next address", "addr", treq.Target, "next", addrs[0], "err", err)
		treq.Target, addrs = addrs[0], addrs[1:]
		nc, resp, err = cc.p.eng.Tunnel(ctx, treq)
	}
	if err != nil {
		if errors.Is(err, engine.ErrTunnelRefused) && resp != nil {
			_ = cc.r.Skip(hl)
			_ = cc.r.Release()
			cc.p.tunnels.refused.Add(1)
			if cc.r.Len() > 0 {
				// Bytes sent behind the CONNECT were meant for the
				// tunnel (RFC 9110 §9.3.6), not as a request: the
				// connection ends with the refusal.
				s.keepAlive = false
			}
			if cc.pinLost.Load() {
				// The handshake this refusal continues lost its pinned
				// parent connection meanwhile (the parent was drained):
				// the client can only start over on a new connection.
				s.keepAlive = false
			}
			if resp.Status == 407 {
				cc.markAuth() // the client may answer on this connection
			}
			keep := cc.relayRefusal(s, resp)
			cc.p.metrics.served(s.status, s.bytes)
			cc.logConnect(target, s.status, s.bytes, start)
			if !keep {
				return closeIt
			}
			return served
		}
		if cc.p.closing.Load() && errors.Is(err, context.Canceled) {
			// Cut off by the shutdown's deadline, not by the parent or
			// the target: as for a request waiting for its origin.
			return fail(503, "proxy shutting down")
		}
		status, msg := upstreamStatus(err)
		return fail(status, "tunnel to "+target+": "+msg)
	}
	_ = cc.r.Skip(hl)
	_ = cc.r.Release()
	cc.p.tunnelsLive.Add(1)
	cc.tunnel, cc.tunnelTarget, cc.tunnelStart = nc, target, start
	return tunnelIt
}

// declaresContent reports a CONNECT with Transfer-Encoding or a
// Content-Length other than 0. The parser takes what follows a CONNECT's
// head as tunnel data whatever these say (RFC 9110 §9.3.6: a CONNECT has
// no content), so they are looked at here.
func declaresContent(req *parser.Request) bool {
	if req.Has(parser.HdrTransferEncoding) {
		return true
	}
	content := false
	req.Each(parser.HdrContentLength, func(v []byte) bool {
		content = len(bytes.Trim(v, "0, \t")) > 0
		return !content
	})
	return content
}

// dropTunnel closes a tunnel that could not be run.
func (cc *clientConn) dropTunnel() {
	if cc.tunnel != nil {
		_ = cc.tunnel.Close()
		cc.tunnel, cc.tunnelHead = nil, nil
		cc.p.tunnelsLive.Add(-1)
	}
}

// waitTunnels lets the tunnels run until ctx ends, then closes them, and
// waits (bounded) for their goroutines to finish.
func (p *proxy) waitTunnels(ctx context.Context) {
	for p.tunnelsLive.Load() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	p.tunnelCancel()
	deadline := time.Now().Add(forceCloseWait)
	for p.tunnelsLive.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// tlsHandshakeTimeout is the engine's TLS handshake timeout as
// configured.
func (p *proxy) tlsHandshakeTimeout() time.Duration {
	if p.cfg.TLSHandshakeTimeout > 0 {
		return p.cfg.TLSHandshakeTimeout
	}
	return engine.DefaultTLSHandshakeTimeout
}

// connectTimeout is the engine's connect timeout as configured.
func (p *proxy) connectTimeout() time.Duration {
	if p.cfg.ConnectTimeout > 0 {
		return p.cfg.ConnectTimeout
	}
	return engine.DefaultConnectTimeout
}

// hopByHop are the fields a relayed refusal does not carry: the
// connection's own, and the framing, which is redone.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Content-Length", "Te", "Trailer", "Upgrade"}

// relayRefusal writes a parent's non-2xx answer to CONNECT (a 407, a 403)
// to the client: its status and fields, and its body with a
// Content-Length. A 407 keeps its Proxy-Authenticate only when the
// client's answer reaches the parent (resp.ClientChallenge), as for
// requests (challenge). The connection stays open when the
// client asked for it and the body came whole.
//
// A body that did not come whole (the parent closed before its end, or
// it is longer than the engine keeps, conn.MaxRefusalBody) must not pass
// for a complete one (RFC 9112 §8): the client gets what came, chunked
// without the last chunk, or to an HTTP/1.0 client up to a close that is
// a reset, as a response cut after its head (see exchange).
func (cc *clientConn) relayRefusal(s *sink, resp *engine.TunnelResponse) bool {
	cut := resp.BodyTruncated
	if cut {
		s.keepAlive = false
	}
	var b strings.Builder
	reasonText := resp.Reason
	if reasonText == "" {
		reasonText = http.StatusText(resp.Status)
	}
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", resp.Status, reasonText)
	h := resp.Header.Clone()
	for _, f := range hopByHop {
		h.Del(f)
	}
	if !resp.ClientChallenge {
		// Hop-by-hop too, and the client's answer would not reach the
		// parent (see challenge).
		h.Del("Proxy-Authenticate")
	}
	if !resp.ClientProxy {
		// About the demo's own login to the parent (its nextnonce,
		// rspauth), for the next outbound client only (RFC 9110
		// §11.7.3), as for responses (sink.authFields).
		h.Del("Proxy-Authentication-Info")
	}
	// Fields named by Connection are hop-by-hop too.
	for _, v := range resp.Header.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			h.Del(strings.TrimSpace(f))
		}
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat)) // RFC 9110 §6.6.1
	}
	_ = h.Write(&b)
	switch {
	case !cut:
		b.WriteString("Content-Length: " + strconv.Itoa(len(resp.Body)) + "\r\n")
	case s.http11:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		cc.resetOnClose()
	}
	b.WriteString(cc.p.viaLine)
	switch {
	case !s.keepAlive:
		b.WriteString("Connection: close\r\n")
	case !s.http11:
		b.WriteString("Connection: keep-alive\r\n")
	}
	b.WriteString("\r\n")
	s.status, s.bytes = resp.Status, int64(len(resp.Body))
	s.bb.Reset()
	s.bb.B = append(s.bb.B, b.String()...)
	if cut && s.http11 && len(resp.Body) > 0 {
		s.bb.B = strconv.AppendInt(s.bb.B, int64(len(resp.Body)), 16)
		s.bb.B = append(s.bb.B, crlf...)
		s.bb.B = append(append(s.bb.B, resp.Body...), crlf...)
	} else {
		s.bb.B = append(s.bb.B, resp.Body...)
	}
	if err := cc.send(s.bb.B); err != nil {
		return false
	}
	return s.keepAlive
}

func (cc *clientConn) logConnect(target string, status int, bytes int64, start time.Time) {
	if cc.p.cfg.AccessLog {
		cc.p.log.Info("access", "remote", cc.c.RemoteAddr().String(), "method", "CONNECT", "target", target,
			"status", status, "bytes", bytes, "duration", time.Since(start))
	}
}

// runTunnel answers 200 on the detached client connection and relays it
// to the tunnel until either side ends or the idle timeout. left holds
// the bytes the client sent after the CONNECT head, forwarded first.
func (cc *clientConn) runTunnel(left []byte) {
	tun, target, start := cc.tunnel, cc.tunnelTarget, cc.tunnelStart
	// A CONNECT's 200, or the 101 of a request that switched protocols,
	// which the serve path counted already.
	head, method, status, connect := connectEstablished, "CONNECT", 200, cc.tunnelHead == nil
	if !connect {
		head, method, status = cc.tunnelHead, cc.tunnelMethod, 101
	}
	cc.tunnel, cc.tunnelHead = nil, nil
	p := cc.p
	defer p.tunnelsLive.Add(-1)
	_ = cc.c.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	if _, err := cc.c.Write(head); err != nil {
		_ = tun.Close()
		_ = cc.c.Close()
		if connect {
			p.metrics.served(200, 0)
			cc.logConnect(target, 200, 0, start)
		}
		return
	}
	_ = cc.c.SetDeadline(time.Time{})
	if connect {
		p.metrics.served(200, 0)
		p.tunnels.opened.Add(1)
		p.tunnels.open.Add(1)
		defer p.tunnels.open.Add(-1)
	} else {
		p.tunnels.upgraded.Add(1)
		p.tunnels.upgradedOpen.Add(1)
		defer p.tunnels.upgradedOpen.Add(-1)
	}
	var client net.Conn = cc.c
	if len(left) > 0 {
		client = conn.NewTunnelConn(cc.c, left, nil)
	}
	st, err := engine.Relay(p.tunnelCtx, client, tun, p.cfg.TunnelIdleTimeout)
	if connect {
		p.tunnels.up.Add(uint64(st.AToB))
		p.tunnels.down.Add(uint64(st.BToA))
	}
	if p.cfg.AccessLog {
		end := relayEnd(err)
		if err != nil && (cc.shutCut.Load() || p.closing.Load() && errors.Is(err, context.Canceled)) {
			// The shutdown's deadline closed the client connection or
			// ended the relay: its read of the closed connection is no
			// failure of either side.
			end = "shutdown"
		}
		p.log.Info("access", "remote", cc.c.RemoteAddr().String(), "method", method, "target", target,
			"status", status, "bytes", st.BToA, "sent", st.AToB, "duration", time.Since(start), "end", end)
	}
}

// runHalfClosedTunnel relays a CONNECT served on a client connection
// that shut down its sending side, on cc.halfConn (the Go net duplicate
// its earlier responses went out on), until the relay ends. The bytes
// netpoll holds behind the CONNECT head, all the client sent before its
// half-close, go to the target first. It runs on the handler's
// goroutine, so the connection stays registered (a request in flight for
// the shutdown, which closes the duplicate at its deadline); the caller
// then closes the netpoll connection.
func (cc *clientConn) runHalfClosedTunnel() {
	var left []byte
	if n := cc.r.Len(); n > 0 {
		if b, err := cc.r.Peek(n); err == nil {
			left = append([]byte(nil), b...)
		}
		_ = cc.r.Skip(n)
		_ = cc.r.Release()
	}
	hc := cc.halfConn
	cc.c, cc.halfConn = hc, nil
	cc.closer.Store(closerOf{hc})
	cc.runTunnel(left)
}

// connectEstablished is the answer to a CONNECT whose tunnel is up.
var connectEstablished = []byte("HTTP/1.1 200 Connection established\r\n\r\n")

func relayEnd(err error) string {
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, conn.ErrRelayIdle):
		return "idle"
	}
	return err.Error()
}

// buffered takes the bytes a detached connection's reader holds unread.
func (cr *connReader) buffered() []byte {
	if cr.w == cr.r {
		return nil
	}
	b := append([]byte(nil), cr.buf[cr.r:cr.w]...)
	cr.r, cr.w = 0, 0
	return b
}
