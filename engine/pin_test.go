package engine_test

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/auth"
)

func passThrough(engine.Upstream) *engine.Auth {
	return &engine.Auth{Proxy: engine.Login{Mode: engine.LoginPassThrough}}
}

// ntlmHandshake runs the three messages of one client's handshake through
// squid with pin key key, then one request without credentials, which
// squid serves only on the connection the handshake authenticated.
func ntlmHandshake(t *testing.T, e *engine.Engine, sq *squid, ngx *bench.Nginx, key uint64) error {
	path := fmt.Sprintf("/small?k=%d", key)
	req := request(t, sq.addr, "GET", ngx.Addr(), path, true, "Proxy-Authorization: "+bench.NTLMNegotiate())
	req.PinKey = key
	s := send(t, e, req)
	if s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		return fmt.Errorf("negotiate: heads %v, err %v; want a 407 challenge", s.heads, s.err)
	}
	cs, err := auth.ParseChallenges(s.header["proxy-authenticate"])
	if err != nil || len(cs) != 1 || !cs[0].Is("NTLM") || cs[0].Token68 == "" {
		return fmt.Errorf("challenge %q (%v): want NTLM with a Type 2 message", s.header["proxy-authenticate"], err)
	}
	if msg, err := base64.StdEncoding.DecodeString(cs[0].Token68); err != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00" || msg[8] != 2 {
		return fmt.Errorf("challenge token %q is not an NTLM Type 2 message", cs[0].Token68)
	}
	req = request(t, sq.addr, "GET", ngx.Addr(), path, true,
		"Proxy-Authorization: "+bench.NTLMAuthenticate("DOM", fmt.Sprintf("user%d", key), "WS"))
	req.PinKey = key
	if s = send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
		return fmt.Errorf("authenticate: heads %v, body %q, err %v; want 200", s.heads, s.body.String(), s.err)
	}
	req = request(t, sq.addr, "GET", ngx.Addr(), path, true)
	req.PinKey = key
	if s = send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		return fmt.Errorf("after the handshake: heads %v, err %v; want 200 on the authenticated connection", s.heads, s.err)
	}
	return nil
}

