package engine

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine/balance"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
	"github.com/serverside-go/serverside/shard"
)

// Defaults of a GroupConfig's zero fields.
const (
	DefaultMaxFails      = 3
	DefaultBackoff       = time.Second
	DefaultMaxBackoff    = 30 * time.Second
	DefaultCheckInterval = 5 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
)

// GroupConfig describes a peer group: the peers a request naming the
// group (Upstream.Group) may go to, how one is chosen, and how their
// health is judged.
type GroupConfig struct {
	// Balancer chooses among the peers that are up: balance.RoundRobin
	// (smooth weighted round-robin, the default), balance.LeastConn,
	// balance.P2C or balance.Hash (on Upstream.HashKey).
	Balancer balance.Kind
	// Peers are the group's members, at least one and at most 64, with
	// distinct names.
	Peers []Peer
	// Health sets passive and active health checking.
	Health Health
	// Seed seeds the random draws of balance.P2C.
	Seed uint64
}

// Peer is one member of a group: an origin server, or a parent proxy.
type Peer struct {
	// Name identifies the peer in Stats and DrainPeer; default Addr.
	Name string
	// Addr is the resolved ip:port of the peer.
	Addr string
	// Weight is the peer's share of the requests, at most MaxWeight;
	// default 1.
	Weight int
	// Parent marks a forwarding proxy: requests to it are sent in
	// absolute form ("http://host/path", the host taken from the Host
	// field when the head is in origin form), and its connections pool
	// under their own key (Via "fwd", Cred naming Username).
	Parent bool
	// Username and Password, for a parent, are sent preemptively as Basic
	// Proxy-Authorization on every request.
	Username, Password string
	// MaxConns caps the peer's connections (those of its own pool key:
	// not those that a login's credential scope pools apart, under keys
	// capped by MaxConnsPerUpstream); MaxPending the requests
	// waiting for one of them, PendingTimeout each wait. Zero takes the
	// engine's MaxConnsPerUpstream, the pool's default queue bound
	// (poolset.DefaultMaxWaitersPerKey, 1024) and the engine's
	// PendingTimeout.
	// A peer at its MaxConns (all its connections busy or being dialed)
	// is skipped by the balancer while another peer can take the
	// request at once; with every peer at its cap, the request queues.
	// A parent's MaxConns counts the CONNECT tunnels through it (Tunnel
	// with Group) as well: a CONNECT waits for a slot in the parent's
	// queue, with its requests, as they do.
	MaxConns, MaxPending int
	PendingTimeout       time.Duration
	// TLS, when set, speaks TLS to the peer: an https origin, or a parent
	// proxy spoken to over TLS. Its ServerName, when empty, is the host of
	// Addr (an IP address, which Go verifies against the certificate's IP
	// SANs and does not send as SNI). The TLS identity is part of the
	// peer's pool key, as for Upstream.TLS. Like an Upstream's, a *TLS must
	// not change once used. A parent's TLS also applies to the tunnels
	// opened through it (TunnelRequest.Group).
	TLS *TLS
	// Pipeline, when above 1, pipelines requests to the peer (RFC 9112
	// §9.3.2): GETs and HEADs without a body go out behind the ones
	// already waiting on a connection, up to Pipeline per connection, and
	// the heads that come together go out in one write. It saves a write
	// and a read per request on busy connections. Only for plain HTTP
	// peers that answer pipelined requests in order (nginx, Apache,
	// HAProxy, Go's net/http do); requests whose context the caller can
	// cancel are not pipelined. A pipelined request whose connection ends
	// before its response (an earlier response closed it) is sent again
	// on another connection, whatever MaxRetries says: it failed for
	// another request's reason. A connection takes no request past
	// MaxConnRequests or MaxConnLifetime, pipelined or not. Zero or 1: no
	// pipelining.
	Pipeline int
}

// Health configures the health of a group's peers.
//
// Passive checking watches real requests: MaxFails consecutive connect
// failures, protocol errors, new connections closed by the peer before
// any response byte or response heads not come within the engine's
// ResponseHeaderTimeout (from an origin; a parent waits for the origin
// as the engine does, and its timeouts say nothing of it) mark a peer
// down for Backoff, doubled after
// each failed probe up to MaxBackoff; not the only peer of a group, which
// keeps taking requests. When the back-off has passed, one
// request is let through as a probe: its success brings the peer up, its
// failure doubles the back-off. A down peer takes no other requests.
//
// Active checking, when CheckPath is set, sends "GET CheckPath" to every
// peer each CheckInterval: a response with CheckStatus (any 2xx or 3xx
// when zero) brings the peer up, anything else marks it down until a
// check passes (no probe request goes to it meanwhile).
type Health struct {
	// MaxFails is the consecutive failures that mark a peer down;
	// default 3, negative turns passive checking off.
	MaxFails int
	// Backoff is the first down period (default 1s), MaxBackoff the
	// longest (default 30s, or Backoff when that is longer; one set below
	// Backoff is Backoff: the period does not grow).
	Backoff, MaxBackoff time.Duration
	// CheckPath is the origin-form target of active checks; empty for
	// none. CheckHost is their Host field, default the peer's Addr (for a
	// parent, name an origin behind it).
	CheckPath, CheckHost string
	// CheckInterval is the time between checks (default 5s),
	// CheckTimeout bounds one (default 2s).
	CheckInterval, CheckTimeout time.Duration
	// CheckStatus is the status a healthy peer answers with; zero
	// accepts any 2xx or 3xx.
	CheckStatus int
}

// validate refuses negative durations and a CheckStatus that is no status.
func (h Health) validate() error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Backoff", h.Backoff}, {"MaxBackoff", h.MaxBackoff}, {"CheckInterval", h.CheckInterval}, {"CheckTimeout", h.CheckTimeout}} {
		if f.v < 0 {
			return fmt.Errorf("Health.%s is negative", f.name)
		}
	}
	if h.CheckStatus != 0 && (h.CheckStatus < 100 || h.CheckStatus > 599) {
		return fmt.Errorf("Health.CheckStatus %d is not a status code", h.CheckStatus)
	}
	return nil
}

