package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine/auth"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
	"github.com/serverside-go/serverside/shard"
)

// Credentials are a user name and password the engine holds for an
// upstream.
type Credentials = auth.Credentials

// LoginMode says whose credentials go to an upstream.
type LoginMode uint8

const (
	// LoginNone: the engine sends no credentials of its own and answers
	// no challenge; a 401 or 407 goes back to the caller unchanged. For a
	// parent proxy, the client's Proxy-Authorization is removed: it was
	// meant for the proxy embedding the engine. (The client's
	// Authorization is end-to-end and always forwarded.)
	LoginNone LoginMode = iota
	// LoginOwn: the engine's Credentials. It answers Basic and Digest
	// challenges itself and resubmits the request; with Preemptive it
	// sends Basic before any challenge.
	LoginOwn
	// LoginPassThrough: the client's own credentials. For a parent proxy
	// the client's Proxy-Authorization is forwarded (a proxy that relays
	// its client's login, or a client's NTLM handshake with the parent);
	// challenges go back to the caller.
	LoginPassThrough
)

// Login is how the engine authenticates in one role.
type Login struct {
	// Mode says whose credentials are sent; the zero value is LoginNone.
	Mode LoginMode
	// Credentials are the engine's own, for LoginOwn.
	Credentials Credentials
	// Preemptive sends Basic credentials with every request, before any
	// challenge (Squid's cache_peer login=user:pass). LoginOwn only.
	Preemptive bool
}

// DefaultAuthRounds is Auth.MaxRounds's default.
const DefaultAuthRounds = 2

// Auth is how the engine authenticates requests to one upstream:
// to the origin (a 401 answered in Authorization) and, when the upstream
// is a parent proxy, to the proxy (a 407 answered in Proxy-Authorization).
//
// Proxy credentials are sent only on requests whose forwarded target is in
// absolute form or authority form: the forms sent to a proxy (RFC 9112
// §3.2). A request in origin form goes to an origin, which never sees a
// Proxy-Authorization, whatever Auth says.
type Auth struct {
	// Origin answers 401s, in Authorization.
	Origin Login
	// Proxy answers a parent's 407s, in Proxy-Authorization.
	Proxy Login
	// MaxRounds bounds how many challenges the engine answers for one
	// request (default DefaultAuthRounds: a 407 then a 401). A Digest
	// challenge with stale=true (a new nonce for the same credentials)
	// does not count; at most two of those are answered.
	MaxRounds int
}

// maxStale bounds the stale-nonce rounds of one request.
const maxStale = 2

// maxCapture bounds the body of a challenge the engine holds back while
// it answers it: a longer one goes to the caller, unanswered.
const maxCapture = 64 << 10