// TestSquidNTLMPinning drives NTLM handshakes through a real Squid parent
// that demands NTLM: each completes over one connection pinned to its
// client's key, concurrent keys never share a connection, and Unpin
// releases the connection.
func TestSquidNTLMPinning(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "ntlm"})
	e := startEngine(t, engine.Config{Auth: passThrough})

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ntlmHandshake(t, e, sq, ngx, uint64(i+1))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("key %d: %v", i+1, err)
		}
	}
	if st := e.Stats()[sq.addr]; st.Pool.Pinned != 2 || st.Pool.Idle != 0 {
		t.Fatalf("pool %+v: want 2 pinned connections and none idle", st.Pool)
	}
	lines := readLog(t, sq.log, 6)
	ports := map[string]map[int]bool{}
	for _, l := range lines {
		k := l.Target[len(l.Target)-3:]
		if ports[k] == nil {
			ports[k] = map[int]bool{}
		}
		ports[k][l.Port] = true
	}
	if len(lines) != 6 || len(ports) != 2 || len(ports["k=1"]) != 1 || len(ports["k=2"]) != 1 {
		t.Fatalf("squid log %+v: want 3 requests per key, each key on one connection", lines)
	}
	for p := range ports["k=1"] {
		if ports["k=2"][p] {
			t.Fatalf("keys 1 and 2 shared the connection from port %d", p)
		}
	}

	// Unpin closes the session's connection; the key then starts afresh
	// on an unauthenticated connection, which squid challenges.
	e.Unpin(1)
	waitFor(t, "one pinned connection after Unpin", func() bool { return e.Stats()[sq.addr].Pool.Pinned == 1 })
	req := request(t, sq.addr, "GET", ngx.Addr(), "/small?k=1", true)
	req.PinKey = 1
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("after Unpin: heads %v, err %v; want a fresh connection's 407", s.heads, s.err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSquidNTLMPinnedGone: when squid closes the idle pinned connection
// between the challenge and the client's answer, the engine tells the
// embedder (OnPinnedClosed) and the answer fails with ErrPinnedGone
// without being sent anywhere. A request with a session's key for another
// upstream (a forward proxy's client moving on to another site) goes
// there unpinned, and the session stays.
func TestSquidNTLMPinnedGone(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "ntlm", idleTimeout: time.Second})
	closed := make(chan uint64, 4)
	e := startEngine(t, engine.Config{Auth: passThrough, OnPinnedClosed: func(k uint64) { closed <- k }})

	negotiate := func(key uint64) {
		t.Helper()
		req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+bench.NTLMNegotiate())
		req.PinKey = key
		if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
			t.Fatalf("negotiate: heads %v, err %v", s.heads, s.err)
		}
	}
	negotiate(8)
	// Key 8's connection speaks for squid: a request with key 8 for
	// nginx does not run on it, but on a connection of nginx's own.
	direct := request(t, ngx.Addr(), "GET", ngx.Addr(), "/small", false)
	direct.PinKey = 8
	if s := send(t, e, direct); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("session key to another upstream: heads %v, err %v; want nginx's 200", s.heads, s.err)
	}
	if !e.Pinned(8) || e.Stats()[sq.addr].Pool.Pinned != 1 || e.Stats()[ngx.Addr()].Pool.Pinned != 0 {
		t.Fatalf("after a request elsewhere: pinned %v, squid %+v, nginx %+v; want the session kept on squid",
			e.Pinned(8), e.Stats()[sq.addr].Pool, e.Stats()[ngx.Addr()].Pool)
	}
	e.Unpin(8)

	negotiate(7)
	select {
	case k := <-closed:
		if k != 7 {
			t.Fatalf("OnPinnedClosed(%d), want 7", k)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no OnPinnedClosed after squid's idle timeout")
	}
	before := e.Stats()[sq.addr]
	req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true,
		"Proxy-Authorization: "+bench.NTLMAuthenticate("DOM", "user7", "WS"))
	req.PinKey = 7
	s := send(t, e, req)
	if !errors.Is(s.err, engine.ErrPinnedGone) || len(s.heads) != 0 {
		t.Fatalf("answer after the close: heads %v, err %v; want ErrPinnedGone", s.heads, s.err)
	}
	after := e.Stats()[sq.addr]
	if after.Attempts != before.Attempts || after.Pool.Dialed != before.Pool.Dialed || after.Pool.Pinned != 0 {
		t.Errorf("stats before %+v, after %+v: want no attempt, no dial, nothing pinned", before, after)
	}
	if lines := readLog(t, sq.log, 2); len(lines) != 2 || lines[0].Status != 407 || lines[1].Status != 407 {
		t.Errorf("squid log %+v: want only the two negotiate requests", lines)
	}
}

// TestPinnedIdleTimeout: the engine ends a pinned session idle longer than
// PinnedIdleTimeout and tells the embedder.
func TestPinnedIdleTimeout(t *testing.T) {
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "ntlm"})
	closed := make(chan uint64, 1)
	e := startEngine(t, engine.Config{Auth: passThrough, PinnedIdleTimeout: time.Second,
		OnPinnedClosed: func(k uint64) { closed <- k }})
	req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+bench.NTLMNegotiate())
	req.PinKey = 3
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("negotiate: heads %v, err %v", s.heads, s.err)
	}
	if st := e.Stats()[sq.addr]; st.Pool.Pinned != 1 {
		t.Fatalf("pool %+v: want the connection pinned", st.Pool)
	}
	select {
	case k := <-closed:
		if k != 3 {
			t.Fatalf("OnPinnedClosed(%d), want 3", k)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no OnPinnedClosed after the pinned idle timeout")
	}
	if st := e.Stats()[sq.addr]; st.Pool.Pinned != 0 {
		t.Errorf("pool %+v: want nothing pinned", st.Pool)
	}
	req = request(t, sq.addr, "GET", ngx.Addr(), "/small", true)
	req.PinKey = 3
	if s := send(t, e, req); !errors.Is(s.err, engine.ErrPinnedGone) {
		t.Errorf("request after the timeout: heads %v, err %v; want ErrPinnedGone", s.heads, s.err)
	}
}

