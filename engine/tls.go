package engine

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// TLS says how to speak TLS to an upstream (an https origin, or a parent
// proxy that speaks TLS). The engine derives a crypto/tls configuration
// from it the first time a request uses it and caches that by pointer: a
// *TLS must not change once used. One *TLS may serve many upstreams.
type TLS struct {
	// ServerName is sent as SNI and is the name the certificate must be
	// valid for. Empty takes the host of the request's authority (the
	// absolute-form target or the Host header), without its port.
	ServerName string
	// RootCAs is a PEM bundle of the CAs to trust; nil trusts the system
	// roots.
	RootCAs []byte
	// InsecureSkipVerify accepts any certificate. The engine logs a
	// warning (slog Warn) for every upstream identity that uses it.
	InsecureSkipVerify bool
	// Certificate is the client certificate offered when the upstream
	// asks for one (mTLS); nil offers none. Its leaf's fingerprint is part
	// of the pool key, so connections never cross client identities.
	Certificate *tls.Certificate
	// MinVersion is the lowest TLS version accepted; zero means TLS 1.2.
	MinVersion uint16
}

// tlsProfile is what a *TLS yields: the base configuration and the
// identity string of its verification policy and client certificate.
type tlsProfile struct {
	base *tls.Config
	id   string
	err  error
}

// upstreamDialer dials one pool key's connections when they are not plain
// TCP: TLS, a CONNECT tunnel through a parent, or both. It holds the key's
// own TLS configuration (SNI set, and a session cache of its own, so
// sessions resume per upstream identity and never across identities). It
// is the key's shard.Dialer, made once per key.
type upstreamDialer struct {
	cfg       *tls.Config // nil: plaintext
	connect   time.Duration
	hsTimeout time.Duration
	parent    *parentRoute // non-nil: CONNECT through a parent first
	// e, via and login, with a parent: the engine, the Parent and the
	// engine's proxy login for it, whose credentials answer a 407 to the
	// CONNECT (tunnelAuth; the Parent's own win).
	e     *Engine
	via   Parent
	login Login
}

// Dial implements shard.Dialer: TCP (or a CONNECT tunnel through the
// parent), then the TLS handshake, on the dial pool's worker.
func (u *upstreamDialer) Dial(ctx context.Context, addr string) (*conn.Conn, error) {
	if u.parent == nil && u.cfg == nil { // plain TCP on Go net (Config.GoNetIO)
		raw, err := conn.DialGo(ctx, addr, u.connect)
		if err != nil {
			return nil, err
		}
		return conn.NewGo(addr, raw), nil
	}
	if u.parent == nil {
		return conn.DialTLS(ctx, addr, u.connect, u.hsTimeout, u.cfg)
	}
	raw, err := u.parent.dial(ctx, u.connect)
	if err != nil {
		return nil, err
	}
	// The parent's own credentials, or the engine's proxy login for it
	// (Request.Auth concerns the requests inside the tunnel).
	a := u.e.newTunnelAuth(TunnelRequest{Target: addr, Auth: &Auth{Proxy: u.login}}, &u.via,
		&poolset.Key{Via: u.parent.via, Cred: u.via.scope()})
	r := u.e.connectRounds(ctx, u.parent, a, raw)
	if r.err != nil {
		return nil, r.err
	}
	tc := r.tc
	if u.cfg == nil {
		return conn.NewGo(addr, tc), nil
	}
	return conn.ClientTLS(ctx, addr, tc, u.hsTimeout, u.cfg)
}

// tlsState is the engine's TLS caches.
type tlsState struct {
	profiles   sync.Map // *TLS -> *tlsProfile
	upstreams  sync.Map // poolset.Key -> *upstreamDialer
	routes     sync.Map // routeKey -> *parentRoute
	nprofiles  atomic.Int64
	nupstreams atomic.Int64
	warnOnce   sync.Once
}

// maxProfiles bounds the cache of *TLS values: a caller that makes a new
// *TLS per request would otherwise grow it (and keep every value alive)
// without end.
const maxProfiles = 4096

// maxDialers bounds the cache of per-key dialers (each with its TLS
// configuration and session cache, about 1 KiB before a session is
// stored): a forward proxy makes one for every https host it fetches, so
// without a bound the cache grew with every host ever seen.
const maxDialers = 8192

// profile returns what t yields, computed once per *TLS.
func (e *Engine) profile(t *TLS) *tlsProfile {
	if v, ok := e.tls.profiles.Load(t); ok {
		return v.(*tlsProfile)
	}
	p := buildProfile(t)
	v, loaded := e.tls.profiles.LoadOrStore(t, p)
	if !loaded && e.tls.nprofiles.Add(1) > maxProfiles {
		// Start over; the per-key dialers (and their session caches) are
		// keyed by identity, not by pointer, and stay.
		e.tls.profiles.Clear()
		e.tls.nprofiles.Store(0)
		e.tls.warnOnce.Do(func() {
			e.cfg.Logger.Warn("engine: more than 4096 distinct *engine.TLS values seen; reuse one value per TLS configuration")
		})
	}
	return v.(*tlsProfile)
}

