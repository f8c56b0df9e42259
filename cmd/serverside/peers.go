package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/balance"
	"github.com/serverside-go/serverside/parser"
)

// peerGroup is the name of the engine peer group built from -origin or
// -parent.
const peerGroup = "upstream"

// withPeers adds to cfg the peer group of the -origin URLs (reverse
// mode) or the -parent URLs (forward mode through parents), balanced by
// lb. Nothing is added when both are empty. Host names are resolved once,
// here: the engine does no DNS.
//
// A URL may carry per-peer options in its query:
//
//	name=a               the peer's name in logs and stats (default host:port)
//	weight=2             its share of the requests (default 1)
//	max_conns=100        its connection cap
//	max_pending=50       requests that may wait for one of its connections
//	pending_timeout=5s   how long each may wait
//	pipeline=8           pipeline GETs and HEADs, up to 8 per connection
//	preemptive=0         for credentials, see peerAuth (auth.go)
//
// Credentials in the userinfo (http://user:pass@host:port) answer the
// peer's 401 (an origin) or 407 (a parent) challenges: see peerAuth.
func withPeers(cfg *engine.Config, origins, parents []string, lb string) error {
	return withPeersTLS(cfg, origins, parents, lb, tlsSettings{})
}

// tlsSettings are the -ca-file, -insecure and -client-cert flags: how the
// demo speaks TLS to https origins (all three) and to https:// targets in
// forward mode (the CA bundle and -insecure; no client certificate goes to
// arbitrary sites).
type tlsSettings struct {
	roots    []byte // PEM; nil for the system roots
	insecure bool
	cert     *tls.Certificate
}

// forward is the TLS of https:// targets in forward mode, its server name
// taken from each request's host.
func (ts tlsSettings) forward() *engine.TLS {
	return &engine.TLS{RootCAs: ts.roots, InsecureSkipVerify: ts.insecure}
}

// withPeersTLS is withPeers with the TLS settings of https origins
// (-origin https://host:port, with ?sni=name to set the server name).
func withPeersTLS(cfg *engine.Config, origins, parents []string, lb string, ts tlsSettings) error {
	if !balance.Kind(lb).Valid() {
		// Refused with or without peers: a forward proxy without
		// parents has nothing to balance, but the flag says something
		// the user did not mean.
		return fmt.Errorf("-lb %q: want roundrobin, leastconn, p2c or hash", lb)
	}
	if len(origins) > 0 && len(parents) > 0 {
		return fmt.Errorf("-origin and -parent do not mix: origins make a reverse proxy, parents a forward one")
	}
	urls, parent := origins, false
	if len(parents) > 0 {
		urls, parent = parents, true
	}
	if len(urls) == 0 {
		return nil
	}
	gc := engine.GroupConfig{Balancer: balance.Kind(lb)}
	logins := make(map[string]*engine.Auth)
	for _, raw := range urls {
		p, login, err := parsePeer(raw, parent, ts)
		if err != nil {
			return err
		}
		gc.Peers = append(gc.Peers, p)
		if login != nil {
			logins[p.Addr] = login
		}
	}
	if len(logins) > 0 {
		cfg.Auth = authByAddr(logins)
	}
	if cfg.Groups == nil {
		cfg.Groups = map[string]engine.GroupConfig{}
	}
	cfg.Groups[peerGroup] = gc
	return nil
}

