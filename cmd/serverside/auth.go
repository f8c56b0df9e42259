package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// Client authentication modes (-client-auth): what happens to the
// client's own Proxy-Authorization on its way to a parent.
const (
	// clientAuthNone strips it: the field is hop-by-hop, meant for this
	// proxy, which does not authenticate its clients.
	clientAuthNone = "none"
	// clientAuthPass passes it to a parent that has no credentials of its
	// own in its URL (engine.LoginPassThrough): the client logs in to the
	// parent itself, NTLM and Negotiate handshakes included.
	clientAuthPass = "pass"
)

// peerAuth applies the credentials in the userinfo of p's -origin or
// -parent URL u, if any:
//
//   - A parent's, by default, are the peer's own (Peer.Username and
//     Password): Basic sent with every request and every CONNECT before
//     any challenge, as Squid's cache_peer login= does. The engine then
//     answers no 407 of that parent.
//   - A parent's with preemptive=0 become an engine login (the returned
//     Auth, for Config.Auth): the engine answers the parent's Basic and
//     Digest 407s, to requests and to CONNECTs, and the password never
//     crosses the wire in clear (with Digest).
//   - An origin's become an engine login that answers its Basic and
//     Digest 401s; with preemptive=1 Basic also goes before any
//     challenge.
func peerAuth(u *url.URL, p *engine.Peer) (*engine.Auth, error) {
	if u.User == nil {
		return nil, nil
	}
	if strings.IndexByte(u.User.Username(), ':') >= 0 {
		// Basic joins user and password with the first ':' (RFC 7617
		// §2): the server would read another user.
		return nil, errors.New("a user name with ':' cannot be sent (Basic splits at the first ':')")
	}
	pw, _ := u.User.Password()
	l := engine.Login{
		Mode:        engine.LoginOwn,
		Credentials: engine.Credentials{User: u.User.Username(), Password: pw},
		Preemptive:  p.Parent,
	}
	if v := u.Query().Get("preemptive"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("preemptive: %w", err)
		}
		l.Preemptive = b
	}
	switch {
	case !p.Parent:
		return &engine.Auth{Origin: l}, nil
	case l.Preemptive:
		p.Username, p.Password = l.Credentials.User, l.Credentials.Password
		return nil, nil
	}
	return &engine.Auth{Proxy: l}, nil
}

// authByAddr is a Config.Auth that looks the peer's login up by address.
func authByAddr(logins map[string]*engine.Auth) func(engine.Upstream) *engine.Auth {
	return func(u engine.Upstream) *engine.Auth { return logins[u.Addr] }
}

// withClientAuth applies -client-auth to cfg, whose peer group withPeers
// built. Under "pass", requests to a parent without credentials of its own
// carry the client's Proxy-Authorization.
func withClientAuth(cfg *engine.Config, mode string) error {
	switch mode {
	case "", clientAuthNone:
		return nil
	case clientAuthPass:
	default:
		return fmt.Errorf("-client-auth %q: want %s or %s", mode, clientAuthNone, clientAuthPass)
	}
	g, ok := cfg.Groups[peerGroup]
	if !ok || !g.Peers[0].Parent {
		return fmt.Errorf("-client-auth %s: the client's Proxy-Authorization is only passed to parents (-parent)", mode)
	}
	own := cfg.Auth
	// Parents with credentials of their own send those (Peer.Username).
	peerCreds := make(map[string]bool)
	for _, p := range g.Peers {
		if p.Username != "" || p.Password != "" {
			peerCreds[p.Addr] = true
		}
	}
	// One value for every request: the engine does not modify it.
	pass := &engine.Auth{Proxy: engine.Login{Mode: engine.LoginPassThrough}}
	cfg.Auth = func(u engine.Upstream) *engine.Auth {
		if own != nil {
			if a := own(u); a != nil {
				return a
			}
		}
		if peerCreds[u.Addr] {
			return nil
		}
		return pass
	}
	return nil
}

// redactURL is raw with any password replaced by "xxxxx", for logs and
// errors.
// A URL that does not parse, or has no authority where url would find the
// userinfo ("user:pw@host:port" parses with the scheme "user"), is shown
// from its last '@' on.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		if i := strings.LastIndexByte(raw, '@'); i >= 0 {
			return "xxxxx" + raw[i:]
		}
		return raw
	}
	if u.User == nil {
		return raw
	}
	return u.Redacted()
}

// pinnedGoneMsg is the body of the 502 for a request whose pinned
// upstream connection is gone.
const pinnedGoneMsg = "the upstream connection this client connection authenticated on (NTLM/Negotiate) is gone; " +
	"reconnect and authenticate again"

// requestPinKey is the pin key of the request being served: the
// connection's own once it has shown authentication (a request with
// credentials, or a 401 or 407 relayed), else 0. The engine pins an
// upstream connection to the key when it sees an NTLM or Negotiate
// handshake, and the client's later requests, with or without
// credentials, go over that connection. Connections that never
// authenticate (nearly all) cost the engine nothing for it: a request
// with a pin key is watched for handshakes.
//
// A handshake can only start with the client's credentials: the 401 or
// 407 that asks for NTLM, on a request without, leaves no upstream
// connection to keep (the engine closes one that saw a handshake without
// a pin key), and the client's Type 1 message comes with the key.
func (cc *clientConn) requestPinKey() uint64 {
	if !cc.authSeen.Load() {
		if !cc.rs.req.Has(parser.HdrAuthorization) && !cc.rs.req.Has(parser.HdrProxyAuthorization) {
			return 0
		}
		cc.markAuth()
	}
	return cc.pinKey
}