// MaxWeight bounds Peer.Weight. Weights are shares, so a thousand to one
// is as fine a split as any group needs, and the consistent-hash ring
// places balance.PointsPerWeight points per unit of weight: an unbounded
// weight would build a ring of any size.
const MaxWeight = 1000

// validate refuses a peer's negative weight and limits, and a weight over
// MaxWeight.
func (p Peer) validate() error {
	if p.Weight > MaxWeight {
		return fmt.Errorf("Weight %d is over MaxWeight (%d)", p.Weight, MaxWeight)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"Weight", int64(p.Weight)}, {"MaxConns", int64(p.MaxConns)}, {"MaxPending", int64(p.MaxPending)},
		{"PendingTimeout", int64(p.PendingTimeout)}} {
		if f.v < 0 {
			return fmt.Errorf("%s is negative", f.name)
		}
	}
	return nil
}

func (h Health) normalized() Health {
	if h.MaxFails == 0 {
		h.MaxFails = DefaultMaxFails
	}
	if h.Backoff <= 0 {
		h.Backoff = DefaultBackoff
	}
	switch {
	case h.MaxBackoff == 0:
		h.MaxBackoff = max(DefaultMaxBackoff, h.Backoff)
	case h.MaxBackoff < h.Backoff:
		h.MaxBackoff = h.Backoff // a cap below the first period: no growth
	}
	if h.CheckInterval <= 0 {
		h.CheckInterval = DefaultCheckInterval
	}
	if h.CheckTimeout <= 0 {
		h.CheckTimeout = DefaultCheckTimeout
	}
	return h
}

// PeerState is a peer's health and drain state.
type PeerState uint8

// Peer states.
const (
	PeerUp       PeerState = iota // takes requests
	PeerDown                      // failed; waiting out its back-off or probing
	PeerDraining                  // DrainPeer: no new requests, connections still open
	PeerDrained                   // DrainPeer: no connections left
)

// String names the state.
func (s PeerState) String() string {
	switch s {
	case PeerUp:
		return "up"
	case PeerDown:
		return "down"
	case PeerDraining:
		return "draining"
	case PeerDrained:
		return "drained"
	}
	return "invalid"
}

// GroupStats is one group's state.
type GroupStats struct {
	Balancer balance.Kind
	Peers    []PeerStats
}

// PeerStats is one peer's state and counters.
type PeerStats struct {
	Name, Addr string
	Parent     bool
	Weight     int
	State      PeerState
	// Picks counts the balancer's choices of this peer (probes included).
	Picks uint64
	// Failures counts connect failures, protocol errors, new connections
	// the peer dropped unanswered, response-header timeouts (an
	// origin's, not a parent's) and failed active checks; Downs the
	// times the peer was marked down.
	Failures, Downs uint64
	// Rerouted counts requests moved to another peer after their connect
	// to this one failed, this one was drained while they waited for a
	// connection, this one closed their new connection unanswered, or
	// (an origin) did not answer them within the response-header
	// timeout.
	Rerouted uint64
	// Pool is the pool's view of the peer's connections, added up over
	// its pool keys: its own, those its requests' logins give a
	// credential scope, and a parent's tunnel keys (an open tunnel is
	// Busy); while draining, Pool.Conns() is what is left to close.
	Pool poolset.Stats
}

// group is a peer group's runtime state.
type group struct {
	name  string
	kind  balance.Kind
	hc    Health
	peers []*peer
	keys  []poolset.Key // peers[i].key, for Pool.Loads
	byKey map[string]*peer

	capped bool // some peer has a connection cap: pick reads the loads

	mu    sync.Mutex // guards what follows and the peers' health fields
	bal   balance.Balancer
	view  []balance.Peer
	loads []int

	stop   context.CancelFunc // ends active checks
	checks sync.WaitGroup
}

// peer is one peer's runtime state.
type peer struct {
	cfg  Peer
	idx  int
	key  poolset.Key
	cap  int    // connection cap: cfg.MaxConns, else the engine's; 0 for none
	auth []byte // Basic Proxy-Authorization value; nil without credentials
	// dialer makes the peer's connections when they are not plain TCP
	// (Peer.TLS); nil for netpoll's dial. parent is the peer as a CONNECT
	// parent, for tunnels through the group.
	dialer shard.Dialer
	parent *Parent

	// Guarded by the group's mu.
	up       bool
	draining bool
	probing  bool // a probe request is out
	// checkDown says that an active check marked the peer down: only a
	// passing check brings it up. A peer that fails its check may well
	// answer other requests (its operator took it out of service), so
	// no request goes to it as a probe, and the response to one routed
	// before the check does not bring it up.
	checkDown bool
	fails     int
	backoff   time.Duration
	retryAt   time.Time

	picks, failures, downs, rerouted atomic.Uint64
	// tunnels counts the CONNECT tunnels through the peer being opened
	// or open (Tunnel with a Group): load that its pool key does not
	// show, the tunnels pooling under keys of their own. A peer that
	// stays in a group replaced by SetGroup keeps its counter.
	tunnels *atomic.Int64

	check     parser.Request // active check head, used by the group's checker only
	checkBuf  []byte
	checkEdit *parser.Edits
}