// parsePeer turns an -origin or -parent URL into a peer and the engine
// login of the credentials in its userinfo (nil without).
func parsePeer(raw string, parent bool, ts tlsSettings) (engine.Peer, *engine.Auth, error) {
	flagName := "-origin"
	if parent {
		flagName = "-parent"
	}
	u, err := url.Parse(raw)
	raw = redactURL(raw) // for the errors below
	if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
		return engine.Peer{}, nil, fmt.Errorf("%s %q: want http://host:port or https://host:port", flagName, raw)
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		// Requests keep their own paths: a path here would be dropped.
		return engine.Peer{}, nil, fmt.Errorf("%s %q: want only scheme, host and port (and ?options)", flagName, raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hp := hostPortScheme(u.Host, u.Scheme)
	if !validPort(hp) {
		return engine.Peer{}, nil, fmt.Errorf("%s %q: want a port from 1 to 65535", flagName, raw)
	}
	addr, err := resolve(ctx, hp)
	if err != nil {
		return engine.Peer{}, nil, fmt.Errorf("%s %q: %w", flagName, raw, err)
	}
	p := engine.Peer{Name: hp, Addr: addr, Parent: parent}
	if u.Scheme == "https" {
		// Each https origin, and each parent spoken to over TLS (its
		// requests and CONNECTs alike), has a *TLS of its own: its server
		// name is the URL's host (verified against the certificate; an IP
		// address is checked against its IP SANs and sent as no SNI) or
		// ?sni=.
		p.TLS = &engine.TLS{RootCAs: ts.roots, InsecureSkipVerify: ts.insecure, Certificate: ts.cert}
		if _, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err != nil {
			p.TLS.ServerName = u.Hostname()
		}
	}
	login, err := peerAuth(u, &p)
	if err != nil {
		return engine.Peer{}, nil, fmt.Errorf("%s %q: %w", flagName, raw, err)
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		var err error
		switch {
		case len(vs) > 1:
			// As a repeated key in the config file: which one was meant?
			err = errors.New("given more than once")
		case k == "preemptive" && u.User == nil:
			// It says how the URL's credentials go: without any it
			// would be ignored.
			err = errors.New("only with credentials in the URL (http://user:pass@host:port)")
		}
		if err != nil {
			return engine.Peer{}, nil, fmt.Errorf("%s %q: %s: %w", flagName, raw, k, err)
		}
		switch k {
		case "name":
			p.Name = v
		case "weight":
			p.Weight, err = strconv.Atoi(v)
			if err == nil && (p.Weight < 0 || p.Weight > maxPeerWeight) {
				err = fmt.Errorf("want 1 to %d (0 for 1), got %d", maxPeerWeight, p.Weight)
			}
		case "max_conns":
			p.MaxConns, err = strconv.Atoi(v)
			if err == nil && p.MaxConns < 0 {
				err = fmt.Errorf("want 0 (no cap) or more, got %d", p.MaxConns)
			}
		case "max_pending":
			p.MaxPending, err = strconv.Atoi(v)
			if err == nil && p.MaxPending < 0 {
				err = fmt.Errorf("want 0 (the default) or more, got %d", p.MaxPending)
			}
		case "pending_timeout":
			p.PendingTimeout, err = parseDuration(v)
			if err == nil && p.PendingTimeout == 0 {
				// The engine would take 0 for its default.
				err = errors.New("want a duration above 0 (leave it out for the default)")
			}
		case "pipeline":
			p.Pipeline, err = strconv.Atoi(v)
			if err == nil && (p.Pipeline < 0 || p.Pipeline > maxPipeline) {
				err = fmt.Errorf("want 0 to %d, got %d", maxPipeline, p.Pipeline)
			}
			if err == nil && p.TLS != nil && p.Pipeline > 1 {
				err = fmt.Errorf("only for http:// peers")
			}
		case "sni":
			if p.TLS == nil {
				err = fmt.Errorf("only for https:// peers")
			} else {
				p.TLS.ServerName = v
			}
		case "preemptive": // peerAuth read it
		default:
			err = fmt.Errorf("unknown option (want name, weight, max_conns, max_pending, pending_timeout, pipeline, sni or preemptive)")
		}
		if err != nil {
			return engine.Peer{}, nil, fmt.Errorf("%s %q: %s: %w", flagName, raw, k, err)
		}
	}
	return p, login, nil
}

// routePeers routes the request to the peer group: to an origin in origin
// form, or to a parent in absolute form (kept as the client sent it; the
// engine adds the parent's credentials). False means an error was written.
func (cc *clientConn) routePeers(s *sink, ed *parser.Edits) (engine.Upstream, bool) {
	req := &cc.rs.req
	up := engine.Upstream{Group: cc.p.group}
	if cc.p.parents {
		scheme := strings.ToLower(string(req.Scheme())) // case-insensitive (RFC 9110 §4.2.3)
		if req.Form() != parser.FormAbsolute || scheme != "http" && scheme != "https" {
			cc.writeErrorSink(s, 400, "a forward proxy needs an absolute-form http:// or https:// target")
			return up, false
		}
		if cc.p.hashHost {
			up.HashKey = hostKey(req.Authority())
		}
		hp := hostPortScheme(string(req.Authority()), scheme)
		if !validPort(hp) {
			cc.writeErrorSink(s, 400, "invalid port in the target")
			return up, false
		}
		if scheme == "https" {
			// TLS end to end: a CONNECT tunnel through a parent of the
			// group, then TLS to the origin through it, in origin form.
			// The engine picks the parent, counts the request in its
			// health and moves it to another parent when the connect
			// fails, as for http:// requests.
			cc.setOriginForm(ed)
			return engine.Upstream{Addr: hp, TLS: cc.p.cfg.ForwardTLS, ViaGroup: cc.p.group, HashKey: up.HashKey}, true
		}
		// The target stays in absolute form; its Host is generated from
		// the target's authority, not relayed (RFC 9112 §3.2.2), and an
		// HTTP/1.0 request, sent on as HTTP/1.1, gets one.
		ed.Set("Host", req.Authority())
	} else if req.Form() == parser.FormAbsolute {
		if scheme := strings.ToLower(string(req.Scheme())); scheme != "http" && scheme != "https" {
			cc.writeErrorSink(s, 400, "only http:// and https:// targets are supported")
			return up, false
		}
		if cc.p.hashHost {
			up.HashKey = hostKey(req.Authority())
		}
		cc.setOriginForm(ed)
	} else if cc.p.hashHost && req.Has(parser.HdrHost) {
		up.HashKey = hostKey(req.Get(parser.HdrHost))
	} else if !req.Has(parser.HdrHost) {
		// An HTTP/1.0 request without Host; HTTP/1.1 requires one. The
		// origin is not chosen yet: name the first.
		ed.Set("Host", []byte(cc.p.originHost))
	}
	return up, true
}

// hostKey is what -lb hash hashes for a request to authority (a Host
// field, a target's authority, a CONNECT's host:port): the host alone, in
// lower case, as nginx's $host. A host's spellings that clients send
// ("Example.com", "example.com:80") then go to one peer, and so do a
// site's http:// requests and CONNECT tunnels through parents.
func hostKey(authority []byte) string {
	host := authority
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[i:], ']') < 0 {
		host = host[:i]
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			return string(bytes.ToLower(host))
		}
	}
	return string(host)
}