// markAuth notes that the connection authenticates upstream: its requests
// carry its pin key from now on, and it is findable by it.
func (cc *clientConn) markAuth() {
	if !cc.authSeen.Swap(true) {
		cc.p.pins.add(cc)
	}
}

// challenge prepares the relay of a 401 or 407 the engine did not
// answer. Either marks the connection as authenticating. A 401's
// WWW-Authenticate is end-to-end: the client answers it. A 407 keeps its
// Proxy-Authenticate (hop-by-hop) only when the client's answer reaches
// the parent that sent it (-client-auth pass, to a parent without
// credentials of its own: the engine says so, AuthNote.ClientProxy).
// Otherwise the demo strips or replaces the client's Proxy-Authorization,
// and a client shown the challenge would answer it in a loop (a browser
// asking its user for the password again and again); the 407 goes
// without it, as Squid relays a cache_peer's 407 without login=PASSTHRU.
//
// A 401 that asks a forward proxy's client for an NTLM or Negotiate login
// says "Proxy-Support: Session-Based-Authentication" (RFC 4559 §5), as
// Squid does, when the login will work through the proxy: the engine pins
// the upstream connection to the client's (directly to the origin, or
// through a parent that said so itself). Clients that log in to an origin
// through a proxy (.NET's HttpClient) do not start without it. The field
// is hop-by-hop, and Connection says so to intermediaries that do not know
// it.
func (s *sink) challenge(ed *parser.Edits, resp *parser.Response) {
	if s.status != 401 && s.status != 407 {
		return
	}
	s.cc.markAuth()
	if s.status == 407 {
		if s.auth.ClientProxy {
			ed.Keep = ed.Keep.With(parser.HdrProxyAuthenticate)
		}
		return
	}
	if s.cc.rs.req.Form() == parser.FormAbsolute && (!s.cc.p.parents || engine.SessionBased(resp)) && engine.ChallengesConnectionBased(resp, parser.HdrWWWAuthenticate) {
		ed.Set("Proxy-Support", sessionBasedAuth)
		ed.Add("Connection", proxySupport)
	}
}

// authFields withholds from the client the authentication fields of a
// response that are not about its own login (the engine's AuthNote):
// Proxy-Authentication-Info, for the next outbound client only (RFC 9110
// §11.7.3), unless the client's Proxy-Authorization went to the parent
// that sent it; and Authentication-Info when the request carried the
// demo's own credentials for the origin (-origin with userinfo): its
// rspauth, cnonce and nc, with the nonce of a 401 the client did get,
// would let the client test guesses of the origin's password offline.
func (s *sink) authFields(ed *parser.Edits, resp *parser.Response) {
	if !s.auth.ClientProxy && resp.Peek(proxyAuthInfoName) != nil {
		ed.Remove(proxyAuthInfo)
	}
	if s.auth.OwnOrigin && resp.Peek(authInfoName) != nil {
		ed.Remove(authInfo)
	}
}

// The names as strings for Edits, which keeps them (a conversion from the
// []byte would allocate), and as []byte for Peek.
const (
	authInfo      = "Authentication-Info"
	proxyAuthInfo = "Proxy-Authentication-Info"
)

var (
	authInfoName      = []byte(authInfo)
	proxyAuthInfoName = []byte(proxyAuthInfo)
	sessionBasedAuth  = []byte("Session-Based-Authentication")
	proxySupport      = []byte("Proxy-Support")
)

// pinRegistry finds client connections by pin key, for
// Config.OnPinnedClosed. Every client connection has a pin key of its own
// (its accept serial); those that authenticate are registered (markAuth)
// until they close. Sharded by key.
type pinRegistry struct {
	shards []pinShard
}

type pinShard struct {
	mu sync.Mutex
	m  map[uint64]*clientConn
}

func newPinRegistry(n int) *pinRegistry {
	r := &pinRegistry{shards: make([]pinShard, max(n, 1))}
	for i := range r.shards {
		r.shards[i].m = make(map[uint64]*clientConn)
	}
	return r
}

func (r *pinRegistry) shard(key uint64) *pinShard { return &r.shards[key%uint64(len(r.shards))] }

func (r *pinRegistry) add(cc *clientConn) {
	s := r.shard(cc.pinKey)
	s.mu.Lock()
	s.m[cc.pinKey] = cc
	s.mu.Unlock()
}

// remove forgets cc and ends its pinned session, if the engine started
// one: the upstream connection authenticated for this client is of no use
// to anyone else. It runs once the connection's last request returned.
func (r *pinRegistry) remove(cc *clientConn) {
	s := r.shard(cc.pinKey)
	s.mu.Lock()
	delete(s.m, cc.pinKey)
	s.mu.Unlock()
	cc.p.eng.Unpin(cc.pinKey)
}

// closed is Config.OnPinnedClosed: the pinned session of key's client
// ended (its upstream connection closed while idle, or its peer is
// draining), so the client's authentication is lost and its connection is
// closed too, as browsers expect of NTLM. It runs on an engine shard
// goroutine and must not block: the close, whose callbacks take locks and
// post to the engine, runs on a goroutine of its own. A busy connection
// closes once its response is out (pinLost): the engine calls this
// before that request's exchange returns.
func (r *pinRegistry) closed(key uint64) {
	s := r.shard(key)
	s.mu.Lock()
	cc := s.m[key]
	s.mu.Unlock()
	if cc != nil {
		cc.pinLost.Store(true)
		go cc.closeIfIdle()
	}
}
