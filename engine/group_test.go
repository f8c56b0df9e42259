package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine/balance"
)

// namedOrigin answers every request with "<name> <request line>|<the
// Proxy-Authorization value>", keeping the connection alive. Requests for
// /slow wait for release (when not nil) and report on arrived first.
func namedOrigin(t *testing.T, name string, arrived chan<- struct{}, release <-chan struct{}) *origin {
	return newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			auth := ""
			for _, l := range lines[1:] {
				if v, ok := strings.CutPrefix(l, "Proxy-Authorization: "); ok {
					auth = v
				}
			}
			if strings.Contains(lines[0], "/slow") && release != nil {
				arrived <- struct{}{}
				<-release
			}
			body := name + " " + lines[0] + "|" + auth
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func groupGet(t testing.TB, group, path string) *Request {
	return &Request{Upstream: Upstream{Group: group}, Head: head(t, "GET "+path+" HTTP/1.1\r\nHost: example.test\r\n\r\n")}
}

// who sends a GET to group and returns the name of the peer that answered.
func who(t *testing.T, e *Engine, group, path string) string {
	t.Helper()
	st, body, err := do(t, e, groupGet(t, group, path))
	if err != nil || st != 200 {
		t.Fatalf("GET %s via %s: %d %q %v", path, group, st, body, err)
	}
	name, _, _ := strings.Cut(body, " ")
	return name
}

func peerStats(t *testing.T, e *Engine, group, name string) PeerStats {
	t.Helper()
	for _, p := range e.PeerStats()[group].Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no peer %q in group %q: %+v", name, group, e.PeerStats())
	return PeerStats{}
}

// waitPeer waits, up to 5s, until ok holds for the peer's stats: pool
// gauges settle as an exchange finishes, which may be just after the
// caller has the whole body.
func waitPeer(t *testing.T, e *Engine, group, name string, ok func(PeerStats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := peerStats(t, e, group, name)
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s/%s: %+v", group, name, p)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupWeightedRoundRobin(t *testing.T) {
	checkLeaks(t)
	a, b := namedOrigin(t, "a", nil, nil), namedOrigin(t, "b", nil, nil)
	e := newEngine(t, Config{Shards: 2, Groups: map[string]GroupConfig{"g": {Peers: []Peer{
		{Name: "a", Addr: a.addr(), Weight: 2},
		{Name: "b", Addr: b.addr()},
	}}}})
	var seq string
	for i := 0; i < 30; i++ {
		seq += who(t, e, "g", "/")
	}
	if want := strings.Repeat("aba", 10); seq != want {
		t.Fatalf("sequence %s, want %s", seq, want)
	}
	if pa, pb := peerStats(t, e, "g", "a"), peerStats(t, e, "g", "b"); pa.Picks != 20 || pb.Picks != 10 ||
		pa.State != PeerUp || pa.Weight != 2 || pa.Pool.Dialed != 1 || pb.Pool.Dialed != 1 {
		t.Fatalf("stats a %+v, b %+v", pa, pb)
	}
	if _, err := e.Do(context.Background(), groupGet(t, "nope", "/")); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("unknown group: %v, want ErrNoGroup", err)
	}
}

func TestGroupConfigErrors(t *testing.T) {
	checkLeaks(t)
	e := newEngine(t, Config{Shards: 1})
	for name, gc := range map[string]GroupConfig{
		"no peers":   {},
		"no address": {Peers: []Peer{{Name: "a"}}},
		"same name":  {Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "a", Addr: "127.0.0.1:2"}}},
		// Two names for one upstream would share its connections, its
		// limits and its drain, each shown apart.
		"same address": {Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:1"}}},
		"same parent": {Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1", Parent: true, Username: "u", Password: "p"},
			{Name: "b", Addr: "127.0.0.1:1", Parent: true, Username: "u", Password: "p"}}},
		"bad balancer": {Balancer: "random", Peers: []Peer{{Addr: "127.0.0.1:1"}}},
		"bad check":    {Peers: []Peer{{Addr: "127.0.0.1:1"}}, Health: Health{CheckPath: "/a b"}},
		// A check host or path must not end the head early or add fields.
		"check host with a field": {Peers: []Peer{{Addr: "127.0.0.1:1"}}, Health: Health{CheckPath: "/h", CheckHost: "a\r\nX-Injected: 1"}},
		"check host with a request": {Peers: []Peer{{Addr: "127.0.0.1:1"}},
			Health: Health{CheckPath: "/h", CheckHost: "a\r\n\r\nGET /evil HTTP/1.1\r\nHost: a"}},
		"check path with a field": {Peers: []Peer{{Addr: "127.0.0.1:1"}}, Health: Health{CheckPath: "/h HTTP/1.1\r\nX-Injected: 1\r\nY: /h"}},
	} {
		if err := e.SetGroup("g", gc); err == nil {
			t.Errorf("%s: SetGroup accepted %+v", name, gc)
		}
	}
	if _, err := New(Config{Groups: map[string]GroupConfig{"g": {}}}); err == nil {
		t.Fatal("New accepted a group without peers")
	}
	// One address as two upstreams of their own: a parent with two
	// identities, an origin over TLS and in the clear.
	for name, gc := range map[string]GroupConfig{
		"parent with two logins": {Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1", Parent: true, Username: "u", Password: "p"},
			{Name: "b", Addr: "127.0.0.1:1", Parent: true, Username: "v", Password: "p"}}},
		"origin with and without TLS": {Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:1", TLS: &TLS{}}}},
	} {
		if err := e.SetGroup("ok", gc); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := e.DrainPeer("g", "a"); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("DrainPeer of an unknown group: %v", err)
	}
}