// TestSquidNTLMLimitsAndIsolation: a pinned connection counts against
// MaxConnsPerUpstream until Unpin, and a handshake without a pin key
// leaves its connection closed, not pooled for someone else.
func TestSquidNTLMLimitsAndIsolation(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "ntlm"})
	e := startEngine(t, engine.Config{Auth: passThrough, MaxConnsPerUpstream: 1, PendingTimeout: 300 * time.Millisecond})

	// No pin key: the handshake's connection is closed after the 407.
	req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+bench.NTLMNegotiate())
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("negotiate without a pin key: heads %v, err %v", s.heads, s.err)
	}
	if st := e.Stats()[sq.addr].Pool; st.Idle != 0 || st.Pinned != 0 || st.Closed.Owner != 1 {
		t.Fatalf("pool %+v: want the connection closed, nothing idle or pinned", st)
	}

	req = request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+bench.NTLMNegotiate())
	req.PinKey = 5
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("negotiate: heads %v, err %v", s.heads, s.err)
	}
	// The one connection allowed is pinned: another client waits, and
	// its wait ends.
	other := request(t, sq.addr, "GET", ngx.Addr(), "/small", true)
	if s := send(t, e, other); s.err == nil || len(s.heads) != 0 {
		t.Fatalf("request over the cap: heads %v, err %v; want a pool-wait failure", s.heads, s.err)
	} else if st := e.Stats()[sq.addr]; st.Errors["pool-wait"] != 1 || st.Pool.Pinned != 1 {
		t.Fatalf("stats %+v: want one pool-wait error and the pinned connection", st)
	}
	e.Unpin(5)
	waitFor(t, "the pinned connection to go", func() bool { return e.Stats()[sq.addr].Pool.Pinned == 0 })
	if s := send(t, e, request(t, sq.addr, "GET", ngx.Addr(), "/small", true)); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("after Unpin: heads %v, err %v; want squid's 407", s.heads, s.err)
	}
}