// newGroup validates cfg and builds a group.
func newGroup(name string, cfg GroupConfig, defaultPending time.Duration, defaultMaxConns int) (*group, error) {
	if len(cfg.Peers) == 0 {
		return nil, fmt.Errorf("%w: group %q: no peers", ErrBadConfig, name)
	}
	if len(cfg.Peers) > 64 {
		return nil, fmt.Errorf("%w: group %q: %d peers, at most 64", ErrBadConfig, name, len(cfg.Peers))
	}
	if err := cfg.Health.validate(); err != nil {
		return nil, fmt.Errorf("%w: group %q: %w", ErrBadConfig, name, err)
	}
	kind := cfg.Balancer
	if kind == "" {
		kind = balance.RoundRobin
	}
	g := &group{name: name, kind: kind, hc: cfg.Health.normalized(), byKey: make(map[string]*peer)}
	names := make([]string, len(cfg.Peers))
	weights := make([]int, len(cfg.Peers))
	for i, pc := range cfg.Peers {
		if pc.Addr == "" {
			return nil, fmt.Errorf("%w: group %q: peer %d has no address", ErrBadConfig, name, i)
		}
		if err := checkAddr(pc.Addr); err != nil {
			return nil, fmt.Errorf("%w: group %q: peer %d address %q: %w", ErrBadConfig, name, i, pc.Addr, err)
		}
		if err := pc.validate(); err != nil {
			return nil, fmt.Errorf("%w: group %q: peer %d: %w", ErrBadConfig, name, i, err)
		}
		if pc.Name == "" {
			pc.Name = pc.Addr
		}
		if pc.Weight <= 0 {
			pc.Weight = 1
		}
		if _, dup := g.byKey[pc.Name]; dup {
			return nil, fmt.Errorf("%w: group %q: two peers named %q", ErrBadConfig, name, pc.Name)
		}
		if pc.PendingTimeout <= 0 {
			pc.PendingTimeout = defaultPending
		}
		p := &peer{cfg: pc, idx: i, up: true, key: poolset.Key{Addr: pc.Addr}, tunnels: new(atomic.Int64),
			cap: pc.MaxConns}
		if p.cap == 0 {
			p.cap = max(defaultMaxConns, 0)
		}
		g.capped = g.capped || p.cap > 0
		if pc.Parent {
			p.parent = &Parent{Addr: pc.Addr, User: pc.Username, Password: pc.Password, TLS: pc.TLS}
			p.key.Via = "fwd"
			if pc.Username != "" || pc.Password != "" {
				cred := pc.Username + ":" + pc.Password
				p.auth = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(cred)))
				sum := sha256.Sum256([]byte(cred))
				p.key.Cred = hex.EncodeToString(sum[:8])
			}
		}
		if err := p.buildCheck(g.hc); err != nil {
			return nil, fmt.Errorf("engine: group %q: peer %q: %w", name, pc.Name, err)
		}
		g.peers = append(g.peers, p)
		g.keys = append(g.keys, p.key)
		g.byKey[pc.Name] = p
		names[i], weights[i] = pc.Name, pc.Weight
	}
	bal, err := balance.New(kind, names, weights, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("%w: group %q: %w", ErrBadConfig, name, err)
	}
	g.bal = bal
	g.view = make([]balance.Peer, len(g.peers))
	g.loads = make([]int, len(g.peers))
	return g, nil
}

// distinctKeys refuses two peers of g that are one upstream (one pool key:
// the address, and the TLS identity and credentials when they have some).
// They would share its connections, its limits and its drain, while the
// group counted, judged and drained each apart: draining one would fail
// the other's requests while it showed up.
func (g *group) distinctKeys() error {
	for i, p := range g.peers {
		if j := slices.Index(g.keys[:i], p.key); j >= 0 {
			return fmt.Errorf("%w: group %q: peers %q and %q are one upstream (%s)", ErrBadConfig, g.name, g.peers[j].cfg.Name, p.cfg.Name, p.cfg.Addr)
		}
	}
	return nil
}