func TestGroupReroutesFailedConnect(t *testing.T) {
	checkLeaks(t)
	live := namedOrigin(t, "live", nil, nil)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "dead", Addr: deadAddr(t)}, {Name: "live", Addr: live.addr()}},
		Health: Health{MaxFails: 2, Backoff: time.Hour},
	}}})
	for i := 0; i < 10; i++ {
		if got := who(t, e, "g", "/"); got != "live" {
			t.Fatalf("request %d answered by %s", i, got)
		}
	}
	d := peerStats(t, e, "g", "dead")
	// Round-robin sent requests 1 and 3 to dead; each connect failed and
	// moved to live; the second failure marked dead down for an hour.
	if d.State != PeerDown || d.Picks != 2 || d.Failures != 2 || d.Rerouted != 2 || d.Downs != 1 {
		t.Fatalf("dead peer %+v", d)
	}
	if l := peerStats(t, e, "g", "live"); l.Picks != 10 || l.State != PeerUp {
		t.Fatalf("live peer %+v", l)
	}
}

func TestGroupAllDown(t *testing.T) {
	checkLeaks(t)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "x", Addr: deadAddr(t)}, {Name: "y", Addr: deadAddr(t)}},
		Health: Health{MaxFails: 1, Backoff: time.Hour},
	}}})
	// Both connects fail: the request tried both, and fails with the
	// last dial error.
	_, _, err := do(t, e, groupGet(t, "g", "/"))
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial {
		t.Fatalf("first request: %v, want a dial error", err)
	}
	_, err = e.Do(context.Background(), groupGet(t, "g", "/"))
	if !errors.Is(err, ErrNoPeer) {
		t.Fatalf("second request: %v, want ErrNoPeer", err)
	}
	for _, p := range e.PeerStats()["g"].Peers {
		if p.State != PeerDown || p.Failures != 1 || p.Downs != 1 {
			t.Fatalf("peer %+v", p)
		}
	}
}

// brokenOrigin starts an origin that answers with conflicting
// Content-Length fields (a protocol error) while broken is true, and
// properly once it is false.
func brokenOrigin(t *testing.T) (*origin, *atomic.Bool) {
	t.Helper()
	broken := new(atomic.Bool)
	broken.Store(true)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if broken.Load() {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return o, broken
}

func TestGroupPassiveDownThenProbe(t *testing.T) {
	checkLeaks(t)
	o, broken := brokenOrigin(t)
	const backoff = 100 * time.Millisecond
	// A second peer, drained: o is not the group's only peer (a lone peer
	// is never marked down passively), yet it takes every request.
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "o", Addr: o.addr()}, {Name: "spare", Addr: "127.0.0.1:1"}},
		Health: Health{MaxFails: 2, Backoff: backoff, MaxBackoff: time.Hour},
	}}})
	if err := e.DrainPeer("g", "spare"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, _, err := do(t, e, groupGet(t, "g", "/"))
		if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseProtocol {
			t.Fatalf("request %d: %v, want a protocol error", i, err)
		}
	}
	if p := peerStats(t, e, "g", "o"); p.State != PeerDown || p.Downs != 1 {
		t.Fatalf("after 2 protocol errors: %+v", p)
	}
	if _, err := e.Do(context.Background(), groupGet(t, "g", "/")); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("while down: %v, want ErrNoPeer", err)
	}
	// The probe after the back-off fails: down again for twice as long.
	time.Sleep(backoff + 20*time.Millisecond)
	if _, _, err := do(t, e, groupGet(t, "g", "/")); conn.AsError(err) == nil {
		t.Fatalf("failed probe: %v", err)
	}
	if _, err := e.Do(context.Background(), groupGet(t, "g", "/")); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("after a failed probe: %v, want ErrNoPeer", err)
	}
	broken.Store(false)
	time.Sleep(2*backoff + 20*time.Millisecond)
	if st, _, err := do(t, e, groupGet(t, "g", "/")); err != nil || st != 200 {
		t.Fatalf("probe: %d %v", st, err)
	}
	if p := peerStats(t, e, "g", "o"); p.State != PeerUp || p.Downs != 1 || p.Failures != 3 {
		t.Fatalf("after a good probe: %+v", p)
	}
}

// TestGroupLonePeerStaysUp: the only peer of a group is not marked down
// by passive checks, however many of its responses are malformed: each
// request gets its own error, and the first good response comes through
// (nginx ignores max_fails for a lone server too).
func TestGroupLonePeerStaysUp(t *testing.T) {
	checkLeaks(t)
	o, broken := brokenOrigin(t)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "o", Addr: o.addr()}},
		Health: Health{MaxFails: 2, Backoff: time.Hour},
	}}})
	for i := 0; i < 5; i++ {
		_, _, err := do(t, e, groupGet(t, "g", "/"))
		if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseProtocol {
			t.Fatalf("request %d: %v, want a protocol error", i, err)
		}
	}
	broken.Store(false)
	if st, _, err := do(t, e, groupGet(t, "g", "/")); err != nil || st != 200 {
		t.Fatalf("after the origin was fixed: %d %v", st, err)
	}
	if p := peerStats(t, e, "g", "o"); p.State != PeerUp || p.Downs != 0 || p.Failures != 5 {
		t.Fatalf("peer %+v", p)
	}
}

func TestGroupParentAbsoluteFormAndCredentials(t *testing.T) {
	checkLeaks(t)
	parent := namedOrigin(t, "parent", nil, nil)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"up": {Peers: []Peer{
		{Name: "p", Addr: parent.addr(), Parent: true, Username: "user", Password: "pa:ss"},
	}}}})
	st, body, err := do(t, e, groupGet(t, "up", "/x?y=1"))
	if want := "parent GET http://example.test/x?y=1 HTTP/1.1|Basic dXNlcjpwYTpzcw=="; err != nil || st != 200 || body != want {
		t.Fatalf("got %d %q %v, want %q", st, body, err, want)
	}
	// Absolute form stays as it is.
	r := &Request{Upstream: Upstream{Group: "up"}, Head: head(t, "GET http://other.test/z HTTP/1.1\r\nHost: other.test\r\n\r\n")}
	if _, body, err = do(t, e, r); err != nil || !strings.HasPrefix(body, "parent GET http://other.test/z HTTP/1.1|Basic ") {
		t.Fatalf("absolute form: %q %v", body, err)
	}
	// The parent's connections pool under their own key.
	var key string
	for k := range e.Stats() {
		key = k
	}
	// The credential shows as a hash, never as the password.
	if want := parent.addr() + " via=fwd cred="; !strings.HasPrefix(key, want) || strings.Contains(key, "pa:ss") || len(e.Stats()) != 1 {
		t.Fatalf("stats keys %v, want only %q<hash>", e.Stats(), want)
	}
	if p := peerStats(t, e, "up", "p"); !p.Parent || p.Pool.Dialed != 1 || p.Pool.Reused != 1 {
		t.Fatalf("parent stats %+v", p)
	}
}