// credScope derives the pool key's credential scope from the logins in
// use: a non-reversible digest of the identity, so that a connection that
// carried one identity's requests is never handed to another. passThrough
// is the client's Proxy-Authorization when it is forwarded.
func credScope(a *Auth, passThrough []byte) string {
	if a == nil {
		return ""
	}
	h := sha256.New()
	used := false
	for i, l := range []*Login{&a.Origin, &a.Proxy} {
		if l.Mode == LoginOwn {
			fmt.Fprintf(h, "%d own %q %q\n", i, l.Credentials.User, l.Credentials.Password)
			used = true
		}
	}
	if len(passThrough) > 0 {
		fmt.Fprintf(h, "pass %q\n", passIdentity(passThrough))
		used = true
	}
	if !used {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// passIdentity is the identity a passed-through Proxy-Authorization
// value logs in as. Digest credentials change with every request (nonce
// count, cnonce, response) while the identity is the same: it is their
// scheme, realm and user name (RFC 7616 §3.4). Other credentials are
// their whole value.
func passIdentity(v []byte) string {
	cs, err := auth.ParseChallenges(string(v))
	if err != nil || len(cs) != 1 || !cs[0].Is("Digest") {
		return string(v)
	}
	var b strings.Builder
	b.WriteString("digest")
	for _, name := range []string{"realm", "username", "username*", "userhash"} {
		p, _ := cs[0].Param(name)
		fmt.Fprintf(&b, " %q", p)
	}
	return b.String()
}

// authState is one request's authentication: the forwarded edits with
// credentials, which challenges were answered, and the sink that holds a
// challenge back from the caller while the engine answers it.
type authState struct {
	pol      *Auth        // nil: pin detection only
	base     parser.Edits // the caller's edits with Proxy-Authorization kept or removed
	creds    [2]string    // the credentials sent per role (origin, proxy); "" for none
	edits    parser.Edits // base with creds: what is forwarded
	parent   bool         // the target is in absolute or authority form
	method   string       // as sent, for Digest
	target   string
	connAuth [2]bool // NTLM/Negotiate credentials in the request, per role (Authorization, Proxy-Authorization)
	passPA   bool    // the client's Proxy-Authorization is forwarded (to a parent, LoginPassThrough)
	peerAuth bool    // a parent peer sends its own Proxy-Authorization: 407s are not ours

	e         *Engine
	key       poolset.Key     // the task's pool key, credential scope included
	host      string          // the request's authority: the origin's identity
	sentBasic [2]bool         // Basic sent with our credentials, per role (origin, proxy)
	digest    [2]bool         // a Digest challenge answered, per role
	preDigest [2]bool         // a remembered Digest challenge answered up front, per role
	sent      [2]*auth.Digest // the Digest state of the credentials sent, per role
	c         *conn.Conn      // the connection of the exchange in progress
	rounds    int
	stales    int

	sink capSink
}

// setupAuth prepares r's task for authentication, once its key and edits
// name the upstream (for a group, the chosen peer: setupAuth runs again
// when the request moves to another peer). It does nothing, and costs
// nothing, for a request without credentials policy, pin key or
// credentials of its own that concern the engine.
func (e *Engine) setupAuth(r *request) {
	t := &r.t
	t.Run = nil
	t.PinScope, t.PinOrigin = "", false
	pol := r.authPol
	u := r.upstream
	peerAuth := false
	switch {
	case r.peer != nil && r.via:
		// The request goes to its Addr, through the parent's tunnel,
		// whose credentials the tunnel's dialer sends.
		u.Via, u.ViaGroup = r.peer.parent, ""
	case r.peer != nil:
		u.Addr = r.peer.cfg.Addr
		// A parent peer's own credentials are already in its edits.
		peerAuth = r.peer.auth != nil
	}
	if pol == nil && e.cfg.Auth != nil {
		pol = e.cfg.Auth(u)
	}
	h := t.Exchange.Head
	edits := t.Exchange.Edits
	hasPA := h.Has(parser.HdrProxyAuthorization)
	var connAuth [2]bool
	for role, id := range [2]parser.HeaderID{parser.HdrAuthorization, parser.HdrProxyAuthorization} {
		if v := h.Get(id); v != nil && auth.ConnectionBased(auth.CredentialsScheme(string(v))) {
			connAuth[role] = true
		}
	}
	if pol == nil && !hasPA && t.PinKey == 0 && connAuth == [2]bool{} {
		return
	}
	// r is not kept: a Request a caller built on its stack stays there.
	a := &authState{e: e, pol: pol, connAuth: connAuth, peerAuth: peerAuth}
	// Only a policy or a Proxy-Authorization to keep or drop changes the
	// forwarded head; a pin key alone just watches the exchange.
	modify := pol != nil || hasPA
	if modify && edits != nil {
		a.base.CopyFrom(edits)
	}
	method, target := h.Method(), h.Target()
	if edits != nil && edits.Method != nil {
		method = edits.Method
	}
	if edits != nil && edits.Target != nil {
		target = edits.Target
	}
	a.method, a.target = string(method), string(target)
	a.parent = len(target) > 0 && target[0] != '/' && !bytes.Equal(target, []byte("*"))
	if a.parent && t.PinKey != 0 {
		t.PinScope = targetAuthority(a.target)
	}

	var passThrough []byte
	if pol != nil && pol.Proxy.Mode == LoginPassThrough && a.parent && hasPA {
		a.base.Keep = a.base.Keep.With(parser.HdrProxyAuthorization)
		// (A parent peer's own credentials replace it all the same.)
		a.passPA = !peerAuth
		if !connAuth[1] {
			// Connection-based credentials change with every message of
			// the handshake and live on a pinned connection: they are
			// not a scope of the shared pool.
			passThrough = h.Get(parser.HdrProxyAuthorization)
		}
	} else if hasPA && !peerAuth {
		// (A parent peer's credentials replace the client's field.)
		a.base.Remove("Proxy-Authorization")
	}
	if pol != nil {
		if l := &pol.Origin; l.Mode == LoginOwn && l.Preemptive {
			a.creds[0] = auth.Basic(l.Credentials)
			a.sentBasic[0] = true
		}
		if l := &pol.Proxy; l.Mode == LoginOwn && l.Preemptive && a.parent && !peerAuth {
			a.creds[1] = auth.Basic(l.Credentials)
			a.sentBasic[1] = true
		}
		p := *pol
		if !a.parent || peerAuth {
			p.Proxy = Login{} // no proxy identity of ours on this connection
		}
		if c := credScope(&p, passThrough); c != "" {
			// After the peer's own scope (a parent's, or none) and a
			// "+", even when that is empty: the key stays recognisably
			// one of the peer's (peer.owns), whose connections its
			// stats, drain and sessions cover.
			t.Key.Cred += "+" + c
		}
		a.key, a.host = t.Key, string(h.Authority())
		// A Digest challenge answered before is answered up front, with
		// the next nonce count, and a space that asked for Basic gets it
		// up front (RFC 7617 §2.2), saving the round trip; and a request
		// whose body cannot be sent again is not refused for want of it.
		for role, l := range []*Login{&pol.Origin, &pol.Proxy} {
			if l.Mode != LoginOwn || a.sentBasic[role] || (role == 1 && (!a.parent || peerAuth)) {
				continue
			}
			// The Digest answer itself is made in run, once the
			// connection is known (upFront).
			k := a.digestKey(role)
			if e.digests.known(k) {
				a.preDigest[role] = true
			} else if e.digests.basicKnown(k) {
				a.creds[role] = auth.Basic(l.Credentials)
				a.sentBasic[role] = true
			}
		}
	}
	if modify {
		a.rebuild()
		t.Exchange.Edits = &a.edits
	}
	t.Run = a.run
}

// rebuild makes the forwarded edits: the base plus one field per role
// with credentials. Edits cannot take an edit back, and a second Set of
// the same field would add a second field, so every change of
// credentials starts again from the base.
func (a *authState) rebuild() {
	a.edits.CopyFrom(&a.base)
	for role, v := range a.creds {
		if v != "" {
			a.edits.Set(roleField[role], []byte(v))
		}
	}
}

// run is the task's Run: one exchange, and as many more on the same
// connection as there are challenges the engine answers.
func (a *authState) run(ctx context.Context, c *conn.Conn, t *shard.Task) (conn.Outcome, error) {
	a.c = c
	if a.upFront(c) {
		a.rebuild()
	}
	for {
		s := &a.sink
		*s = capSink{a: a, t: t, next: t.Sink}
		out, err := c.RoundTrip(ctx, &t.Exchange, s)
		// A connection-based handshake on this connection (the request's
		// credentials, or a challenge that reaches the caller) pins it;
		// a challenge the engine answers with Basic or Digest does not.
		pin := func() {
			if s.pin == pinNone {
				return
			}
			if t.PinKey != 0 && s.pin != pinIsolate {
				t.Pin = true
				// Through a parent, an origin's login holds for that
				// origin only: the session takes no request for
				// another site (Task.PinOrigin).
				t.PinOrigin = s.pin == pinOrigin
			} else {
				t.Isolate = true
			}
		}
		if err != nil || !s.capturing {
			pin()
			return out, err
		}
		// The challenge is held back and answered: resend, if the body
		// can be sent again.
		ex := &t.Exchange
		hasBody := ex.Body != nil && ex.ContentLength != 0
		if hasBody && out.BodyRead { // not a body an early answer left untouched
			if t.GetBody == nil {
				pin()
				return out, s.deliver()
			}
			b, gerr := t.GetBody()
			if gerr != nil {
				pin()
				return out, s.deliver()
			}
			ex.Body = b
		}
		if !c.Reusable() && t.Pinned() {
			pin()
			return out, s.deliver()
		}
		a.creds[s.role] = s.answer
		a.rebuild()
		t.Counters().AuthRounds.Add(1)
		if !c.Reusable() {
			return out, fmt.Errorf("engine: %w after a %d", shard.ErrResend, out.Status)
		}
	}
}

// upFront makes the remembered Digest answers of an exchange about to
// start on c, with the next nonce count: of c's own nonce for the space
// when it has one, else of the space's shared one (a connection's first
// requests). A nonce used by one connection only has its counts reach
// the server in the order they were made; one shared by connections in
// parallel does not, and a server that checks them (squid's
// check_nonce_count) answers stale=true to the late ones. It reports a
// change of credentials.
func (a *authState) upFront(c *conn.Conn) bool {
	changed := false
	for role, pre := range a.preDigest {
		if !pre || a.digest[role] {
			continue // none remembered, or this request's own answer
		}
		k := a.digestKey(role)
		d := ownDigest(c, k)
		if d == nil {
			d = a.e.digests.get(k)
		}
		changed = true
		if d == nil { // forgotten meanwhile: a challenge will tell
			a.creds[role], a.preDigest[role], a.sent[role] = "", false, nil
			continue
		}
		a.creds[role] = a.e.digests.authorize(d, a.method, a.digestURI(role))
		a.sent[role] = d
	}
	return changed
}

// answer decides, at the head of a 401 or 407, whether the engine answers
// it, and computes the credentials when it does.
func (a *authState) answer(resp *parser.Response, t *shard.Task) (role int, value string, ok bool) {
	pol := a.pol
	if pol == nil {
		return 0, "", false
	}
	var l *Login
	var id parser.HeaderID
	switch resp.Status() {
	case 401:
		role, l, id = 0, &pol.Origin, parser.HdrWWWAuthenticate
	case 407:
		if !a.parent || a.peerAuth {
			return 0, "", false
		}
		role, l, id = 1, &pol.Proxy, parser.HdrProxyAuthenticate
	default:
		return 0, "", false
	}
	if l.Mode != LoginOwn {
		return 0, "", false
	}
	if t.Pinned() && !resp.KeepAlive() {
		return 0, "", false // a pinned request is never sent on another connection
	}
	cs, err := auth.ParseChallenges(values(resp, id)...)
	if err != nil {
		return 0, "", false
	}
	ch := auth.Pick(cs)
	if ch == nil {
		return 0, "", false
	}
	ex := &t.Exchange
	if ex.Body != nil && ex.ContentLength != 0 && t.GetBody == nil && !ex.Head.ExpectContinue() {
		// The body is gone: it cannot be sent again. The next requests
		// in this space answer the challenge up front.
		a.learn(role, ch, l)
		return 0, "", false
	}
	maxRounds := pol.MaxRounds
	if maxRounds <= 0 {
		maxRounds = DefaultAuthRounds
	}
	stale := auth.Stale(ch)
	switch {
	case ch.Is("Basic"):
		if a.sentBasic[role] || a.rounds >= maxRounds {
			if a.sentBasic[role] {
				a.e.digests.forgetBasic(a.digestKey(role)) // refused: do not offer it again
			}
			return 0, "", false // our credentials were refused
		}
		a.sentBasic[role] = true
		a.rounds++
		a.e.digests.rememberBasic(a.digestKey(role))
		return role, auth.Basic(l.Credentials), true
	case stale && (a.digest[role] || a.preDigest[role]):
		if a.stales >= maxStale {
			return 0, "", false
		}
		a.stales++
	default:
		if a.digest[role] || a.rounds >= maxRounds {
			if a.digest[role] {
				a.forgetDigest(role) // refused: do not offer it again
			}
			return 0, "", false
		}
		a.digest[role] = true
		a.rounds++
	}
	d, err := auth.NewDigest(ch, l.Credentials)
	if err != nil {
		return 0, "", false
	}
	v := d.Authorize(a.method, a.digestURI(role))
	k := a.digestKey(role)
	// The new nonce is this connection's own. The space's shared one
	// changes only when it was the one answered (or there is none), so
	// that connections with nonces of their own are not disturbed.
	a.e.digests.offer(k, d, a.sent[role])
	setOwnDigest(a.c, k, d)
	a.sent[role] = d
	return role, v, true
}

// forgetDigest drops the role's remembered Digest challenge, the shared
// one and the connection's own: the server refused the credentials.
func (a *authState) forgetDigest(role int) {
	k := a.digestKey(role)
	a.e.digests.forget(k)
	setOwnDigest(a.c, k, nil)
}

// learn remembers a challenge the engine cannot answer for this request
// (its body cannot be sent again), so that the next requests in its
// space answer it up front, unless it refused credentials this request
// already sent.
func (a *authState) learn(role int, ch *auth.Challenge, l *Login) {
	k := a.digestKey(role)
	switch {
	case ch.Is("Basic"):
		if a.sentBasic[role] {
			a.e.digests.forgetBasic(k)
			return
		}
		a.e.digests.rememberBasic(k)
	case a.digest[role] || (a.preDigest[role] && !auth.Stale(ch)):
		// Refused; a retired nonce would have been stale=true.
		a.forgetDigest(role)
	default:
		if d, err := auth.NewDigest(ch, l.Credentials); err == nil {
			a.e.digests.store(k, d)
			setOwnDigest(a.c, k, d)
		}
	}
}

// roleField is the request field carrying each role's credentials.
var roleField = [2]string{"Authorization", "Proxy-Authorization"}

// digestURI is the uri parameter of a Digest answer: the request-target
// as sent, except for an origin behind a parent, which receives (and
// checks the uri against) the origin form the parent forwards.
func (a *authState) digestURI(role int) string {
	if role == 0 && a.parent {
		return originForm(a.target)
	}
	return a.target
}

// digestKey names the protection space a remembered Digest challenge
// belongs to: the connection identity, the role and, for an origin, its
// authority (a parent's connections reach many origins).
func (a *authState) digestKey(role int) digestKey {
	k := digestKey{key: a.key, role: role}
	if role == 0 {
		k.host = a.host
	}
	return k
}

// maxDigests bounds the remembered Digest challenges; beyond it the
// cache starts over (a forward proxy may meet many origins).
const maxDigests = 1024

type digestKey struct {
	key  poolset.Key
	role int
	host string
}

// digestCache remembers the last Digest challenge answered per
// protection space, so that later requests answer it before being
// challenged, counting the nonce's uses (RFC 7616 §3.4: nc). A server
// that has retired the nonce says stale=true, which is answered without
// counting as a failed round. It also remembers the spaces that asked
// for Basic, whose later requests send it up front (RFC 7617 §2.2).
type digestCache struct {
	mu     sync.Mutex
	m      map[digestKey]*auth.Digest
	basics map[digestKey]struct{}
}

// rememberBasic notes that k asked for Basic: the next requests in k
// send it before being challenged.
func (c *digestCache) rememberBasic(k digestKey) {
	c.mu.Lock()
	if c.basics == nil || len(c.basics) >= maxDigests {
		c.basics = make(map[digestKey]struct{})
	}
	c.basics[k] = struct{}{}
	delete(c.m, k) // the space asks for Basic now
	c.mu.Unlock()
}

func (c *digestCache) basicKnown(k digestKey) bool {
	c.mu.Lock()
	_, ok := c.basics[k]
	c.mu.Unlock()
	return ok
}

func (c *digestCache) forgetBasic(k digestKey) {
	c.mu.Lock()
	delete(c.basics, k)
	c.mu.Unlock()
}

func (c *digestCache) authorizeKey(k digestKey, method, uri string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[k]
	if !ok {
		return "", false
	}
	return d.Authorize(method, uri), true
}

// known reports a remembered Digest challenge for k.
func (c *digestCache) known(k digestKey) bool {
	c.mu.Lock()
	_, ok := c.m[k]
	c.mu.Unlock()
	return ok
}

// get returns k's shared Digest state, nil if none.
func (c *digestCache) get(k digestKey) *auth.Digest {
	c.mu.Lock()
	d := c.m[k]
	c.mu.Unlock()
	return d
}

// authorize answers with d and its next nonce count. Under the cache's
// lock: a shared state counts for every connection that borrows it, and
// a connection's own may be the shared one too.
func (c *digestCache) authorize(d *auth.Digest, method, uri string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return d.Authorize(method, uri)
}

// offer makes d k's shared state when k has none, or has old, the state
// whose answer the server just declined (a retired nonce).
func (c *digestCache) offer(k digestKey, d, old *auth.Digest) {
	c.mu.Lock()
	cur, ok := c.m[k]
	c.mu.Unlock()
	if !ok || (old != nil && cur == old) {
		c.store(k, d)
	}
}

func (c *digestCache) store(k digestKey, d *auth.Digest) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxDigests {
		c.m = make(map[digestKey]*auth.Digest)
	}
	c.m[k] = d
	delete(c.basics, k) // the space asks for Digest now
	c.mu.Unlock()
}

func (c *digestCache) forget(k digestKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// connDigests is a connection's own Digest states, one per role (see
// upFront), kept as the connection's note.
type connDigests [2]struct {
	k digestKey
	d *auth.Digest
}

// ownDigest returns c's own Digest state for k, nil if none.
func ownDigest(c *conn.Conn, k digestKey) *auth.Digest {
	if cd, _ := c.Note().(*connDigests); cd != nil && cd[k.role].d != nil && cd[k.role].k == k {
		return cd[k.role].d
	}
	return nil
}

// setOwnDigest makes d c's own Digest state for k (nil: none).
func setOwnDigest(c *conn.Conn, k digestKey, d *auth.Digest) {
	if c == nil {
		return
	}
	cd, _ := c.Note().(*connDigests)
	if cd == nil {
		if d == nil {
			return
		}
		cd = new(connDigests)
		c.SetNote(cd)
	}
	cd[k.role].k, cd[k.role].d = k, d
}

// originForm returns the path and query of an absolute-form target ("/"
// when it has none); other forms are returned as they are.
func originForm(target string) string {
	i := strings.Index(target, "://")
	if i < 0 {
		return target
	}
	rest := target[i+3:]
	if j := strings.IndexAny(rest, "/?"); j >= 0 {
		if rest[j] == '?' {
			return "/" + rest[j:]
		}
		return rest[j:]
	}
	return "/"
}

// values returns the values of every field id of resp, copied.
func values(resp *parser.Response, id parser.HeaderID) []string {
	var vs []string
	resp.Each(id, func(v []byte) bool {
		vs = append(vs, string(v))
		return true
	})
	return vs
}

// targetAuthority is the authority of an absolute-form target
// ("http://Host:80/p" gives "host:80"), or an authority-form one, in lower
// case: the origin a request through a parent names.
func targetAuthority(target string) string {
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
		if j := strings.IndexAny(target, "/?#"); j >= 0 {
			target = target[:j]
		}
	}
	return strings.ToLower(target)
}

// pinCause is whose connection-based handshake an exchange showed.
type pinCause uint8

const (
	pinNone   pinCause = iota
	pinParent          // the parent's own (407, Proxy-Authorization)
	pinOrigin          // an origin's (401, Authorization), directly or through a parent
	// pinIsolate: an origin's credentials through a parent that did not
	// say it ties its connection to the origin to ours. Nothing to pin
	// (the login cannot work so), but the parent may have tied it all
	// the same: the connection is closed after the exchange, never
	// pooled, so that no other client's request rides on the login.
	pinIsolate
)

// sentConnAuth is the request field whose NTLM or Negotiate credentials
// the exchange in progress carries upstream, HdrOther for none. A field
// the engine does not forward starts no handshake there: a
// Proxy-Authorization it removes (meant for the proxy in front of it) or
// replaces (a parent peer's own credentials, its own login), or an
// Authorization replaced by its own credentials (a 401 it answers, or
// Basic sent up front). Counting them would pin a connection that the
// engine's own per-request login authenticated, and its close would fail
// the client's next request with ErrPinnedGone.
func (a *authState) sentConnAuth() parser.HeaderID {
	switch {
	case a.connAuth[1] && a.passPA:
		return parser.HdrProxyAuthorization
	case a.connAuth[0] && a.creds[0] == "":
		return parser.HdrAuthorization
	}
	return parser.HdrOther
}

// observe notes a connection-based handshake in the exchange: NTLM or
// Negotiate credentials it carries upstream (sentConnAuth), or challenges
// in a 401 or 407.
// Through a parent, an origin's handshake (401, Authorization) is pinned
// only when the parent announces "Proxy-Support:
// Session-Based-Authentication" (RFC 4559 §5 usage): without it the
// parent may not keep the origin connection tied to ours, and origin
// credentials sent through it only isolate the connection (pinIsolate).
func (a *authState) observe(resp *parser.Response) pinCause {
	originOK := !a.parent || SessionBased(resp)
	switch a.sentConnAuth() {
	case parser.HdrProxyAuthorization:
		if a.parent {
			return pinParent
		}
	case parser.HdrAuthorization:
		if originOK {
			return pinOrigin
		}
		return pinIsolate
	}
	var id parser.HeaderID
	cause := pinOrigin
	switch resp.Status() {
	case 407:
		if !a.parent {
			return pinNone
		}
		id, cause = parser.HdrProxyAuthenticate, pinParent
	case 401:
		if !originOK {
			return pinNone
		}
		id = parser.HdrWWWAuthenticate
	default:
		return pinNone
	}
	if !ChallengesConnectionBased(resp, id) {
		return pinNone
	}
	return cause
}

// ChallengesConnectionBased reports a response whose challenges in field
// id (parser.HdrWWWAuthenticate or parser.HdrProxyAuthenticate) offer a
// connection-based scheme, NTLM or Negotiate: a login that holds for one
// connection only.
func ChallengesConnectionBased(resp *parser.Response, id parser.HeaderID) bool {
	found := false
	resp.Each(id, func(v []byte) bool {
		cs, err := auth.ParseChallenges(string(v))
		if err != nil {
			// An unparsable field still names its scheme first.
			found = auth.ConnectionBased(auth.CredentialsScheme(string(v)))
		} else {
			found = auth.AnyConnectionBased(cs)
		}
		return !found
	})
	return found
}

// SessionBased reports a response whose Proxy-Support field announces
// Session-Based-Authentication (RFC 4559 §5 usage): the proxy that sent
// it ties its connection to the origin to its client's, so an origin's
// connection-based login works through it.
func SessionBased(resp *parser.Response) bool {
	found := false
	resp.Each(parser.HdrProxySupport, func(v []byte) bool {
		found = bytes.Contains(bytes.ToLower(v), []byte("session-based-authentication"))
		return !found
	})
	return found
}

// capSink passes a response to the caller's sink, except a challenge the
// engine answers: that one's head and body are held back (the body is
// drained, so the connection stays usable) and delivered only if the
// engine finds, after all, that it cannot resend.
type capSink struct {
	a    *authState
	t    *shard.Task
	next conn.Sink

	pin       pinCause
	capturing bool
	role      int    // whose challenge is held back: 0 origin, 1 proxy
	answer    string // its credentials
	head      []byte
	method    parser.Method
	body      []byte
}

func (s *capSink) OnHead(resp *parser.Response) error {
	s.pin = s.a.observe(resp)
	if role, value, ok := s.a.answer(resp, s.t); ok {
		s.capturing, s.role, s.answer = true, role, value
		s.head = append(s.head[:0], resp.Raw()...)
		s.method = s.t.Exchange.Edits.MethodID(s.t.Exchange.Head)
		return nil
	}
	s.tellPinned()
	s.tellAuth()
	return s.next.OnHead(resp)
}

// tellAuth tells an AuthSink, before its OnHead, whose credentials the
// exchange carried: the client's to a parent, or the engine's own to the
// origin (the credentials of this exchange, in a.creds).
func (s *capSink) tellAuth() {
	a := s.a
	n := AuthNote{
		ClientProxy: a.pol != nil && a.pol.Proxy.Mode == LoginPassThrough && a.parent && !a.peerAuth,
		OwnOrigin:   a.creds[0] != "",
	}
	if n == (AuthNote{}) {
		return
	}
	if as, ok := s.next.(AuthSink); ok {
		as.OnAuth(n)
	}
}

// tellPinned tells a SessionSink, before its OnHead, that the exchange
// runs on its session's pinned connection, or carries the request's
// handshake message (NTLM or Negotiate credentials) on the connection it
// pins: a response that closes that connection loses the handshake too,
// and the client must start over on a new connection rather than send
// its next message to one that never saw the first.
func (s *capSink) tellPinned() {
	if !s.t.Pinned() && (s.t.PinKey == 0 || s.a.sentConnAuth() == parser.HdrOther || (s.pin != pinOrigin && s.pin != pinParent)) {
		return
	}
	if ss, ok := s.next.(SessionSink); ok {
		ss.OnPinnedConn()
	}
}

// OnInterim passes interim responses on to a caller's sink that takes
// them, also during an authentication round: they are not part of the
// challenge.
func (s *capSink) OnInterim(resp *parser.Response) error {
	if is, ok := s.next.(conn.InterimSink); ok {
		return is.OnInterim(resp)
	}
	return nil
}

func (s *capSink) OnBody(p []byte) error {
	if !s.capturing {
		return s.next.OnBody(p)
	}
	if len(s.body)+len(p) <= maxCapture {
		s.body = append(s.body, p...)
		return nil
	}
	// Too long to hold back: the caller gets the challenge after all.
	if err := s.deliver(); err != nil {
		return err
	}
	return s.next.OnBody(p)
}

// deliver hands the held-back challenge to the caller's sink.
func (s *capSink) deliver() error {
	s.capturing = false
	var resp parser.Response
	resp.SetRequestMethod(s.method)
	if _, err := resp.Parse(s.head); err != nil {
		return fmt.Errorf("engine: re-reading a held-back challenge: %w", err)
	}
	s.tellPinned()
	s.tellAuth()
	if err := s.next.OnHead(&resp); err != nil {
		return err
	}
	if len(s.body) > 0 {
		return s.next.OnBody(s.body)
	}
	return nil
}