func buildProfile(t *TLS) *tlsProfile {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	var id strings.Builder
	if t.MinVersion != 0 {
		cfg.MinVersion = t.MinVersion
	}
	switch {
	case t.InsecureSkipVerify:
		cfg.InsecureSkipVerify = true
		id.WriteString("v=none")
	case t.RootCAs != nil:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.RootCAs) {
			return &tlsProfile{err: fmt.Errorf("%w: TLS RootCAs holds no PEM certificate", ErrBadRequest)}
		}
		cfg.RootCAs = pool
		sum := sha256.Sum256(t.RootCAs)
		id.WriteString("v=ca:")
		id.WriteString(hex.EncodeToString(sum[:8]))
	default:
		id.WriteString("v=sys")
	}
	if c := t.Certificate; c != nil {
		if len(c.Certificate) == 0 {
			return &tlsProfile{err: fmt.Errorf("%w: TLS client certificate is empty", ErrBadRequest)}
		}
		cert := *c
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		sum := sha256.Sum256(c.Certificate[0])
		id.WriteString(";c=")
		id.WriteString(hex.EncodeToString(sum[:8]))
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		id.WriteString(";min=")
		id.WriteString(strconv.Itoa(int(cfg.MinVersion)))
	}
	return &tlsProfile{base: cfg, id: id.String()}
}

// serverName is the SNI for req: the configured name, else the URL's host
// of a Transport request, else the host of the request's authority, else
// the host of the upstream address. A host name taken from the request is
// lowercased: names compare without case (RFC 6066 §3), so "LOCALHOST" and
// "localhost" share a pool key and a session cache instead of splitting
// them.
func serverName(t *TLS, req *Request) string {
	if t.ServerName != "" {
		return t.ServerName
	}
	host := req.tlsHost
	if host == "" {
		host = string(req.Head.Authority())
	}
	if host == "" {
		host = req.Addr
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
}

// dialerFor completes req's pool key (TLS identity, route, credential
// scope) and returns the key's dialer, made on first use; nil for a plain
// direct upstream, which netpoll dials.
func (e *Engine) dialerFor(req *Request, key *poolset.Key) (*upstreamDialer, error) {
	if req.TLS == nil && req.Via == nil {
		if e.cfg.GoNetIO {
			return e.goNet, nil
		}
		return nil, nil
	}
	var p *tlsProfile
	if req.TLS != nil {
		if p = e.profile(req.TLS); p.err != nil {
			return nil, p.err
		}
		key.TLS = "sni=" + serverName(req.TLS, req) + ";" + p.id
	}
	var route *parentRoute
	var login Login
	if req.Via != nil {
		var err error
		if route, key.Via, key.Cred, err = e.parentRouteFor(req.Via); err != nil {
			return nil, err
		}
		if login = e.viaLogin(req.Via); login.Mode == LoginOwn {
			key.Cred = "+" + credScope(&Auth{Proxy: login}, nil) // as in newTunnelAuth
		}
	}
	var sni string
	if p != nil {
		sni = serverName(req.TLS, req)
	}
	return e.keyDialer(*key, p, sni, route, req.Via, login), nil
}

// viaLogin is the engine's own proxy login for the CONNECT of pooled
// connections through parent p: Config.Auth's for the parent's address,
// as for Tunnel, when the Parent has no credentials of its own (those
// win). A passed-through login has no client field to pass on a
// connection shared by every client: it is none here.
func (e *Engine) viaLogin(p *Parent) Login {
	if p.User != "" || e.cfg.Auth == nil {
		return Login{}
	}
	if pol := e.cfg.Auth(Upstream{Addr: p.Addr}); pol != nil && pol.Proxy.Mode == LoginOwn {
		return pol.Proxy
	}
	return Login{}
}

// keyDialer returns key's dialer, made on first use: TLS with profile p
// (nil: plaintext) and server name sni, through route (the route of via)
// when not nil.
func (e *Engine) keyDialer(key poolset.Key, p *tlsProfile, sni string, route *parentRoute, via *Parent, login Login) *upstreamDialer {
	if v, ok := e.tls.upstreams.Load(key); ok {
		return v.(*upstreamDialer)
	}
	u := &upstreamDialer{connect: e.cfg.ConnectTimeout, hsTimeout: e.cfg.TLSHandshakeTimeout}
	if p != nil {
		u.cfg = p.base.Clone()
		u.cfg.ServerName = sni
		u.cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	u.parent = route
	if route != nil {
		u.e, u.via, u.login = e, *via, login
	}
	v, loaded := e.tls.upstreams.LoadOrStore(key, u)
	if !loaded && e.tls.nupstreams.Add(1) > maxDialers {
		// Start over, as the profiles do: the dialers in use (by tasks,
		// by group peers) stay valid, and a key's next dialer only begins
		// with an empty session cache.
		e.tls.upstreams.Clear()
		e.tls.nupstreams.Store(0)
	}
	if !loaded && u.cfg != nil && u.cfg.InsecureSkipVerify {
		e.cfg.Logger.Warn("engine: TLS certificate verification is OFF for this upstream; anyone on the path can impersonate it",
			"upstream", key.String())
	}
	return v.(*upstreamDialer)
}