func TestGroupDrainPeer(t *testing.T) {
	checkLeaks(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	a, b := namedOrigin(t, "a", arrived, release), namedOrigin(t, "b", nil, nil)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {Peers: []Peer{
		{Name: "a", Addr: a.addr()}, {Name: "b", Addr: b.addr()},
	}}}})
	if w := who(t, e, "g", "/") + who(t, e, "g", "/"); w != "ab" {
		t.Fatalf("first two: %s", w)
	}
	slow := make(chan string, 1)
	go func() { slow <- who(t, e, "g", "/slow") }() // to a, on its idle connection
	<-arrived
	if w := who(t, e, "g", "/") + who(t, e, "g", "/"); w != "ba" { // a dials a second connection
		t.Fatalf("next two: %s", w)
	}
	waitPeer(t, e, "g", "a", func(p PeerStats) bool { return p.Pool.Busy == 1 && p.Pool.Idle == 1 })
	if err := e.DrainPeer("g", "a"); err != nil {
		t.Fatal(err)
	}
	p := peerStats(t, e, "g", "a")
	if p.State != PeerDraining || p.Pool.Idle != 0 || p.Pool.Busy != 1 || p.Pool.Closed.Drained != 1 {
		t.Fatalf("draining: %+v", p)
	}
	for i := 0; i < 4; i++ {
		if w := who(t, e, "g", "/"); w != "b" {
			t.Fatalf("request %d while a drains went to %s", i, w)
		}
	}
	close(release)
	if w := <-slow; w != "a" {
		t.Fatalf("slow request answered by %s", w)
	}
	// The connection closes as the exchange settles, which may be just
	// after the body reached the caller.
	waitPeer(t, e, "g", "a", func(p PeerStats) bool {
		return p.State == PeerDrained && p.Pool.Conns() == 0 && p.Pool.Closed.Drained == 2
	})
	if err := e.UndrainPeer("g", "a"); err != nil {
		t.Fatal(err)
	}
	seen := who(t, e, "g", "/") + who(t, e, "g", "/")
	if seen != "ab" && seen != "ba" {
		t.Fatalf("after undrain: %s", seen)
	}
}

func TestGroupPeerLimits(t *testing.T) {
	checkLeaks(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	a := namedOrigin(t, "a", arrived, release)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {Peers: []Peer{
		{Name: "a", Addr: a.addr(), MaxConns: 1, MaxPending: 1, PendingTimeout: 200 * time.Millisecond},
	}}}})
	slow := make(chan string, 1)
	go func() { slow <- who(t, e, "g", "/slow") }()
	<-arrived
	waited := make(chan error, 1)
	go func() { _, _, err := do(t, e, groupGet(t, "g", "/")); waited <- err }()
	for peerStats(t, e, "g", "a").Pool.Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, _, err := do(t, e, groupGet(t, "g", "/")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	if err := <-waited; !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("second request: %v, want ErrPoolTimeout", err)
	}
	close(release)
	<-slow
	if p := peerStats(t, e, "g", "a"); p.Pool.Dialed != 1 || p.Pool.WaitTimeouts != 1 || p.Pool.QueueFull != 1 {
		t.Fatalf("stats %+v", p.Pool)
	}
}

func TestGroupHashKey(t *testing.T) {
	checkLeaks(t)
	var peers []Peer
	for _, n := range []string{"a", "b", "c"} {
		peers = append(peers, Peer{Name: n, Addr: namedOrigin(t, n, nil, nil).addr()})
	}
	e := newEngine(t, Config{Shards: 2, Groups: map[string]GroupConfig{"h": {Balancer: balance.Hash, Peers: peers}}})
	owners := map[string]string{}
	for round := 0; round < 3; round++ {
		for i := 0; i < 30; i++ {
			r := groupGet(t, "h", "/")
			r.HashKey = fmt.Sprintf("client-%d", i)
			_, body, err := do(t, e, r)
			if err != nil {
				t.Fatal(err)
			}
			name, _, _ := strings.Cut(body, " ")
			if prev, ok := owners[r.HashKey]; ok && prev != name {
				t.Fatalf("key %s moved from %s to %s", r.HashKey, prev, name)
			}
			owners[r.HashKey] = name
		}
	}
	used := map[string]bool{}
	for _, n := range owners {
		used[n] = true
	}
	if len(used) != 3 {
		t.Fatalf("30 keys landed on %v, want all three peers", used)
	}
}