// TestGroupNTLMSessionStaysOnItsParent: in a round-robin group of two
// real NTLM Squid parents, a client's handshake and the requests after it
// all go to the parent that pinned its session, though the balancer
// alternates; once that parent drains, the session's next request fails
// with ErrPinnedGone instead of moving to the other parent.
func TestGroupNTLMSessionStaysOnItsParent(t *testing.T) {
	leakBaseline(t)
	a, ngx := squidAndNginx(t, squidOptions{scheme: "ntlm"})
	b := startSquid(t, squidOptions{scheme: "ntlm"})
	closed := make(chan uint64, 1)
	e := startEngine(t, engine.Config{Auth: passThrough, Groups: map[string]engine.GroupConfig{
		"parents": {Peers: []engine.Peer{
			{Name: "a", Addr: a.addr, Parent: true},
			{Name: "b", Addr: b.addr, Parent: true},
		}},
	}, PinnedIdleTimeout: 10 * time.Minute, OnPinnedClosed: func(k uint64) { closed <- k }})
	const key = 7
	get := func(fields ...string) *recSink {
		req := request(t, "", "GET", ngx.Addr(), "/small", false, fields...)
		req.Upstream = engine.Upstream{Group: "parents"}
		req.PinKey = key
		return send(t, e, req)
	}
	if s := get("Proxy-Authorization: " + bench.NTLMNegotiate()); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("negotiate: heads %v, err %v; want a 407 challenge", s.heads, s.err)
	}
	for i, f := range [][]string{{"Proxy-Authorization: " + bench.NTLMAuthenticate("DOM", "user7", "WS")}, nil, nil} {
		if s := get(f...); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("request %d after the challenge: heads %v, err %v; want 200 from the session's parent", i, s.heads, s.err)
		}
	}
	pinnedOn := ""
	for k, st := range e.Stats() { // keys are "addr via=fwd"
		for name, addr := range map[string]string{"a": a.addr, "b": b.addr} {
			if strings.HasPrefix(k, addr+" ") && st.Pool.Pinned == 1 {
				pinnedOn = name
			}
		}
	}
	if pinnedOn == "" {
		t.Fatalf("no parent holds the pinned connection: %+v", e.Stats())
	}
	if err := e.DrainPeer("parents", pinnedOn); err != nil {
		t.Fatal(err)
	}
	// The idle session ends with the drain, not at its idle timeout: its
	// client hears of it, and the parent is drained.
	select {
	case k := <-closed:
		if k != key {
			t.Fatalf("OnPinnedClosed(%d), want %d", k, key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("draining the session's parent: no OnPinnedClosed")
	}
	for _, ps := range e.PeerStats()["parents"].Peers {
		if ps.Name == pinnedOn && (ps.State != engine.PeerDrained || ps.Pool.Conns() != 0) {
			t.Fatalf("parent %s after the drain: %v with %+v, want drained, no connection", pinnedOn, ps.State, ps.Pool)
		}
	}
	if s := get(); !errors.Is(s.err, engine.ErrPinnedGone) {
		t.Fatalf("after draining parent %s: heads %v, err %v; want ErrPinnedGone", pinnedOn, s.heads, s.err)
	}
}

// TestParentWithoutSessionSupportIsolates: an origin's NTLM credentials
// sent through a parent that does not say "Proxy-Support:
// Session-Based-Authentication" pin nothing (the login cannot work so),
// but the parent may have tied its connection to the origin to ours all
// the same: the connection is closed after the exchange, and another
// client's request goes on a new one, never riding on that login.
func TestParentWithoutSessionSupportIsolates(t *testing.T) {
	leakBaseline(t)
	var mu sync.Mutex
	var conns []int // the parent connection of each request, in order
	parent := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, i)
			mu.Unlock()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := startEngine(t, engine.Config{Auth: passThrough})
	req := request(t, parent.Addr(), "GET", "origin.test", "/a", true,
		"Authorization: "+bench.NTLMAuthenticate("DOM", "user1", "WS"))
	req.PinKey = 1
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("with NTLM credentials: heads %v, err %v", s.heads, s.err)
	}
	req = request(t, parent.Addr(), "GET", "origin.test", "/b", true)
	req.PinKey = 2
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("another client: heads %v, err %v", s.heads, s.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 2 || conns[0] == conns[1] {
		t.Fatalf("parent connections of the two requests %v, want two different ones", conns)
	}
	if st := e.Stats()[parent.Addr()]; st.Pool.Pinned != 0 {
		t.Fatalf("pool %+v: want nothing pinned", st.Pool)
	}
}

// ntlmOrigin is an origin that demands NTLM per connection, as IIS does:
// a Type 1 message gets a 401 with a Type 2 challenge, a Type 3 message
// is taken only on the connection that got the challenge, and a request
// without credentials only on a connection a Type 3 authenticated. It
// counts the connections it accepted.
func ntlmOrigin(t *testing.T) (addr string, conns func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		open  []net.Conn
		wg    sync.WaitGroup
		count int
	)
	challenge := "NTLM " + base64.StdEncoding.EncodeToString(append([]byte("NTLMSSP\x00\x02\x00\x00\x00"), make([]byte, 36)...))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			count++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				state := 0 // 1: challenged, 2: authenticated
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					a := req.Header.Get("Authorization")
					msg, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "NTLM "))
					switch {
					case len(msg) > 8 && msg[8] == 1:
						state = 1
						io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: "+challenge+"\r\nContent-Length: 0\r\n\r\n")
						continue
					case len(msg) > 8 && msg[8] == 3 && state == 1, a == "" && state == 2:
						state = 2
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					state = 0
					io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return count
	}
}