// withFilePeers applies the -config file's per-peer options (name,
// weight, max_conns) to the group built from the same URLs, which apply
// passed through the -origin or -parent flag. fromFile says that the
// command line named no peers: a list given there replaced the file's and
// keeps the options of its own URLs.
func withFilePeers(cfg *engine.Config, fc *fileConfig, fromFile bool) {
	g, ok := cfg.Groups[peerGroup]
	if !ok || !fromFile {
		return
	}
	specs := fc.Origins
	if g.Peers[0].Parent {
		specs = fc.Parents
	}
	if len(specs) != len(g.Peers) {
		return
	}
	for i, ps := range specs {
		p := &g.Peers[i]
		if ps.Name != "" {
			p.Name = ps.Name
		}
		if ps.Weight > 0 {
			p.Weight = ps.Weight
		}
		if ps.MaxConns > 0 {
			p.MaxConns = ps.MaxConns
		}
		if ps.MaxPending > 0 {
			p.MaxPending = ps.MaxPending
		}
		if ps.PendingTimeout != nil {
			p.PendingTimeout = time.Duration(*ps.PendingTimeout)
		}
		if ps.Pipeline > 1 {
			p.Pipeline = ps.Pipeline
		}
		if ps.SNI != "" && p.TLS != nil {
			p.TLS.ServerName = ps.SNI
		}
	}
}

// selfPeer refuses a peer of cfg's group (an origin or a parent) whose
// address is the proxy's own listen address: each request would come
// back to the proxy, to be answered 508 (via.go), a mistake better told
// at start. Listening on every address (":3128", "0.0.0.0:3128"), a
// loopback or local address with the listen port is the proxy too; a
// listen host that is a name ("localhost:3128") is the address it
// listens on.
func selfPeer(cfg engine.Config, listen string) error {
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil {
		return nil
	}
	lip, err := netip.ParseAddr(lhost)
	if err != nil && lhost != "" {
		// A name listens on one of its addresses, as net.Listen picks
		// it: the first IPv4 one, else the first. A name the resolver
		// does not know cannot be listened on either: listening
		// reports that.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", lhost)
		cancel()
		if i := slices.IndexFunc(addrs, func(a netip.Addr) bool { return a.Unmap().Is4() }); i >= 0 {
			lip = addrs[i]
		} else if len(addrs) > 0 {
			lip = addrs[0]
		}
	}
	lip = lip.Unmap()
	all := lhost == "" || lip.IsValid() && lip.IsUnspecified()
	for _, p := range cfg.Groups[peerGroup].Peers {
		ap, err := netip.ParseAddrPort(p.Addr)
		if err != nil || strconv.Itoa(int(ap.Port())) != lport {
			continue
		}
		ip := ap.Addr().Unmap()
		if all && (ip.IsLoopback() || ip.IsUnspecified() || isLocalAddr(ip)) || lip.IsValid() && lip == ip {
			role := "origin"
			if p.Parent {
				role = "parent"
			}
			return fmt.Errorf("%s %s (%s) is this proxy's own -listen %s: requests would loop through it", role, p.Name, p.Addr, listen)
		}
	}
	return nil
}

// isLocalAddr reports an address of one of the host's interfaces.
func isLocalAddr(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if la, ok := netip.AddrFromSlice(n.IP); ok && la.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// peerSpecs lists the group's peers for the admin pages, which name
// upstreams by address.
func peerSpecs(cfg engine.Config) []peerSpec {
	var out []peerSpec
	for _, p := range cfg.Groups[peerGroup].Peers {
		scheme := "http://"
		if p.TLS != nil {
			scheme = "https://"
		}
		out = append(out, peerSpec{URL: scheme + p.Addr, Name: p.Name, Weight: max(p.Weight, 1), MaxConns: p.MaxConns})
	}
	return out
}