func TestGroupActiveChecks(t *testing.T) {
	checkLeaks(t)
	var healthy atomic.Bool
	var checks atomic.Int32
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			status := "200 OK"
			if strings.HasPrefix(lines[0], "GET /health ") {
				checks.Add(1)
				if !healthy.Load() {
					status = "503 Unavailable"
				}
			}
			fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n", status)
		}
	})
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "o", Addr: o.addr()}},
		Health: Health{CheckPath: "/health", CheckInterval: 10 * time.Millisecond, Backoff: time.Hour},
	}}})
	waitState := func(want PeerState) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for peerStats(t, e, "g", "o").State != want {
			if time.Now().After(deadline) {
				t.Fatalf("state %v, want %v", peerStats(t, e, "g", "o").State, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitState(PeerDown)
	if _, err := e.Do(context.Background(), groupGet(t, "g", "/")); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("while the check fails: %v, want ErrNoPeer", err)
	}
	healthy.Store(true)
	waitState(PeerUp)
	if st, _, err := do(t, e, groupGet(t, "g", "/")); err != nil || st != 200 {
		t.Fatalf("after the check passes: %d %v", st, err)
	}
	if checks.Load() < 2 {
		t.Fatalf("%d checks", checks.Load())
	}
}

func TestGroupConcurrent(t *testing.T) {
	checkLeaks(t)
	var peers []Peer
	for _, n := range []string{"a", "b", "c"} {
		peers = append(peers, Peer{Name: n, Addr: namedOrigin(t, n, nil, nil).addr()})
	}
	for _, kind := range []balance.Kind{balance.RoundRobin, balance.LeastConn, balance.P2C, balance.Hash} {
		e := newEngine(t, Config{Shards: 2, Groups: map[string]GroupConfig{"g": {Balancer: kind, Peers: peers}}})
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					r := groupGet(t, "g", "/")
					r.HashKey = fmt.Sprint(w, i)
					if st, _, err := do(t, e, r); err != nil || st != 200 {
						t.Errorf("%s: %d %v", kind, st, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		var picks uint64
		for _, p := range e.PeerStats()["g"].Peers {
			picks += p.Picks
		}
		if picks != 400 {
			t.Fatalf("%s: %d picks, want 400", kind, picks)
		}
		e.Close()
	}
}

func TestSetGroupReplaces(t *testing.T) {
	checkLeaks(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	a, b := namedOrigin(t, "a", arrived, release), namedOrigin(t, "b", nil, nil)
	e := newEngine(t, Config{Shards: 1})
	if err := e.SetGroup("g", GroupConfig{Peers: []Peer{{Name: "a", Addr: a.addr(), MaxConns: 1}}}); err != nil {
		t.Fatal(err)
	}
	if w := who(t, e, "g", "/"); w != "a" {
		t.Fatalf("answered by %s", w)
	}
	// Replaced by b alone: a's cap is lifted, so two requests to a by
	// address can be in flight at once.
	if err := e.SetGroup("g", GroupConfig{Peers: []Peer{{Name: "b", Addr: b.addr()}}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if w := who(t, e, "g", "/"); w != "b" {
			t.Fatalf("after replace: answered by %s", w)
		}
	}
	slow := make(chan error, 1)
	go func() {
		_, _, err := do(t, e, &Request{Upstream: Upstream{Addr: a.addr()}, Head: head(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")})
		slow <- err
	}()
	<-arrived
	if st, _, err := do(t, e, get(a.addr(), t)); err != nil || st != 200 {
		t.Fatalf("second request to a while one is in flight: %d %v", st, err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if len(e.PeerStats()) != 1 || len(e.PeerStats()["g"].Peers) != 1 {
		t.Fatalf("PeerStats %+v", e.PeerStats())
	}
}

// TestSetGroupKeepsDrain: a group replaced by SetGroup keeps the drain of a
// peer that stays (the pool still drains its key), rather than showing it
// up and sending it requests that all fail with the pool's ErrDraining; a
// drained peer that leaves the group has its drain lifted with its limits,
// so that requests to its address work again.
func TestSetGroupKeepsDrain(t *testing.T) {
	checkLeaks(t)
	a, b := namedOrigin(t, "a", nil, nil), namedOrigin(t, "b", nil, nil)
	both := GroupConfig{Peers: []Peer{{Name: "a", Addr: a.addr()}, {Name: "b", Addr: b.addr()}}}
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": both}})
	if err := e.DrainPeer("g", "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.SetGroup("g", both); err != nil {
		t.Fatal(err)
	}
	if p := peerStats(t, e, "g", "a"); p.State != PeerDrained {
		t.Fatalf("a after SetGroup: %v", p.State)
	}
	for i := 0; i < 4; i++ {
		if w := who(t, e, "g", "/"); w != "b" {
			t.Fatalf("request %d went to %s", i, w)
		}
	}
	if err := e.UndrainPeer("g", "a"); err != nil {
		t.Fatal(err)
	}
	if w := who(t, e, "g", "/") + who(t, e, "g", "/"); w != "ab" && w != "ba" {
		t.Fatalf("after undrain: %s", w)
	}
	// Drained, then left out of the group: its address is no peer's.
	if err := e.DrainPeer("g", "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.SetGroup("g", GroupConfig{Peers: []Peer{{Name: "b", Addr: b.addr()}}}); err != nil {
		t.Fatal(err)
	}
	if st, body, err := do(t, e, get(a.addr(), t)); err != nil || st != 200 {
		t.Fatalf("a by address after it left the group: %d %q %v", st, body, err)
	}
	if err := e.SetGroup("g", both); err != nil {
		t.Fatal(err)
	}
	if w := who(t, e, "g", "/") + who(t, e, "g", "/"); w != "ab" && w != "ba" {
		t.Fatalf("a back in the group: %s", w)
	}
}

// TestHealthBackoffDefaults: MaxBackoff's default, and a MaxBackoff set
// below Backoff, which holds the period at Backoff instead of turning it
// into the 30 s default.
func TestHealthBackoffDefaults(t *testing.T) {
	for _, tc := range []struct{ backoff, maxBackoff, wantBackoff, wantMax time.Duration }{
		{0, 0, DefaultBackoff, DefaultMaxBackoff},
		{2 * time.Second, 0, 2 * time.Second, DefaultMaxBackoff},
		{time.Minute, 0, time.Minute, time.Minute},
		{2 * time.Second, time.Second, 2 * time.Second, 2 * time.Second},
		{time.Second, 5 * time.Second, time.Second, 5 * time.Second},
	} {
		h := Health{Backoff: tc.backoff, MaxBackoff: tc.maxBackoff}.normalized()
		if h.Backoff != tc.wantBackoff || h.MaxBackoff != tc.wantMax {
			t.Errorf("Backoff %v, MaxBackoff %v: got %v, %v; want %v, %v",
				tc.backoff, tc.maxBackoff, h.Backoff, h.MaxBackoff, tc.wantBackoff, tc.wantMax)
		}
	}
}

// TestDrainPeerAfterClose: DrainPeer and UndrainPeer on a closed engine
// say so (ErrClosed) rather than report success for nothing.
func TestDrainPeerAfterClose(t *testing.T) {
	checkLeaks(t)
	a := namedOrigin(t, "a", nil, nil)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {Peers: []Peer{{Name: "a", Addr: a.addr()}}}}})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.DrainPeer("g", "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("DrainPeer after Close: %v, want ErrClosed", err)
	}
	if err := e.UndrainPeer("g", "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("UndrainPeer after Close: %v, want ErrClosed", err)
	}
}

// TestDrainPeerDuringSetGroup: DrainPeer racing SetGroup leaves the peer's
// state and its pool key's drain in agreement: a peer that stays is
// drained in the new group when its key drains (else it is picked and
// every request to it fails with the pool's ErrDraining), and the key of
// a peer that left is not left draining with no peer to undrain it.
func TestDrainPeerDuringSetGroup(t *testing.T) {
	checkLeaks(t)
	a, b := namedOrigin(t, "a", nil, nil), namedOrigin(t, "b", nil, nil)
	both := GroupConfig{Peers: []Peer{{Name: "a", Addr: a.addr()}, {Name: "b", Addr: b.addr()}}}
	onlyB := GroupConfig{Peers: []Peer{{Name: "b", Addr: b.addr()}}}
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": both}})
	key := e.group("g").byKey["a"].key
	race := func(cfg GroupConfig) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = e.DrainPeer("g", "a") }()
		go func() { defer wg.Done(); _ = e.SetGroup("g", cfg) }()
		wg.Wait()
	}
	stays, left := 0, 0
	for i := 0; i < 5000; i++ {
		race(both)
		g := e.group("g")
		g.mu.Lock()
		drained := g.byKey["a"].draining
		g.mu.Unlock()
		if drained != e.pool.Draining(key) {
			stays++
		}
		if err := e.UndrainPeer("g", "a"); err != nil {
			t.Fatal(err)
		}
		race(onlyB)
		if e.pool.Draining(key) {
			left++
			e.pool.Undrain(key)
		}
		if err := e.SetGroup("g", both); err != nil {
			t.Fatal(err)
		}
	}
	if stays > 0 || left > 0 {
		t.Fatalf("of 5000 rounds: %d left a staying peer's state and its key's drain apart, %d left the key of a peer that left draining", stays, left)
	}
}

// TestClassifyLocalResourceErrors: a dial that failed on the proxy's own
// resources (out of descriptors or memory) says nothing of the peer, so
// it does not count against its health; a refused dial does.
func TestClassifyLocalResourceErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want outcome
	}{
		{syscall.EMFILE, neutral},
		{syscall.ENFILE, neutral},
		{syscall.ENOBUFS, neutral},
		{syscall.ENOMEM, neutral},
		{syscall.ECONNREFUSED, failed},
	} {
		err := &conn.Error{Phase: conn.PhaseDial, Addr: "127.0.0.1:1", Err: fmt.Errorf("dial: %w", tc.err)}
		if got := classify(err); got != tc.want {
			t.Errorf("dial failing with %v: %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestGroupPeerDroppingConnectionsGoesDown: a peer that accepts every
// connection and closes (or resets) it without answering fails every
// request it gets; MaxFails of those mark it down like failed connects.
// A GET it dropped goes to the live peer, as after a failed connect
// (nothing answered, and sending it again is safe); a POST whose head
// and body were sent is not sent again: its error reaches the caller.
func TestGroupPeerDroppingConnectionsGoesDown(t *testing.T) {
	checkLeaks(t)
	for _, reset := range []bool{false, true} {
		var dropped atomic.Int32
		dropper := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
			readHead(br)
			dropped.Add(1)
			if reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		})
		live := namedOrigin(t, "live", nil, nil)
		e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
			Peers:  []Peer{{Name: "dropper", Addr: dropper.addr()}, {Name: "live", Addr: live.addr()}},
			Health: Health{MaxFails: 2, Backoff: time.Hour},
		}}})
		var got []string
		for i := 0; i < 10; i++ {
			st, body, err := do(t, e, groupGet(t, "g", "/"))
			if err != nil {
				t.Fatalf("reset %v: request %d: %v", reset, i, err)
			}
			name, _, _ := strings.Cut(body, " ")
			got = append(got, fmt.Sprint(st, name))
		}
		if s, want := strings.Join(got, " "), strings.TrimSpace(strings.Repeat("200live ", 10)); s != want {
			t.Fatalf("reset %v: got %s, want %s", reset, s, want)
		}
		// Two picks of the dropper, both moved to live, marked it down.
		if p := peerStats(t, e, "g", "dropper"); p.State != PeerDown || p.Picks != 2 || p.Failures != 2 || p.Downs != 1 || p.Rerouted != 2 {
			t.Fatalf("reset %v: dropper %+v", reset, p)
		}
		if n := dropped.Load(); n != 2 {
			t.Fatalf("reset %v: the dropper got %d requests, want 2", reset, n)
		}
		e.Close()

		// A POST: the first pick by weight is the dropper.
		e = newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"p": {
			Peers: []Peer{{Name: "dropper", Addr: dropper.addr(), Weight: 1000}, {Name: "live", Addr: live.addr(), Weight: 1}},
		}}})
		body := "a=1"
		req := &Request{Upstream: Upstream{Group: "p"}, Body: strings.NewReader(body), ContentLength: int64(len(body)),
			Head: head(t, "POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\n")}
		_, _, err := do(t, e, req)
		if ce := conn.AsError(err); ce == nil || ce.Reused || ce.Responded || !ce.Written {
			t.Fatalf("reset %v: POST to the dropper: %v", reset, err)
		}
		if p := peerStats(t, e, "p", "dropper"); p.Picks != 1 || p.Failures != 1 || p.Rerouted != 0 {
			t.Fatalf("reset %v: POST: dropper %+v", reset, p)
		}
		if n := dropped.Load(); n != 3 {
			t.Fatalf("reset %v: the dropper got %d requests, want 3", reset, n)
		}
		e.Close()
		dropper.close()
		live.close()
	}
}