// checkAddr refuses a peer address that is not host:port with a port
// number from 1 to 65535: a service name ("http") is not a port the
// configuration should leave to a resolver, and an empty or zero port
// could only fail every dial.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// buildCheck prepares the peer's active check head.
func (p *peer) buildCheck(hc Health) error {
	if hc.CheckPath == "" {
		return nil
	}
	host := hc.CheckHost
	if host == "" {
		host = p.cfg.Addr
	}
	// A line break in either would add fields to the check, or a second
	// request after it, that the parse below still takes for valid.
	if strings.ContainsFunc(hc.CheckPath+host, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("health check path %q or host %q: control character", hc.CheckPath, host)
	}
	p.checkBuf = []byte("GET " + hc.CheckPath + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: serverside-health\r\n\r\n")
	n, err := p.check.Parse(p.checkBuf)
	if err == nil && (!p.check.Done() || n != len(p.checkBuf)) {
		err = errors.New("not one request head")
	}
	if err != nil {
		return fmt.Errorf("health check path %q: %w", hc.CheckPath, err)
	}
	ed, err := p.edits(&p.check, nil)
	if err != nil {
		return err
	}
	p.checkEdit = ed
	return nil
}

// edits returns the edits for sending head to p: the caller's for an
// origin; for a parent a copy with an absolute-form target and the
// parent's credentials.
func (p *peer) edits(head *parser.Request, user *parser.Edits) (*parser.Edits, error) {
	if !p.cfg.Parent {
		return user, nil
	}
	ed := new(parser.Edits)
	if user != nil {
		ed.CopyFrom(user)
	}
	target := head.Target()
	if ed.Target != nil {
		target = ed.Target
	}
	if len(target) > 0 && target[0] == '/' {
		host := head.Get(parser.HdrHost)
		if len(host) == 0 {
			return nil, fmt.Errorf("%w: an origin-form request for parent %s has no Host", ErrBadRequest, p.cfg.Name)
		}
		abs := make([]byte, 0, len("http://")+len(host)+len(target))
		abs = append(append(append(abs, "http://"...), host...), target...)
		ed.Target = abs
	}
	if p.auth != nil {
		ed.Set("Proxy-Authorization", p.auth)
	}
	return ed, nil
}

// eligibleLocked reports whether p may take a new request now. g.mu must
// be held.
func (p *peer) eligibleLocked(now time.Time) bool {
	if p.draining {
		return false
	}
	return p.up || (!p.checkDown && !p.probing && !now.Before(p.retryAt))
}

// pick chooses a peer for a request, skipping the peers in the tried
// mask. probe reports that the peer is down and this request is its probe.
func (g *group) pick(pool *poolset.Pool[*conn.Conn], key string, tried uint64) (p *peer, probe bool, err error) {
	now := time.Now()
	g.mu.Lock()
	if g.capped || g.kind == balance.LeastConn || g.kind == balance.P2C {
		pool.Loads(g.keys, g.loads)
	}
	full := false
	for i, p := range g.peers {
		load := g.loads[i]
		if p.parent != nil {
			// Its tunnels are connections to it too, under keys of
			// their own, and hold slots of its cap (Pool.Hold).
			load += int(p.tunnels.Load())
		}
		eligible := tried&(1<<uint(i)) == 0 && p.eligibleLocked(now)
		if eligible && p.cap > 0 && load >= p.cap {
			// At its cap: a request would wait in the peer's queue.
			// Left out while another peer can take it at once.
			eligible, full = false, true
		}
		g.view[i] = balance.Peer{
			Weight:   p.cfg.Weight,
			Load:     load,
			Eligible: eligible,
		}
	}
	i := g.bal.Pick(g.view, key)
	if i < 0 && full {
		// Every peer that may take the request is at its cap: it
		// queues at the one the balancer picks among them.
		for i, p := range g.peers {
			g.view[i].Eligible = tried&(1<<uint(i)) == 0 && p.eligibleLocked(now)
		}
		i = g.bal.Pick(g.view, key)
	}
	if i < 0 {
		g.mu.Unlock()
		return nil, false, fmt.Errorf("%w: group %q", ErrNoPeer, g.name)
	}
	p = g.peers[i]
	if !p.up {
		p.probing, probe = true, true
	}
	g.mu.Unlock()
	p.picks.Add(1)
	return p, probe, nil
}

// outcome is what one request or check says of a peer's health.
type outcome uint8

const (
	neutral outcome = iota // says nothing: canceled, a stale connection, a sink error
	healthy                // the peer answered
	failed                 // connect failure or protocol error
)

// classify judges a finished request's error for passive health.
func classify(err error) outcome {
	if err == nil {
		return healthy
	}
	e := conn.AsError(err)
	switch {
	case e == nil:
		return neutral
	case e.Phase == conn.PhaseProtocol:
		return failed
	case e.Phase == conn.PhaseDial && localResourceError(err):
		// The proxy is out of descriptors or memory: the dial failed
		// before anything reached the peer, which says nothing of it.
		return neutral
	case e.Phase == conn.PhaseDial && errors.Is(err, conn.ErrConnectTimeout):
		// The peer did not answer the connect within ConnectTimeout
		// (Go net's error says DeadlineExceeded too, but the caller's
		// context was live): a failed connect.
		return failed
	case (e.Phase == conn.PhaseDial || e.Phase == conn.PhaseTLS) && !errors.Is(err, shard.ErrOverloaded) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		// A failed handshake (a certificate that does not verify, an
		// endpoint that does not speak TLS) is a failed connect too: the
		// request is rerouted, and the peer would fail the next one alike.
		return failed
	case headerTimeout(err):
		// The peer took the request and gave no response head within
		// ResponseHeaderTimeout: a peer that hangs fails every request
		// sent to it (nginx's max_fails counts timeouts too). Not a
		// parent's (judge).
		return failed
	case e.Responded:
		return healthy
	case !e.Reused && (e.Phase == conn.PhaseWrite || e.Phase == conn.PhaseAwaitHead || e.Phase == conn.PhaseTunnel) &&
		peerHungUp(err):
		// A new connection the peer closed or reset before answering
		// a request or a CONNECT (a backend that accepts and drops
		// every connection, a port forwarder whose target is gone):
		// not the stale keep-alive race, which only a reused
		// connection meets, but a peer that fails everything sent to
		// it.
		return failed
	}
	return neutral
}

// judge is classify for a request that went to peer p. A parent proxy
// waits for the origin's response as the engine waits for its own, so a
// response head not come within ResponseHeaderTimeout is the origin's
// doing as likely as the parent's: it says nothing of the parent (Squid
// counts no read timeout against a cache_peer either), or one slow site
// would mark every parent down.
func judge(p *peer, err error) outcome {
	if p.parent != nil && headerTimeout(err) {
		return neutral
	}
	return classify(err)
}

// headerTimeout reports a request that got no response head within
// ResponseHeaderTimeout.
func headerTimeout(err error) bool {
	e := conn.AsError(err)
	return e != nil && e.Phase == conn.PhaseAwaitHead && errors.Is(err, conn.ErrHeaderTimeout)
}

// peerHungUp reports whether err is the peer closing or resetting the
// connection, not the caller's body, the sink, a timeout or our own close.
func peerHungUp(err error) bool {
	if conn.CallerFault(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return errors.Is(err, conn.ErrUnexpectedEOF) || errors.Is(err, conn.ErrPeerReset) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// localResourceError reports whether err is the local host running out
// of a resource (descriptors, socket buffers, memory).
func localResourceError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// pickParent picks a parent peer of the group groupName for a tunnel or
// a request sent through a CONNECT tunnel, skipping the peers in the
// tried mask. The caller reports the outcome with g.report (probe says
// the pick is the peer's probe).
func (e *Engine) pickParent(groupName, hashKey string, tried uint64) (g *group, p *peer, probe bool, err error) {
	if g = e.group(groupName); g == nil {
		return nil, nil, false, fmt.Errorf("%w: %q", ErrNoGroup, groupName)
	}
	if p, probe, err = g.pick(e.pool, hashKey, tried); err != nil {
		return nil, nil, false, err
	}
	if p.parent == nil {
		g.report(p, probe, neutral, false, nil, e.cfg.Logger.Info)
		return nil, nil, false, fmt.Errorf("%w: peer %q of group %q is not a parent proxy", ErrBadRequest, p.cfg.Name, groupName)
	}
	return g, p, probe, nil
}

// tunnelPeer is the peer of group groupName that is the parent at addr,
// or nil.
func (e *Engine) tunnelPeer(groupName, addr string) *peer {
	g := e.group(groupName)
	if g == nil {
		return nil
	}
	for _, p := range g.peers {
		if p.parent != nil && p.cfg.Addr == addr {
			return p
		}
	}
	return nil
}

// PickParent picks a parent proxy from the group groupName with the
// group's balancer (hashKey for balance.Hash), for a request to send
// through a CONNECT tunnel (Upstream.Via): an https origin behind a group
// of parents. The pick counts in PeerStats; the request's outcome does
// not feed the peer's passive health (a tunnel opened with
// TunnelRequest.Group does): a down peer is picked once per back-off, as
// a probe whose outcome stays unknown. The returned *Parent is the peer's own, the
// same value for every pick of that peer: it must not be changed.
func (e *Engine) PickParent(groupName, hashKey string) (*Parent, error) {
	g, p, probe, err := e.pickParent(groupName, hashKey, 0)
	if err != nil {
		return nil, err
	}
	if probe {
		// The probe is spent on a request whose outcome the engine never
		// learns: the peer stays down, and the next probe waits another
		// back-off. Reported as nothing, the peer would take every pick
		// from now on, a down peer as any other.
		g.spendProbe(p)
	}
	return p.parent, nil
}

// spendProbe ends p's probe without an outcome: p stays down until its
// next probe, one back-off from now.
func (g *group) spendProbe(p *peer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p.probing = false
	if !p.up {
		p.retryAt = time.Now().Add(p.backoff)
	}
}

// report records an outcome for p; probe says the request was p's probe.
// active marks an active check, whose failure marks the peer down at
// once. why is the failure, for the log line of a peer marked down (nil
// when there is none to tell).
func (g *group) report(p *peer, probe bool, o outcome, active bool, why error, log func(string, ...any)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		p.probing = false
	}
	switch o {
	case healthy:
		if p.checkDown && !active {
			return
		}
		if !p.up {
			log("engine: peer up", "group", g.name, "peer", p.cfg.Name)
		}
		p.up, p.fails, p.backoff, p.checkDown = true, 0, 0, false
	case failed:
		p.failures.Add(1)
		p.fails++
		if active {
			p.checkDown = true
		}
		switch {
		case !p.up && (probe || active):
			p.backoff = min(2*p.backoff, g.hc.MaxBackoff)
			p.retryAt = time.Now().Add(p.backoff)
		case p.up && (active || (g.hc.MaxFails > 0 && p.fails >= g.hc.MaxFails && len(g.peers) > 1)):
			// A lone peer is not marked down by passive checks (nginx
			// does the same): with nowhere else to send requests, that
			// would only turn its errors into ErrNoPeer for everyone.
			p.up = false
			p.backoff = g.hc.Backoff
			p.retryAt = time.Now().Add(p.backoff)
			p.downs.Add(1)
			args := []any{"group", g.name, "peer", p.cfg.Name, "fails", p.fails, "backoff", p.backoff}
			if why != nil {
				args = append(args, "reason", why.Error())
			}
			log("engine: peer down", args...)
		}
	}
}

// groupsMap is the engine's groups, replaced as a whole by SetGroup.
type groupsMap = map[string]*group

// SetGroup adds the peer group name, or replaces it (its health state
// starts afresh; connections of peers that stay are kept by the pool, and
// so is their drain (DrainPeer); the connection limits and the drain of
// peers that leave are lifted, unless another group still has the peer). Requests already
// routed finish on the peer they were given. A peer's limits are those of
// its pool key: two groups naming the same address with different limits
// share the ones set last.
func (e *Engine) SetGroup(name string, cfg GroupConfig) error {
	if name == "" {
		return fmt.Errorf("%w: empty group name", ErrBadConfig)
	}
	g, err := newGroup(name, cfg, e.cfg.PendingTimeout, e.cfg.MaxConnsPerUpstream)
	if err != nil {
		return err
	}
	if err := e.peersTLS(g); err != nil {
		return err
	}
	if err := g.distinctKeys(); err != nil {
		return err
	}
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	old := e.groups.Load()
	next := make(groupsMap, len(*old)+1)
	maps.Copy(next, *old)
	next[name] = g
	if prev := (*old)[name]; prev != nil {
		prev.mu.Lock()
		for _, p := range prev.peers {
			if i := slices.Index(g.keys, p.key); i >= 0 {
				// The pool still drains a drained peer's key: the peer
				// stays drained, until UndrainPeer.
				g.peers[i].draining = p.draining
				g.peers[i].tunnels = p.tunnels // its open tunnels stay load
				continue
			}
			other := otherGroupPeer(next, name, p.key)
			if other != nil {
				// Another group still has the peer: the key keeps that
				// group's limits.
				e.pool.SetLimits(p.key, poolset.KeyLimits{MaxConns: other.cfg.MaxConns, MaxWaiters: other.cfg.MaxPending})
			} else {
				e.pool.SetLimits(p.key, poolset.KeyLimits{})
			}
			if p.draining && (other == nil || !other.draining) {
				for _, k := range e.peerKeys(p) {
					e.pool.Undrain(k)
				}
			}
		}
		prev.mu.Unlock()
	}
	for _, p := range g.peers {
		e.pool.SetLimits(p.key, poolset.KeyLimits{MaxConns: p.cfg.MaxConns, MaxWaiters: p.cfg.MaxPending})
	}
	e.groups.Store(&next)
	e.startChecks(g)
	e.mu.Unlock()
	// The old checker's requests take e.mu: stop it outside the lock.
	if prev := (*old)[name]; prev != nil {
		prev.stopChecks()
	}
	return nil
}

// otherGroupPeer returns a peer with pool key key in a group of groups
// other than name, or nil.
func otherGroupPeer(groups groupsMap, name string, key poolset.Key) *peer {
	for gn, g := range groups {
		if gn == name {
			continue
		}
		for _, p := range g.peers {
			if p.key == key {
				return p
			}
		}
	}
	return nil
}

// peersTLS completes the pool keys of g's TLS peers with their TLS
// identity and gives them their key's dialer. Plain-TCP peers get the Go
// net dialer with Config.GoNetIO, as a request naming an address does;
// without it they have none, and netpoll dials them.
func (e *Engine) peersTLS(g *group) error {
	for i, p := range g.peers {
		t := p.cfg.TLS
		if t == nil {
			if e.cfg.GoNetIO {
				p.dialer = e.goNet
			}
			continue
		}
		prof := e.profile(t)
		if prof.err != nil {
			return fmt.Errorf("engine: group %q: peer %q: %w", g.name, p.cfg.Name, prof.err)
		}
		sni := t.ServerName
		if sni == "" {
			sni = p.cfg.Addr
			if h, _, err := net.SplitHostPort(sni); err == nil {
				sni = h
			}
		}
		p.key.TLS = "sni=" + sni + ";" + prof.id
		g.keys[i] = p.key
		p.dialer = e.keyDialer(p.key, prof, sni, nil, nil, Login{})
	}
	return nil
}

// group returns the group name, or nil.
func (e *Engine) group(name string) *group { return (*e.groups.Load())[name] }

// DrainPeer takes peer out of group: it gets no new requests, its idle
// connections close at once, its busy ones after their response; a
// parent's open tunnels are not cut (the peer stays PeerDraining until
// they close). Its pinned sessions end the same way, each reported to
// Config.OnPinnedClosed, and their keys fail with ErrPinnedGone. Watch
// PeerStats for the state to turn PeerDrained. Undrain with UndrainPeer.
// Both fail with ErrClosed once the engine is closing.
func (e *Engine) DrainPeer(groupName, peerName string) error {
	// Under peersMu, as SetGroup: a group replaced between finding the
	// peer and draining its key would carry the old drain state over, or
	// miss that the key of a peer that left is draining.
	e.peersMu.Lock()
	g, p, err := e.findPeer(groupName, peerName)
	if err != nil {
		e.peersMu.Unlock()
		return err
	}
	g.mu.Lock()
	p.draining = true
	g.mu.Unlock()
	// Its keys with a credential scope and a parent's tunnel keys too:
	// they are connections to the peer as well (peer.owns). (A request that picked the peer just before the
	// drain and opens the first connection of a new scope leaves that
	// connection idle until the idle timeout; the peer shows draining
	// until then.)
	keys := e.peerKeys(p)
	for _, k := range keys {
		e.pool.Drain(k)
	}
	e.peersMu.Unlock()
	// A pinned session's requests may only go to its peer, so the
	// sessions end now rather than at their idle timeout: their clients
	// hear of it (OnPinnedClosed) and authenticate again elsewhere.
	for _, k := range keys {
		e.shards.EndSessions(k)
	}
	e.tpins.endPeer(e, groupName, p.cfg.Addr)
	return nil
}

// owns reports whether pool key k holds connections to p: p's own key,
// or that key with the credential scope of a request's login added
// (setupAuth: an origin's credentials, a parent's login, a client's
// Proxy-Authorization passed to a parent), which pools apart for each
// identity but goes to the same peer; and for a parent, the keys of the
// tunnels through it (parentRouteFor: Via "connect=<addr>", then the
// parent's TLS identity), CONNECT tunnels and pooled tunnels to https
// origins alike, whose Addr is the origin's.
func (p *peer) owns(k poolset.Key) bool {
	if p.parent != nil {
		if rest, ok := strings.CutPrefix(k.Via, "connect="+p.cfg.Addr); ok && (rest == "" || strings.HasPrefix(rest, ";")) {
			// Its own credentials' scope, or none, then a login's after
			// a "+" (newTunnelAuth): another parent at the same address
			// with other credentials has other tunnels.
			scope := p.parent.scope()
			return k.Cred == scope || strings.HasPrefix(k.Cred, scope+"+")
		}
	}
	return k.Addr == p.key.Addr && k.TLS == p.key.TLS && k.Via == p.key.Via &&
		(k.Cred == p.key.Cred || strings.HasPrefix(k.Cred, p.key.Cred+"+"))
}

// peerKeys lists p's pool keys: its own, and those of its credential
// scopes that the pool has state for.
func (e *Engine) peerKeys(p *peer) []poolset.Key {
	keys := []poolset.Key{p.key}
	for k := range e.pool.Snapshot() {
		if k != p.key && p.owns(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// addStats adds s to sum: the gauges and the counters.
func addStats(sum *poolset.Stats, s poolset.Stats) {
	sum.Connecting += s.Connecting
	sum.Busy += s.Busy
	sum.Idle += s.Idle
	sum.Pinned += s.Pinned
	sum.Held += s.Held
	sum.Waiting += s.Waiting
	sum.Reused += s.Reused
	sum.Dialed += s.Dialed
	sum.DialFailed += s.DialFailed
	sum.Waits += s.Waits
	sum.WaitTimeouts += s.WaitTimeouts
	sum.WaitCancels += s.WaitCancels
	sum.QueueFull += s.QueueFull
	c, x := &sum.Closed, s.Closed
	c.IdleTimeout += x.IdleTimeout
	c.HintExpired += x.HintExpired
	c.Lifetime += x.Lifetime
	c.MaxRequests += x.MaxRequests
	c.DeadOnCheckout += x.DeadOnCheckout
	c.DeadOnReturn += x.DeadOnReturn
	c.PeerClosedIdle += x.PeerClosedIdle
	c.OverCap += x.OverCap
	c.Drained += x.Drained
	c.UpstreamClose += x.UpstreamClose
	c.Owner += x.Owner
}

// peerDraining reports whether group groupName's peer at addr is draining.
func (e *Engine) peerDraining(groupName, addr string) bool {
	g := e.group(groupName)
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.peers {
		if p.cfg.Addr == addr && p.draining {
			return true
		}
	}
	return false
}

// UndrainPeer lets a drained peer take requests again.
func (e *Engine) UndrainPeer(groupName, peerName string) error {
	e.peersMu.Lock() // as in DrainPeer
	defer e.peersMu.Unlock()
	g, p, err := e.findPeer(groupName, peerName)
	if err != nil {
		return err
	}
	for _, k := range e.peerKeys(p) {
		e.pool.Undrain(k)
	}
	g.mu.Lock()
	p.draining = false
	g.mu.Unlock()
	return nil
}

// findPeer finds a peer of the current groups; e.peersMu is held, so
// that SetGroup does not replace the group meanwhile.
func (e *Engine) findPeer(groupName, peerName string) (*group, *peer, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, nil, ErrClosed
	}
	g := e.group(groupName)
	if g == nil {
		return nil, nil, fmt.Errorf("%w: %q", ErrNoGroup, groupName)
	}
	p := g.byKey[peerName]
	if p == nil {
		return nil, nil, fmt.Errorf("%w: group %q has no peer %q", ErrNoPeer, groupName, peerName)
	}
	return g, p, nil
}

// PeerStats returns every group's state, keyed by group name.
func (e *Engine) PeerStats() map[string]GroupStats {
	out := make(map[string]GroupStats)
	snap := e.pool.Snapshot()
	for name, g := range *e.groups.Load() {
		gs := GroupStats{Balancer: g.kind, Peers: make([]PeerStats, len(g.peers))}
		for i, p := range g.peers {
			ps := PeerStats{
				Name: p.cfg.Name, Addr: p.cfg.Addr, Parent: p.cfg.Parent, Weight: p.cfg.Weight,
				Picks: p.picks.Load(), Failures: p.failures.Load(), Downs: p.downs.Load(),
				Rerouted: p.rerouted.Load(),
			}
			for k, s := range snap {
				if p.owns(k) {
					addStats(&ps.Pool, s)
				}
			}
			g.mu.Lock()
			switch {
			case p.draining && ps.Pool.Conns() > 0:
				ps.State = PeerDraining
			case p.draining:
				ps.State = PeerDrained
			case !p.up:
				ps.State = PeerDown
			}
			g.mu.Unlock()
			gs.Peers[i] = ps
		}
		out[name] = gs
	}
	return out
}

// route picks req's peer in its group and points r's task at it.
func (e *Engine) route(req *Request, r *request) error {
	g := e.group(req.Group)
	if g == nil {
		return fmt.Errorf("%w: %q", ErrNoGroup, req.Group)
	}
	key := req.HashKey
	if key == "" && g.kind == balance.Hash {
		key = string(req.Head.Get(parser.HdrHost))
	}
	var p *peer
	var probe bool
	var err error
	pk, pinned := any(nil), false
	if req.PinKey != 0 {
		pk, pinned = e.sessions.Load(req.PinKey)
	}
	if pinned {
		// A pinned session's requests go to its peer, whatever the
		// balancer would pick; a peer drained or gone fails them, as does
		// the session's connection being gone.
		if gone, ok := pk.(goneSession); ok {
			return fmt.Errorf("%w: session %d: its connection to %s is gone", ErrPinnedGone, req.PinKey, gone.key.Addr)
		}
		p, err = g.sessionPeer(pk.(poolset.Key), req.PinKey)
	} else {
		p, probe, err = g.pick(e.pool, key, 0)
	}
	if err != nil {
		return err
	}
	r.group, r.hashKey, r.userEdits = g, key, req.Edits
	if err := r.aim(p, probe); err != nil {
		r.settlePeer(neutral, nil)
		return err
	}
	r.t.Reroute = r.reroute
	return nil
}

// routeVia picks the parent of req's ViaGroup that the tunnel to
// req.Addr goes through (on HashKey, default Addr, as for a Tunnel) and
// points r's task at it.
func (e *Engine) routeVia(req *Request, r *request) error {
	key := req.HashKey
	if key == "" {
		key = req.Addr
	}
	g := e.group(req.ViaGroup)
	if g == nil {
		return fmt.Errorf("%w: %q", ErrNoGroup, req.ViaGroup)
	}
	var p *peer
	var probe bool
	var err error
	if sk, gone, ok := e.viaSession(req); ok {
		// A pinned session to this target through a tunnel (an
		// origin's NTLM or Negotiate login): its requests go through
		// the parent that carries its connection, as a Group request's
		// go to its session's peer, whatever the balancer would pick.
		if gone {
			return fmt.Errorf("%w: session %d: its connection to %s is gone", ErrPinnedGone, req.PinKey, sk.Addr)
		}
		p, err = g.sessionPeer(sk, req.PinKey)
	} else {
		p, probe, err = g.pick(e.pool, key, 0)
	}
	if err != nil {
		return err
	}
	r.group, r.hashKey, r.userEdits, r.via = g, key, req.Edits, true
	r.upstream, r.tlsHost = req.Upstream, req.tlsHost
	if err := r.aimVia(p, probe); err != nil {
		r.settlePeer(neutral, nil)
		return err
	}
	r.t.Reroute = r.reroute
	return nil
}

// viaSession is the key of req's pinned session when that session's
// connection goes to req's Addr through a parent's tunnel, and whether
// the connection is gone; ok false when req has no such session (none,
// or one to another upstream: a forward proxy's client moving on to
// another site, whose requests are not the session's).
func (e *Engine) viaSession(req *Request) (key poolset.Key, gone, ok bool) {
	if req.PinKey == 0 {
		return key, false, false
	}
	v, pinned := e.sessions.Load(req.PinKey)
	if !pinned {
		return key, false, false
	}
	switch s := v.(type) {
	case goneSession:
		key, gone = s.key, true
	case poolset.Key:
		key = s
	}
	return key, gone, key.Addr == req.Addr && key.Via != ""
}

// aimVia points the task at the tunnel to its Addr through parent p:
// that route's pool key and dialer, and the caller's edits (the request
// goes to the origin as the caller shaped it).
func (r *request) aimVia(p *peer, probe bool) error {
	r.peer, r.probe = p, probe
	if p.parent == nil {
		return fmt.Errorf("%w: peer %q of group %q is not a parent proxy", ErrBadRequest, p.cfg.Name, r.group.name)
	}
	vr := Request{Upstream: r.upstream, Head: r.t.Exchange.Head, tlsHost: r.tlsHost}
	vr.ViaGroup, vr.Via = "", p.parent
	key := poolset.Key{Addr: vr.Addr}
	d, err := r.e.dialerFor(&vr, &key)
	if err != nil {
		return err
	}
	r.t.Key, r.t.Dialer, r.t.Exchange.Edits, r.t.Pipeline = key, d, r.userEdits, 0
	return nil
}

// classifyVia judges, for passive health, the finished request's error
// err when it went through a tunnel opened by the parent at parent. The
// dial's failures on the way to the parent (its connect, its TLS, its
// CONNECT dropped unanswered: errors naming the parent's address) judge
// it as a request's would; any answer to the CONNECT and any response
// through the tunnel are its success; what else happens past the tunnel
// is the origin's doing.
func classifyVia(err error, parent string) outcome {
	if err == nil || errors.Is(err, conn.ErrTunnelRefused) {
		return healthy
	}
	e := conn.AsError(err)
	switch {
	case e == nil:
		return neutral
	case e.Addr == parent:
		return classify(err)
	case e.Responded:
		return healthy
	}
	return neutral
}

// viaMoves reports whether a request through parent whose dial or wait
// failed with err can go through another parent: the connect to the
// parent failed or the parent dropped the CONNECT, nothing having been
// sent to the origin, or the parent was drained while the request waited
// for a connection. Not a refusal (the parent answered), nor a failure
// past the tunnel, which another parent would meet at the same origin.
func viaMoves(err error, parent string) bool {
	if errors.Is(err, poolset.ErrDraining) {
		return true
	}
	e := conn.AsError(err)
	return e != nil && e.Addr == parent && !errors.Is(err, conn.ErrTunnelRefused)
}

// sessionPeer is the peer of pinned session pinKey, whose connection
// pools under key: ErrPinnedGone when the group no longer has that peer or
// the peer is draining.
func (g *group) sessionPeer(key poolset.Key, pinKey uint64) (*peer, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.peers {
		if !p.owns(key) {
			continue
		}
		if p.draining {
			return nil, fmt.Errorf("%w: session %d: peer %s is draining", ErrPinnedGone, pinKey, p.cfg.Name)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: session %d: its peer left group %s", ErrPinnedGone, pinKey, g.name)
}

// goneSession marks in e.sessions a session whose connection is gone.
type goneSession struct{ key poolset.Key }

// onSession keeps e.sessions (shard.Config.OnSession).
func (e *Engine) onSession(pinKey uint64, key poolset.Key, ev shard.SessionEvent) {
	switch ev {
	case shard.SessionStarted:
		e.sessions.Store(pinKey, key)
	case shard.SessionGone:
		e.sessions.Store(pinKey, goneSession{key})
	default:
		e.sessions.Delete(pinKey)
	}
}

// aim points the task at peer p.
func (r *request) aim(p *peer, probe bool) error {
	r.peer, r.probe = p, probe
	ed, err := p.edits(r.t.Exchange.Head, r.userEdits)
	if err != nil {
		return err
	}
	r.t.Key = p.key
	r.t.Dialer = p.dialer
	r.t.Exchange.Edits = ed
	r.t.PendingTimeout = p.cfg.PendingTimeout
	r.t.Pipeline = 0
	if !probe && p.dialer == nil {
		r.t.Pipeline = p.cfg.Pipeline
	}
	return nil
}

// settlePeer reports the request's outcome to its peer's health, once;
// err is the request's failure, nil for none.
func (r *request) settlePeer(o outcome, err error) {
	if r.peer == nil {
		return
	}
	r.group.report(r.peer, r.probe, o, false, err, r.e.cfg.Logger.Info)
	r.peer = nil
}

// rerouteTask is the task's Reroute: the request moves to another peer
// of the group that it has not tried. Either nothing of it was sent (the
// dial to the current peer failed, or the peer was drained while the
// request waited for a connection), or the peer dropped a new connection
// unanswered and the shard found the request safe to send again (the
// engine's retry rules: an idempotent request, or one the peer cannot
// have received, with a body that was not read or can be replayed).
func (r *request) rerouteTask(t *shard.Task, err error) bool {
	if r.peer == nil {
		return false
	}
	from := r.peer
	if r.via {
		r.settlePeer(classifyVia(err, from.cfg.Addr), err)
		if !viaMoves(err, from.cfg.Addr) {
			return false
		}
	} else {
		r.settlePeer(judge(from, err), err)
		if from.parent != nil && headerTimeout(err) {
			// The origin behind every parent is the same: through
			// another, the request would only go to it again.
			return false
		}
	}
	r.tried |= 1 << uint(from.idx)
	p, probe, perr := r.group.pick(r.e.pool, r.hashKey, r.tried)
	if perr != nil {
		return false
	}
	aim := r.aim
	if r.via {
		aim = r.aimVia
	}
	if aim(p, probe) != nil {
		r.settlePeer(neutral, nil)
		return false
	}
	// The new peer has its own key, edits and credentials.
	r.e.setupAuth(r)
	from.rerouted.Add(1)
	return true
}

// startChecks starts g's active health checks, when it has any.
func (e *Engine) startChecks(g *group) {
	if g.hc.CheckPath == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	g.checks.Add(1)
	go func() {
		defer g.checks.Done()
		t := time.NewTicker(g.hc.CheckInterval)
		defer t.Stop()
		for {
			for _, p := range g.peers {
				e.checkPeer(ctx, g, p)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// stopChecks ends g's active checks and waits for the checker.
func (g *group) stopChecks() {
	if g.stop != nil {
		g.stop()
		g.checks.Wait()
	}
}

// checkPeer runs one active check of p.
func (e *Engine) checkPeer(ctx context.Context, g *group, p *peer) {
	g.mu.Lock()
	draining := p.draining
	g.mu.Unlock()
	if draining || ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, g.hc.CheckTimeout)
	defer cancel()
	s := &checkSink{}
	req := &Request{Head: &p.check, Edits: p.checkEdit, peer: p}
	err := e.Exchange(ctx, req, s)
	if errors.Is(err, ErrClosed) || ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return
	}
	if ce := conn.AsError(err); ce != nil && ce.Phase == conn.PhasePoolWait {
		// The check never got a connection: the peer is at its cap
		// (MaxConns, MaxPending) or the engine is overloaded. That says
		// nothing of the peer, which was not asked.
		return
	}
	ok := err == nil && (s.status == g.hc.CheckStatus || g.hc.CheckStatus == 0 && s.status >= 200 && s.status < 400)
	o, why := failed, err
	switch {
	case ok:
		o = healthy
	case err == nil && g.hc.CheckStatus != 0:
		why = fmt.Errorf("health check %s answered %d, want %d", p.check.Target(), s.status, g.hc.CheckStatus)
	case err == nil:
		why = fmt.Errorf("health check %s answered %d, want 2xx or 3xx", p.check.Target(), s.status)
	default:
		why = fmt.Errorf("health check %s: %w", p.check.Target(), err)
	}
	g.report(p, false, o, true, why, e.cfg.Logger.Info)
}

// checkSink keeps an active check's status and discards its body.
type checkSink struct{ status int }

func (s *checkSink) OnHead(resp *parser.Response) error { s.status = resp.Status(); return nil }
func (s *checkSink) OnBody([]byte) error                { return nil }
func (s *checkSink) OnDone(error)                       {}

// stopAllChecks ends every group's active checks.
func (e *Engine) stopAllChecks() {
	for _, g := range *e.groups.Load() {
		g.stopChecks()
	}
}