// TestViaGroupNTLMSessionStaysOnItsParent: an origin's NTLM handshake
// through a tunnel of a group of parents (Upstream.ViaGroup; two real
// Squids, taken in turn by the balancer) pins the tunnel's connection to
// the client's key, and the handshake's next messages and the requests
// after it go on that connection, through the parent that carries it,
// as a Group request's go to its session's peer.
func TestViaGroupNTLMSessionStaysOnItsParent(t *testing.T) {
	leakBaseline(t)
	addr, conns := ntlmOrigin(t)
	port := bench.Port(t, addr)
	a := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{port}})
	b := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{port}})
	e := startEngine(t, engine.Config{PinnedIdleTimeout: 10 * time.Minute, Groups: map[string]engine.GroupConfig{
		"parents": {Peers: []engine.Peer{
			{Name: "a", Addr: a.Addr(), Parent: true},
			{Name: "b", Addr: b.Addr(), Parent: true},
		}},
	}})
	const key = 9
	get := func(fields ...string) *recSink {
		req := request(t, addr, "GET", "origin.test", "/", false, fields...)
		req.ViaGroup = "parents"
		req.PinKey = key
		return send(t, e, req)
	}
	if s := get("Authorization: " + bench.NTLMNegotiate()); s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
		t.Fatalf("negotiate: heads %v, err %v; want the 401 challenge", s.heads, s.err)
	}
	for i, f := range [][]string{{"Authorization: " + bench.NTLMAuthenticate("DOM", "user9", "WS")}, nil, nil} {
		if s := get(f...); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("request %d after the challenge: heads %v, err %v; want 200 on the session's connection", i, s.heads, s.err)
		}
	}
	if n := conns(); n != 1 {
		t.Fatalf("the origin accepted %d connections, want the session's one", n)
	}
}

// poolConns is the number of addr's connections, over every credential
// scope.
func poolConns(e *engine.Engine, addr string) int {
	n := 0
	for k, st := range e.Stats() {
		if k == addr || strings.HasPrefix(k, addr+" ") {
			n += st.Pool.Conns()
		}
	}
	return n
}