// tunnelParent is a parent proxy named name: it answers requests with
// "<name> <request line>", and CONNECTs with 200, then holding the
// tunnel open until the engine closes it, or, unless tunnels, with 403.
func tunnelParent(t *testing.T, name string, tunnels bool) *origin {
	return newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			switch {
			case !strings.HasPrefix(lines[0], "CONNECT "):
				body := name + " " + lines[0]
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			case tunnels:
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				io.Copy(io.Discard, br)
				return
			default:
				io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
			}
		}
	})
}

// TestGroupLeastConnCountsTunnels: a tunnel open through a parent is load
// on that parent for least-connections and p2c, as a busy connection
// is: while one parent holds a tunnel, requests go to the other, free
// one, and to both again once the tunnel is closed.
func TestGroupLeastConnCountsTunnels(t *testing.T) {
	checkLeaks(t)
	for _, kind := range []balance.Kind{balance.LeastConn, balance.P2C} {
		a, b := tunnelParent(t, "a", true), tunnelParent(t, "b", false)
		e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {Balancer: kind, Seed: 7, Peers: []Peer{
			{Name: "a", Addr: a.addr(), Parent: true},
			{Name: "b", Addr: b.addr(), Parent: true},
		}}}})
		// Only a opens tunnels: try until one is open through it.
		var held net.Conn
		for i := 0; held == nil; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			nc, _, err := e.Tunnel(ctx, TunnelRequest{Target: "example.test:443", Group: "g"})
			cancel()
			if i == 20 || err != nil && !errors.Is(err, ErrTunnelRefused) {
				t.Fatalf("%s: tunnel %d: %v", kind, i, err)
			}
			held = nc
		}
		t.Cleanup(func() { held.Close() })
		var got []string
		for i := 0; i < 6; i++ {
			got = append(got, who(t, e, "g", "/"))
		}
		if s := strings.Join(got, ""); s != "bbbbbb" {
			t.Fatalf("%s: while a holds a tunnel, requests went to %s", kind, s)
		}
		// The group replaced with the same peers: a's tunnel is still its load.
		if err := e.SetGroup("g", GroupConfig{Balancer: kind, Seed: 7, Peers: []Peer{
			{Name: "a", Addr: a.addr(), Parent: true},
			{Name: "b", Addr: b.addr(), Parent: true},
		}}); err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for i := 0; i < 6; i++ {
			got = append(got, who(t, e, "g", "/"))
		}
		if s := strings.Join(got, ""); s != "bbbbbb" {
			t.Fatalf("%s: after SetGroup, while a holds a tunnel, requests went to %s", kind, s)
		}
		held.Close()
		// Its close is a's load gone: a is free again.
		got = got[:0]
		for i := 0; i < 20 && !slices.Contains(got, "a"); i++ {
			got = append(got, who(t, e, "g", "/"))
		}
		if !slices.Contains(got, "a") {
			t.Fatalf("%s: a not picked after its tunnel closed: %v", kind, got)
		}
		e.Close()
		a.close()
		b.close()
	}
}

// TestTunnelGroupParentDroppingConnects: a parent that accepts
// connections and closes them without answering CONNECT fails every
// tunnel; MaxFails of those mark it down, and the tunnels go to the
// other parent.
func TestTunnelGroupParentDroppingConnects(t *testing.T) {
	checkLeaks(t)
	dropper := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		c.Close()
	})
	live := tunnelParent(t, "live", true)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "dropper", Addr: dropper.addr(), Parent: true}, {Name: "live", Addr: live.addr(), Parent: true}},
		Health: Health{MaxFails: 2, Backoff: time.Hour},
	}}})
	var got []string
	for i := 0; i < 8; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		nc, _, err := e.Tunnel(ctx, TunnelRequest{Target: "example.test:443", Group: "g"})
		cancel()
		switch {
		case err == nil:
			nc.Close()
			got = append(got, "ok")
		case conn.AsError(err) != nil && conn.AsError(err).Phase == conn.PhaseTunnel:
			got = append(got, "dropped")
		default:
			t.Fatalf("tunnel %d: %v", i, err)
		}
	}
	// Round-robin: tunnels 0 and 2 went to the dropper, down after the
	// second.
	if s, want := strings.Join(got, " "), "dropped ok dropped ok ok ok ok ok"; s != want {
		t.Fatalf("got %s, want %s", s, want)
	}
	if p := peerStats(t, e, "g", "dropper"); p.State != PeerDown || p.Picks != 2 || p.Failures != 2 || p.Downs != 1 {
		t.Fatalf("dropper %+v", p)
	}
}

// TestGroupSkipsPeerAtItsCap: a peer at its MaxConns takes no new request
// while another peer has room, whatever the balancer; the request would
// only wait in its queue (or fail with ErrPoolTimeout) with a free peer
// beside it. With every peer at its cap, requests queue as before.
func TestGroupSkipsPeerAtItsCap(t *testing.T) {
	checkLeaks(t)
	for _, kind := range []balance.Kind{balance.RoundRobin, balance.Hash, balance.LeastConn, balance.P2C} {
		arrived, release := make(chan struct{}, 1), make(chan struct{})
		var releaseOnce sync.Once
		releaseA := func() { releaseOnce.Do(func() { close(release) }) }
		defer releaseA() // before the origin's cleanup waits for /slow
		a, b := namedOrigin(t, "a", arrived, release), namedOrigin(t, "b", nil, nil)
		e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {Balancer: kind, Peers: []Peer{
			{Name: "a", Addr: a.addr(), MaxConns: 1, PendingTimeout: 100 * time.Millisecond},
			{Name: "b", Addr: b.addr()},
		}}}})
		// Hold a's one connection: send /slow until a has it (b answers
		// at once).
		slow := make(chan string, 1)
		for i := 0; ; i++ {
			if i == 20 {
				t.Fatalf("%s: a never picked", kind)
			}
			go func() { slow <- who(t, e, "g", "/slow") }()
			select {
			case <-arrived:
			case got := <-slow:
				if got != "b" {
					t.Fatalf("%s: /slow answered by %s", kind, got)
				}
				continue
			}
			break
		}
		var got []string
		for i := 0; i < 8; i++ {
			r := groupGet(t, "g", "/")
			r.HashKey = fmt.Sprint("key", i)
			st, body, err := do(t, e, r)
			if err != nil || st != 200 {
				got = append(got, fmt.Sprint(err))
				continue
			}
			name, _, _ := strings.Cut(body, " ")
			got = append(got, name)
		}
		if s := strings.Join(got, ","); s != "b,b,b,b,b,b,b,b" {
			t.Fatalf("%s: while a is at its cap: %s", kind, s)
		}
		releaseA()
		if got := <-slow; got != "a" {
			t.Fatalf("%s: /slow answered by %s", kind, got)
		}
		e.Close()
		a.close()
		b.close()
	}
}