// TestOwnLoginDoesNotPin: Apache offers NTLM besides Basic or Digest, and
// the client's request carries an NTLM Type 1 message (curl --ntlm sends
// one before any challenge). The engine answers the 401 with its own
// Basic or Digest credentials, which replace the client's: the client's
// message never reached Apache on the connection that was authenticated,
// and the login that did is the engine's, per request. The connection is
// pinned to nobody; once Apache's keep-alive timeout has closed it, the
// key's next request is served on a new one. (The client's NTLM field
// pinned it, and that request failed with ErrPinnedGone.)
func TestOwnLoginDoesNotPin(t *testing.T) {
	leakBaseline(t)
	for _, scheme := range []string{"basic", "digest"} {
		t.Run(scheme, func(t *testing.T) {
			log := filepath.Join(logDir(t), "ports.log")
			ap := bench.StartApache(t, bench.ApacheOptions{
				Auth: scheme, Users: map[string]string{apacheUser: apachePass}, AlsoOffer: "NTLM",
				Extra: []string{
					`LogFormat "%{remote}p %>s %m %U %u %{Proxy-Authorization}i" authtest`,
					"CustomLog " + log + " authtest",
					"KeepAliveTimeout 1",
				},
			})
			addr := ap.Addr()
			closed := make(chan uint64, 1)
			e := startEngine(t, engine.Config{
				Auth:           func(engine.Upstream) *engine.Auth { return &engine.Auth{Origin: own(apacheUser, apachePass)} },
				OnPinnedClosed: func(k uint64) { closed <- k },
			})
			const key = 5

			// Apache offers both schemes.
			bare := request(t, addr, "GET", "a.test", "/small", false)
			bare.Auth = &engine.Auth{}
			if s := send(t, e, bare); s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
				t.Fatalf("without credentials: heads %v, err %v; want Apache's 401", s.heads, s.err)
			}
			logged := len(readLog(t, log, 1))

			req := request(t, addr, "GET", "a.test", "/small", false, "Authorization: "+bench.NTLMNegotiate())
			req.PinKey = key
			if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
				t.Fatalf("with the client's Type 1: heads %v, body %q, err %v; want the 200 of the engine's login", s.heads, s.body.String(), s.err)
			}
			lines := readLog(t, log, logged+2)[logged:]
			if len(lines) != 2 || lines[0].Status != 401 || lines[1].Status != 200 || lines[1].User != apacheUser || lines[0].Port != lines[1].Port {
				t.Fatalf("Apache's log %+v: want a 401, then %s's 200 on the same connection", lines, apacheUser)
			}
			if e.Pinned(key) {
				t.Fatal("the engine's own login pinned its connection to the client's key")
			}
			for k, st := range e.Stats() {
				if st.Pool.Pinned != 0 {
					t.Fatalf("%s: %d pinned connections, want none", k, st.Pool.Pinned)
				}
			}

			waitFor(t, "Apache's keep-alive timeout to close the connection", func() bool { return poolConns(e, addr) == 0 })
			req = request(t, addr, "GET", "a.test", "/small?after", false)
			req.PinKey = key
			if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
				t.Fatalf("after Apache's close: heads %v, body %q, err %v; want a 200 on a new connection", s.heads, s.body.String(), s.err)
			}
			lines = readLog(t, log, logged+3)[logged:]
			if len(lines) != 3 || lines[2].Status != 200 || lines[2].User != apacheUser || lines[2].Port == lines[1].Port {
				t.Fatalf("Apache's log %+v: want the last request served to %s on a new connection", lines, apacheUser)
			}
			select {
			case k := <-closed:
				t.Fatalf("OnPinnedClosed(%d): no session should have started", k)
			default:
			}
		})
	}
}

// TestStrippedProxyCredentialsDoNotPin: a client's NTLM Proxy-Authorization
// that the engine does not forward (it was for the proxy in front of
// the engine, or the engine answers the parent with its own login) starts
// no handshake with the parent: the parent connection goes back to the
// pool, and a request without a pin key runs on it next. (It was pinned
// to the client's key, or closed without one, as if the message had gone
// to the parent.)
func TestStrippedProxyCredentialsDoNotPin(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "basic"})
	for i, pol := range []*engine.Auth{
		{Proxy: own(squidUser, squidPass)}, // the engine's own login answers the 407
		{Proxy: func() engine.Login { l := own(squidUser, squidPass); l.Preemptive = true; return l }()}, // sent up front
	} {
		e := startEngine(t, engine.Config{Auth: func(engine.Upstream) *engine.Auth { return pol }})
		logged := len(readLog(t, sq.log, 0))
		req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+bench.NTLMNegotiate())
		req.PinKey = 7
		if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("login %d: heads %v, err %v; want the 200 of the engine's login", i, s.heads, s.err)
		}
		if e.Pinned(7) {
			t.Fatalf("login %d: the client's stripped NTLM message pinned the parent connection", i)
		}
		req = request(t, sq.addr, "GET", ngx.Addr(), "/small?next", true)
		if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("login %d, next request: heads %v, err %v", i, s.heads, s.err)
		}
		// The login answering the 407 adds that 407's line to the two
		// requests'. Squid writes its log as it goes: waiting for fewer
		// lines could read it before the second request's.
		want := 2
		if !pol.Proxy.Preemptive {
			want = 3
		}
		lines := readLog(t, sq.log, logged+want)[logged:]
		if len(lines) != want {
			t.Fatalf("login %d: Squid's log %+v: want %d lines", i, lines, want)
		}
		last := lines[len(lines)-1]
		if last.Status != 200 || !strings.Contains(last.Target, "next") || last.Port != lines[len(lines)-2].Port {
			t.Fatalf("login %d: Squid's log %+v: want the next request on the connection of the first", i, lines)
		}
	}
}