// TestPickParentDownPeerOneProbePerBackoff: PickParent hands out a down
// parent once per back-off, as the probe of a request whose outcome it
// never learns; it stayed eligible for every pick once its first
// back-off had passed, so that a dead parent got its full share of the
// requests sent through PickParent's parents.
func TestPickParentDownPeerOneProbePerBackoff(t *testing.T) {
	checkLeaks(t)
	live := tunnelParent(t, "live", true)
	dead := deadAddr(t)
	const backoff = 300 * time.Millisecond
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "dead", Addr: dead, Parent: true}, {Name: "live", Addr: live.addr(), Parent: true}},
		Health: Health{MaxFails: 1, Backoff: backoff, MaxBackoff: time.Hour},
	}}})
	// The first tunnel goes to dead (round-robin), whose connect fails
	// (the tunnel moves to live): dead is down.
	nc, _, err := e.Tunnel(context.Background(), TunnelRequest{Target: "example.test:443", Group: "g"})
	if err != nil {
		t.Fatalf("first tunnel: %v", err)
	}
	nc.Close()
	if p := peerStats(t, e, "g", "dead"); p.State != PeerDown {
		t.Fatalf("dead %+v", p)
	}
	time.Sleep(backoff + 10*time.Millisecond)
	got := 0
	for i := 0; i < 10; i++ {
		p, err := e.PickParent("g", "")
		if err != nil {
			t.Fatal(err)
		}
		if p.Addr == dead {
			got++
		}
	}
	// 10 picks in less than a back-off: one probe.
	if got != 1 {
		t.Fatalf("PickParent returned the down parent %d times in 10 picks, want 1", got)
	}
	if p := peerStats(t, e, "g", "dead"); p.State != PeerDown {
		t.Fatalf("dead %+v", p)
	}
}

// TestTunnelGroupReroutesFailedConnect: a tunnel whose connect to the
// picked parent fails (nothing was sent) moves to another parent of the
// group that it has not tried, as a request does; only when every parent
// was tried does it fail, with the last dial error.
func TestTunnelGroupReroutesFailedConnect(t *testing.T) {
	checkLeaks(t)
	live := tunnelParent(t, "live", true)
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{
		"g": {
			Peers:  []Peer{{Name: "dead", Addr: deadAddr(t), Parent: true}, {Name: "live", Addr: live.addr(), Parent: true}},
			Health: Health{MaxFails: 100},
		},
		"alldead": {
			Peers:  []Peer{{Name: "x", Addr: deadAddr(t), Parent: true}, {Name: "y", Addr: deadAddr(t), Parent: true}},
			Health: Health{MaxFails: 100},
		},
	}})
	for i := 0; i < 4; i++ {
		nc, resp, err := e.Tunnel(context.Background(), TunnelRequest{Target: "example.test:443", Group: "g"})
		if err != nil || resp.Status != 200 {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		nc.Close()
	}
	// Round-robin sent tunnels 0 and 2 to dead first.
	if d := peerStats(t, e, "g", "dead"); d.Picks != 2 || d.Failures != 2 || d.Rerouted != 2 || d.State != PeerUp {
		t.Fatalf("dead %+v", d)
	}
	if l := peerStats(t, e, "g", "live"); l.Picks != 4 {
		t.Fatalf("live %+v", l)
	}
	_, _, err := e.Tunnel(context.Background(), TunnelRequest{Target: "example.test:443", Group: "alldead"})
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial {
		t.Fatalf("every parent dead: %v, want a dial error", err)
	}
	for _, n := range []string{"x", "y"} {
		if p := peerStats(t, e, "alldead", n); p.Picks != 1 || p.Failures != 1 {
			t.Fatalf("%s %+v", n, p)
		}
	}
}

// TestSetGroupKeepsLimitsOfSharedPeer: a peer that leaves one group keeps
// its connection cap while another group still has it (the cap is its
// pool key's): replacing one group lifted the limits of a peer that the
// other group still capped.
func TestSetGroupKeepsLimitsOfSharedPeer(t *testing.T) {
	checkLeaks(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	var releaseOnce sync.Once
	releaseA := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseA() // before the origin's cleanup waits for /slow
	a, b := namedOrigin(t, "a", arrived, release), namedOrigin(t, "b", nil, nil)
	capped := Peer{Name: "a", Addr: a.addr(), MaxConns: 1, PendingTimeout: 100 * time.Millisecond}
	e := newEngine(t, Config{Shards: 1, Groups: map[string]GroupConfig{
		"one":  {Peers: []Peer{capped}},
		"both": {Peers: []Peer{capped, {Name: "b", Addr: b.addr()}}},
	}})
	// a leaves "both"; "one" still caps it at one connection.
	if err := e.SetGroup("both", GroupConfig{Peers: []Peer{{Name: "b", Addr: b.addr()}}}); err != nil {
		t.Fatal(err)
	}
	slow := make(chan string, 1)
	go func() { slow <- who(t, e, "one", "/slow") }()
	<-arrived
	if _, _, err := do(t, e, groupGet(t, "one", "/")); !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("second request to a while one is in flight: %v, want ErrPoolTimeout (a's cap is 1)", err)
	}
	releaseA()
	if w := <-slow; w != "a" {
		t.Fatalf("/slow answered by %s", w)
	}
}

// TestGroupHangingPeerGoesDown: a peer that reads requests and never
// answers fails each at ResponseHeaderTimeout, which counts against it
// (nginx's max_fails counts timeouts): MaxFails of them mark it down. A
// GET that timed out with no response byte moves to another peer; a POST
// (the peer may be acting on it) and a GET whose response began do not,
// but both count.
func TestGroupHangingPeerGoesDown(t *testing.T) {
	checkLeaks(t)
	var got atomic.Int32
	hang := func(partial string) *origin {
		return newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err != nil {
				return
			}
			got.Add(1)
			io.WriteString(c, partial)
			io.Copy(io.Discard, br) // until the engine closes the connection
		})
	}
	hanger, partial := hang(""), hang("HTTP/1.1 200 OK\r\n")
	live := namedOrigin(t, "live", nil, nil)
	cfg := func(slow *origin) Config {
		return Config{Shards: 1, ResponseHeaderTimeout: 200 * time.Millisecond, Groups: map[string]GroupConfig{"g": {
			Peers:  []Peer{{Name: "slow", Addr: slow.addr(), Weight: 1000}, {Name: "live", Addr: live.addr()}},
			Health: Health{MaxFails: 2, Backoff: time.Hour},
		}}}
	}
	e := newEngine(t, cfg(hanger))
	for i := 0; i < 4; i++ {
		if name := who(t, e, "g", "/"); name != "live" {
			t.Fatalf("GET %d answered by %s", i, name)
		}
	}
	if p := peerStats(t, e, "g", "slow"); p.State != PeerDown || p.Picks != 2 || p.Failures != 2 || p.Downs != 1 || p.Rerouted != 2 {
		t.Fatalf("the hanging peer after 4 GETs: %+v; want two timeouts, both moved, then down", p)
	}
	if n := got.Swap(0); n != 2 {
		t.Fatalf("the hanging peer read %d requests, want 2", n)
	}
	e.Close()

	e = newEngine(t, cfg(hanger))
	body := "a=1"
	post := &Request{Upstream: Upstream{Group: "g"}, Body: strings.NewReader(body), ContentLength: int64(len(body)),
		Head: head(t, "POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\n")}
	if _, _, err := do(t, e, post); !errors.Is(err, conn.ErrHeaderTimeout) {
		t.Fatalf("POST to the hanging peer: %v, want the header timeout", err)
	}
	if p := peerStats(t, e, "g", "slow"); p.Picks != 1 || p.Failures != 1 || p.Rerouted != 0 {
		t.Fatalf("POST: the hanging peer %+v; want one failure, not moved", p)
	}
	e.Close()

	e = newEngine(t, cfg(partial))
	_, _, err := do(t, e, groupGet(t, "g", "/"))
	if ce := conn.AsError(err); ce == nil || !ce.Responded || !errors.Is(err, conn.ErrHeaderTimeout) {
		t.Fatalf("GET to the peer that began its head: %v, want the header timeout after a response byte", err)
	}
	if p := peerStats(t, e, "g", "slow"); p.Picks != 1 || p.Failures != 1 || p.Rerouted != 0 {
		t.Fatalf("GET after a response byte: %+v; want one failure, not moved", p)
	}
	if n := got.Load(); n != 2 {
		t.Fatalf("the hanging peers read %d requests after the GETs, want 2 (the POST, the GET)", n)
	}
	e.Close()
	hanger.close()
	partial.close()
	live.close()
}

// TestGroupHangingPeerReusedConnection: a peer that starts hanging after
// it answered (an origin stuck on a lock, its connections kept alive)
// times out a GET on the connection the pool kept for it, which runs on
// the caller's goroutine: that GET moves to another peer as one on a new
// connection does.
func TestGroupHangingPeerReusedConnection(t *testing.T) {
	checkLeaks(t)
	var got atomic.Int32
	stall := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for first := true; ; first = false {
			if _, err := readHead(br); err != nil {
				return
			}
			got.Add(1)
			if first {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nstall here")
				continue
			}
			io.Copy(io.Discard, br) // never answers again
			return
		}
	})
	live := namedOrigin(t, "live", nil, nil)
	e := newEngine(t, Config{Shards: 1, ResponseHeaderTimeout: 200 * time.Millisecond, Groups: map[string]GroupConfig{"g": {
		Peers:  []Peer{{Name: "stall", Addr: stall.addr(), Weight: 1000}, {Name: "live", Addr: live.addr()}},
		Health: Health{MaxFails: 2, Backoff: time.Hour},
	}}})
	if name := who(t, e, "g", "/"); name != "stall" {
		t.Fatalf("first GET answered by %s", name)
	}
	waitPeer(t, e, "g", "stall", func(p PeerStats) bool { return p.Pool.Idle == 1 })
	// Exchange runs a request that finds an idle connection on the
	// caller's goroutine.
	if s := exchange(t, e, groupGet(t, "g", "/")); s.err != nil || s.status != 200 || !strings.HasPrefix(s.body.String(), "live ") {
		t.Fatalf("GET on the kept connection: %d %q %v, want live's answer", s.status, s.body.String(), s.err)
	}
	if p := peerStats(t, e, "g", "stall"); p.Failures != 1 || p.Rerouted != 1 || p.Pool.Dialed != 1 {
		t.Fatalf("the stalled peer: %+v; want one timeout on its one connection, the GET moved", p)
	}
	if n := got.Load(); n != 2 {
		t.Fatalf("the stalled peer read %d requests, want 2", n)
	}
	// The timed-out connection was closed, not kept; live's went back.
	waitPeer(t, e, "g", "stall", func(p PeerStats) bool { return p.Pool.Conns() == 0 && p.Pool.Waiting == 0 })
	waitPeer(t, e, "g", "live", func(p PeerStats) bool { return p.Pool.Busy == 0 && p.Pool.Idle == 1 })
	e.Close()
	stall.close()
	live.close()
}
