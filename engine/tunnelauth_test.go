package engine_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/auth"
)

// tunnelStats sums the stats of the tunnel keys through parent.
func tunnelStats(e *engine.Engine, parent string) engine.UpstreamStats {
	var sum engine.UpstreamStats
	for k, st := range e.Stats() {
		if strings.Contains(k, " via=connect="+parent) {
			sum.Requests += st.Requests
			sum.AuthRounds += st.AuthRounds
			sum.Tunnels += st.Tunnels
			sum.Pool.Dialed += st.Pool.Dialed
			sum.Pool.Busy += st.Pool.Busy
			sum.Pool.Pinned += st.Pool.Pinned
		}
	}
	return sum
}

// connectLines are the log's CONNECT lines, as "port status user".
func connectLines(lines []logLine) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.Method == "CONNECT" {
			out = append(out, l)
		}
	}
	return out
}

// TestTunnelSquidDigest: a Squid parent demanding Digest answers the
// parent's preemptive Basic with a 407 Digest challenge, which the engine
// answers on the same connection; the next CONNECT answers the
// remembered challenge up front. Wrong credentials give the caller
// Squid's second 407.
func TestTunnelSquidDigest(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "digest"})
	e := startEngine(t, engine.Config{})
	via := &engine.Parent{Addr: sq.addr, User: squidUser, Password: squidPass}

	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: via})
	if err != nil || resp == nil || resp.Status != 200 {
		t.Fatalf("tunnel: %v, answer %+v", err, resp)
	}
	if status, body := tlsGetThrough(t, nc, pki, "/small"); status != 200 || body != bench.SmallBody {
		t.Fatalf("through the tunnel: %d %q", status, body)
	}
	_ = nc.Close()
	lines := connectLines(readLog(t, sq.log, 2))
	if len(lines) != 2 || lines[0].Status != 407 || lines[1].Status != 200 || lines[1].User != squidUser {
		t.Fatalf("squid log %+v: want a 407 then a 200 for %s", lines, squidUser)
	}
	if lines[0].Port != lines[1].Port {
		t.Fatalf("the challenge was answered on a new connection: ports %d, %d", lines[0].Port, lines[1].Port)
	}
	if lines[1].Target != ngx.TLSAddr() {
		t.Fatalf("CONNECT target %q", lines[1].Target)
	}

	// The remembered challenge is answered up front: one exchange.
	nc, resp, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: via})
	if err != nil || resp.Status != 200 {
		t.Fatalf("second tunnel: %v", err)
	}
	_ = nc.Close()
	lines = connectLines(readLog(t, sq.log, 3))
	if len(lines) != 3 || lines[2].Status != 200 || lines[2].Port == lines[1].Port {
		t.Fatalf("squid log %+v: want one more 200, on a new connection", lines)
	}
	if st := tunnelStats(e, sq.addr); st.Requests != 2 || st.AuthRounds != 1 || st.Tunnels != 2 || st.Pool.Dialed != 2 || st.Pool.Busy != 0 {
		t.Fatalf("stats %+v: want 2 tunnels, 1 challenge answered, 2 connections, none left", st)
	}

	// Wrong password: Squid's answer to the Digest credentials comes back.
	bad := &engine.Parent{Addr: sq.addr, User: squidUser, Password: "wrong"}
	nc, resp, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: bad})
	if nc != nil || !errors.Is(err, engine.ErrTunnelRefused) || resp == nil || resp.Status != 407 {
		t.Fatalf("wrong password: %v, %+v; want the 407", err, resp)
	}
	cs, perr := auth.ParseChallenges(resp.Header.Values("Proxy-Authenticate")...)
	if perr != nil || auth.Pick(cs) == nil || !auth.Pick(cs).Is("Digest") {
		t.Fatalf("refusal's challenge %q", resp.Header.Values("Proxy-Authenticate"))
	}
	lines = connectLines(readLog(t, sq.log, 5))
	if len(lines) != 5 || lines[3].Status != 407 || lines[4].Status != 407 || lines[3].Port != lines[4].Port {
		t.Fatalf("squid log %+v: want two 407s on one connection for the wrong password", lines)
	}
}

// TestTunnelSquidBasicOwn: the proxy login (LoginOwn, not preemptive)
// answers a Basic Squid's 407 on the same connection.
func TestTunnelSquidBasicOwn(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "basic"})
	e := startEngine(t, engine.Config{Auth: func(u engine.Upstream) *engine.Auth {
		if u.Addr == sq.addr {
			return &engine.Auth{Proxy: own(squidUser, squidPass)}
		}
		return nil
	}})
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr},
		ProxyAuthorization: "Basic " + base64.StdEncoding.EncodeToString([]byte("client:secret"))})
	if err != nil || resp.Status != 200 {
		t.Fatalf("tunnel: %v, %+v", err, resp)
	}
	if status, body := tlsGetThrough(t, nc, pki, "/small"); status != 200 || body != bench.SmallBody {
		t.Fatalf("through the tunnel: %d %q", status, body)
	}
	_ = nc.Close()
	lines := connectLines(readLog(t, sq.log, 2))
	if len(lines) != 2 || lines[0].Status != 407 || lines[0].User != "-" || lines[1].Status != 200 ||
		lines[1].User != squidUser || lines[0].Port != lines[1].Port {
		t.Fatalf("squid log %+v: want 407 then 200 for %s on one connection (the client's credentials dropped)", lines, squidUser)
	}
	if st := tunnelStats(e, sq.addr); st.AuthRounds != 1 || st.Pool.Dialed != 1 {
		t.Fatalf("stats %+v", st)
	}
	// With wrong credentials, the second 407 comes back.
	e2 := startEngine(t, engine.Config{})
	_, resp, err = e2.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr},
		Auth: &engine.Auth{Proxy: own(squidUser, "wrong")}})
	if !errors.Is(err, engine.ErrTunnelRefused) || resp.Status != 407 || resp.ClientChallenge {
		t.Fatalf("wrong password: %v %+v; want the 407, not the client's to answer", err, resp)
	}
	if st := tunnelStats(e2, sq.addr); st.AuthRounds != 1 || st.Requests != 1 {
		t.Fatalf("stats %+v: one challenge answered, then refused", st)
	}
}

// TestTunnelSquidPassThroughBasic: with LoginPassThrough the client's
// Basic Proxy-Authorization reaches Squid, and Squid's 407 is the
// client's to answer (ClientChallenge); without, it is not.
func TestTunnelSquidPassThroughBasic(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "basic"})
	e := startEngine(t, engine.Config{Auth: passThrough})
	pa := "Basic " + base64.StdEncoding.EncodeToString([]byte(squidUser+":"+squidPass))
	_, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr}})
	if !errors.Is(err, engine.ErrTunnelRefused) || resp.Status != 407 || !resp.ClientChallenge {
		t.Fatalf("no credentials yet: %v %+v; want the 407, the client's to answer", err, resp)
	}
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr},
		ProxyAuthorization: pa})
	if err != nil || resp.Status != 200 {
		t.Fatalf("tunnel: %v, %+v", err, resp)
	}
	_ = nc.Close()
	// Without pass-through, the same field is not forwarded.
	e2 := startEngine(t, engine.Config{})
	_, resp, err = e2.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr},
		ProxyAuthorization: pa})
	if !errors.Is(err, engine.ErrTunnelRefused) || resp.Status != 407 || resp.ClientChallenge {
		t.Fatalf("without pass-through: %v %+v", err, resp)
	}
	if _, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.addr},
		ProxyAuthorization: "Basic x\r\nX-Injected: 1"}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("CRLF in the field: %v, want ErrBadRequest", err)
	}
	lines := connectLines(readLog(t, sq.log, 3))
	// The tunnel is logged when it ends: the 200 first.
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Status < lines[j].Status })
	if len(lines) != 3 || lines[0].Status != 200 || lines[0].User != squidUser ||
		lines[1].Status != 407 || lines[1].User != "-" || lines[2].Status != 407 || lines[2].User != "-" {
		t.Fatalf("squid log %+v", lines)
	}
}

// ntlmType2 checks that resp is a 407 carrying an NTLM Type 2 message.
func ntlmType2(resp *engine.TunnelResponse, err error) error {
	if !errors.Is(err, engine.ErrTunnelRefused) || resp == nil || resp.Status != 407 {
		return fmt.Errorf("%v, %+v; want a 407", err, resp)
	}
	cs, perr := auth.ParseChallenges(resp.Header.Values("Proxy-Authenticate")...)
	if perr != nil || len(cs) != 1 || !cs[0].Is("NTLM") || cs[0].Token68 == "" {
		return fmt.Errorf("challenge %q: want NTLM with a Type 2 message", resp.Header.Values("Proxy-Authenticate"))
	}
	msg, derr := base64.StdEncoding.DecodeString(cs[0].Token68)
	if derr != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00" || msg[8] != 2 {
		return fmt.Errorf("challenge token %q is not an NTLM Type 2 message", cs[0].Token68)
	}
	return nil
}

// TestTunnelSquidNTLM: the client's NTLM handshake with an NTLM Squid
// through Tunnel: the Type 1 CONNECT gets the Type 2 challenge and the
// parent connection stays pinned to the client's key; the Type 3 CONNECT
// with that key is sent on it and opens the tunnel, which carries TLS to
// nginx. Two keys never share a connection.
func TestTunnelSquidNTLM(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "ntlm"})
	e := startEngine(t, engine.Config{Auth: passThrough})
	via := &engine.Parent{Addr: sq.addr}
	tun := func(key uint64, pa string) (net.Conn, *engine.TunnelResponse, error) {
		return e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: via, PinKey: key, ProxyAuthorization: pa})
	}
	for key := uint64(1); key <= 2; key++ {
		if _, resp, err := tun(key, bench.NTLMNegotiate()); ntlmType2(resp, err) != nil {
			t.Fatalf("key %d, Type 1: %v", key, ntlmType2(resp, err))
		}
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 2 || st.Pool.Dialed != 2 {
		t.Fatalf("stats %+v: want 2 pinned connections", st)
	}
	for key := uint64(1); key <= 2; key++ {
		nc, resp, err := tun(key, bench.NTLMAuthenticate("DOM", fmt.Sprintf("user%d", key), "WS"))
		if err != nil || resp.Status != 200 {
			t.Fatalf("key %d, Type 3: %v %+v", key, err, resp)
		}
		if status, body := tlsGetThrough(t, nc, pki, "/small"); status != 200 || body != bench.SmallBody {
			t.Fatalf("key %d through the tunnel: %d %q", key, status, body)
		}
		_ = nc.Close()
	}
	lines := connectLines(readLog(t, sq.log, 4))
	if len(lines) != 4 {
		t.Fatalf("squid log %+v: want 4 CONNECTs", lines)
	}
	// The 407s are logged as answered, in order; a tunnel when it ends,
	// so the 200s are told apart by user.
	port := map[uint64]int{}
	for i, l := range lines {
		key := uint64(i + 1)
		want := 407
		if i >= 2 {
			want = 200
			key = 0
			for k := uint64(1); k <= 2; k++ {
				if strings.HasSuffix(l.User, fmt.Sprintf("user%d", k)) {
					key = k
				}
			}
			if key == 0 {
				t.Errorf("line %+v: want user1 or user2", l)
			}
		}
		if l.Status != want {
			t.Errorf("line %+v: want status %d", l, want)
		}
		if p, ok := port[key]; ok && p != l.Port {
			t.Errorf("key %d: handshake over ports %d and %d, want one connection", key, p, l.Port)
		}
		port[key] = l.Port
	}
	if port[1] == port[2] {
		t.Errorf("keys 1 and 2 shared port %d", port[1])
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 0 || st.Pool.Busy != 0 || st.Tunnels != 2 {
		t.Fatalf("stats %+v: want the two tunnels closed, none pinned", st)
	}
	// The session ended when its tunnel opened: the key starts over.
	if _, resp, err := tun(1, bench.NTLMNegotiate()); ntlmType2(resp, err) != nil {
		t.Fatalf("key 1 again: %v", ntlmType2(resp, err))
	}
	e.Unpin(1)
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 0 {
		t.Fatalf("stats %+v after Unpin: want none pinned", st)
	}

	// Without pass-through the client's handshake cannot reach Squid: its
	// NTLM offer is relayed, and nothing is pinned.
	e0 := startEngine(t, engine.Config{})
	nc, resp, err := e0.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: via, PinKey: 1,
		ProxyAuthorization: bench.NTLMNegotiate()})
	if nc != nil || !errors.Is(err, engine.ErrTunnelRefused) || resp.Status != 407 ||
		!strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "NTLM") {
		t.Fatalf("without pass-through: %v %+v", err, resp)
	}
	if st := tunnelStats(e0, sq.addr); st.Pool.Pinned != 0 || st.Pool.Busy != 0 || st.Pool.Dialed != 0 {
		t.Fatalf("stats %+v: want nothing pinned or open", st)
	}
}

// TestTunnelPinnedGone: a pinned parent connection idle past
// PinnedIdleTimeout is closed and reported; the next CONNECT with its key
// fails with ErrPinnedGone (never a new connection) until Unpin.
func TestTunnelPinnedGone(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "ntlm"})
	closed := make(chan uint64, 1)
	e := startEngine(t, engine.Config{Auth: passThrough, PinnedIdleTimeout: 100 * time.Millisecond,
		OnPinnedClosed: func(k uint64) { closed <- k }})
	via := &engine.Parent{Addr: sq.addr}
	tun := func(pa string) (net.Conn, *engine.TunnelResponse, error) {
		return e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: via, PinKey: 7, ProxyAuthorization: pa})
	}
	if _, resp, err := tun(bench.NTLMNegotiate()); ntlmType2(resp, err) != nil {
		t.Fatal(ntlmType2(resp, err))
	}
	select {
	case k := <-closed:
		if k != 7 {
			t.Fatalf("OnPinnedClosed(%d), want 7", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the idle pinned connection was not closed")
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 0 {
		t.Fatalf("stats %+v: want the pinned connection gone", st)
	}
	nc, resp, err := tun(bench.NTLMAuthenticate("DOM", "u", "WS"))
	if nc != nil || resp != nil || !errors.Is(err, engine.ErrPinnedGone) {
		t.Fatalf("Type 3 after the close: %v, %v, %v; want ErrPinnedGone", nc, resp, err)
	}
	// Another parent for the same key is refused too, without a dial.
	other := &engine.Parent{Addr: "127.0.0.1:1"}
	if _, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: other, PinKey: 7}); !errors.Is(err, engine.ErrPinnedGone) {
		t.Fatalf("other parent: %v", err)
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Dialed != 1 {
		t.Fatalf("stats %+v: want the one connection", st)
	}
	e.Unpin(7)
	if _, resp, err := tun(bench.NTLMNegotiate()); ntlmType2(resp, err) != nil {
		t.Fatalf("after Unpin: %v", ntlmType2(resp, err))
	}
	// A session for one parent is not used for another.
	if _, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: other, PinKey: 7}); !errors.Is(err, engine.ErrPinnedGone) {
		t.Fatalf("other parent with a live session: %v", err)
	}
	e.Unpin(7)
	lines := connectLines(readLog(t, sq.log, 2))
	if len(lines) != 2 || lines[0].Port == lines[1].Port {
		t.Fatalf("squid log %+v: want 2 CONNECTs on 2 connections", lines)
	}
}

// TestTLSViaDigestParent: an https origin behind a Squid parent that
// demands Digest: the pooled connection's CONNECT answers the challenge
// with the parent's credentials, and requests reuse the tunnel.
func TestTLSViaDigestParent(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "digest"})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 2; i++ {
		req := tlsGet(t, ngx, "origin.test", "/small", cfg, "")
		req.Via = &engine.Parent{Addr: sq.addr, User: squidUser, Password: squidPass}
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_ = e.Close() // squid logs a tunnel when it ends
	lines := connectLines(readLog(t, sq.log, 2))
	if len(lines) != 2 || lines[0].Status != 407 || lines[1].Status != 200 || lines[0].Port != lines[1].Port ||
		lines[1].User != squidUser {
		t.Fatalf("squid log %+v: want a 407 then a 200 on one connection", lines)
	}
}

// TestTunnelDrainPinnedParent: draining the group parent that holds an
// NTLM handshake's pinned connection between CONNECTs ends the pin at
// once, not at its idle timeout: OnPinnedClosed, the connection closed,
// and the Type 3 CONNECT fails with ErrPinnedGone.
func TestTunnelDrainPinnedParent(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "ntlm"})
	closed := make(chan uint64, 1)
	e := startEngine(t, engine.Config{Auth: passThrough, PinnedIdleTimeout: 10 * time.Minute,
		OnPinnedClosed: func(k uint64) { closed <- k },
		Groups:         map[string]engine.GroupConfig{"parents": {Peers: []engine.Peer{{Name: "a", Addr: sq.addr, Parent: true}}}}})
	tun := func(pa string) (net.Conn, *engine.TunnelResponse, error) {
		return e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "parents", PinKey: 7, ProxyAuthorization: pa})
	}
	if _, resp, err := tun(bench.NTLMNegotiate()); ntlmType2(resp, err) != nil {
		t.Fatal(ntlmType2(resp, err))
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 1 {
		t.Fatalf("stats %+v: want the handshake's connection pinned", st)
	}
	if err := e.DrainPeer("parents", "a"); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-closed:
		if k != 7 {
			t.Fatalf("OnPinnedClosed(%d), want 7", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("draining the parent left its pinned connection open")
	}
	if st := tunnelStats(e, sq.addr); st.Pool.Pinned != 0 {
		t.Fatalf("stats %+v: want the pinned connection gone", st)
	}
	nc, resp, err := tun(bench.NTLMAuthenticate("DOM", "u", "WS"))
	if nc != nil || resp != nil || !errors.Is(err, engine.ErrPinnedGone) {
		t.Fatalf("Type 3 after the drain: %v, %v, %v; want ErrPinnedGone", nc, resp, err)
	}
	e.Unpin(7)
}

// TestTLSViaParentLogin: an https origin behind a Digest Squid parent
// whose credentials are the engine's proxy login for the parent's address
// (Config.Auth, not preemptive) rather than the Parent's own: the pooled
// connection's CONNECT answers the 407 with them, without a Basic
// password first, and requests reuse the tunnel.
func TestTLSViaParentLogin(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := startSquid(t, squidOptions{scheme: "digest"})
	e := startEngine(t, engine.Config{Auth: func(u engine.Upstream) *engine.Auth {
		if u.Addr == sq.addr {
			return &engine.Auth{Proxy: own(squidUser, squidPass)}
		}
		return nil
	}})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 2; i++ {
		req := tlsGet(t, ngx, "origin.test", "/small", cfg, "")
		req.Via = &engine.Parent{Addr: sq.addr}
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_ = e.Close() // squid logs a tunnel when it ends
	lines := connectLines(readLog(t, sq.log, 2))
	if len(lines) != 2 || lines[0].Status != 407 || lines[1].Status != 200 || lines[0].Port != lines[1].Port ||
		lines[0].User != "-" || lines[1].User != squidUser {
		t.Fatalf("squid log %+v: want a 407 without credentials, then a 200 on one connection", lines)
	}
}

// TestTunnelDrainBusyPinnedParent: draining the group parent while a
// CONNECT of an NTLM handshake runs on its pinned connection ends the pin
// once that CONNECT's refusal is back, as for an idle one: the connection
// closed, OnPinnedClosed called before Tunnel returns (the embedder then
// closes the client connection after the refusal), and the next CONNECT
// fails with ErrPinnedGone.
func TestTunnelDrainBusyPinnedParent(t *testing.T) {
	leakBaseline(t)
	par := bench.NewHeldNTLMParent(t, 1) // holds each connection's second CONNECT
	held, open := par.Held, par.Release
	closed := make(chan uint64, 2)
	e := startEngine(t, engine.Config{Auth: passThrough, PinnedIdleTimeout: 10 * time.Minute,
		OnPinnedClosed: func(k uint64) { closed <- k },
		Groups:         map[string]engine.GroupConfig{"parents": {Peers: []engine.Peer{{Name: "a", Addr: par.Addr(), Parent: true}}}}})
	tun := func() (net.Conn, *engine.TunnelResponse, error) {
		return e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: "127.0.0.1:443", Group: "parents", PinKey: 7,
			ProxyAuthorization: bench.NTLMNegotiate()})
	}
	if nc, resp, err := tun(); nc != nil || resp == nil || resp.Status != 407 {
		t.Fatalf("first CONNECT: %v, %v, %v; want the 407", nc, resp, err)
	}
	if st := tunnelStats(e, par.Addr()); st.Pool.Pinned != 1 {
		t.Fatalf("stats %+v: want the handshake's connection pinned", st)
	}
	type result struct {
		resp *engine.TunnelResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, resp, err := tun()
		done <- result{resp, err}
	}()
	<-held
	if err := e.DrainPeer("parents", "a"); err != nil {
		t.Fatal(err)
	}
	open()
	r := <-done
	if r.resp == nil || r.resp.Status != 407 {
		t.Fatalf("the CONNECT during the drain: %v, %v; want its 407", r.resp, r.err)
	}
	select {
	case k := <-closed:
		if k != 7 {
			t.Fatalf("OnPinnedClosed(%d), want 7", k)
		}
	default:
		t.Fatal("Tunnel returned, and the pin of the drained parent was not reported to OnPinnedClosed")
	}
	if st := tunnelStats(e, par.Addr()); st.Pool.Pinned != 0 || st.Pool.Busy != 0 {
		t.Fatalf("stats %+v: want the pinned connection gone", st)
	}
	if nc, resp, err := tun(); nc != nil || resp != nil || !errors.Is(err, engine.ErrPinnedGone) {
		t.Fatalf("CONNECT after the drain: %v, %v, %v; want ErrPinnedGone", nc, resp, err)
	}
	e.Unpin(7)
}

// TestTunnelDrainFirstConnectInFlight: DrainPeer runs while the first
// CONNECT of an NTLM handshake is in flight, before there is a pin to end.
// The pin that CONNECT makes ends as soon as it is made: reported to
// OnPinnedClosed before Tunnel returns, its connection closed.
func TestTunnelDrainFirstConnectInFlight(t *testing.T) {
	leakBaseline(t)
	par := bench.NewHeldNTLMParent(t, 0) // holds the first CONNECT
	held, open := par.Held, par.Release
	closed := make(chan uint64, 2)
	e := startEngine(t, engine.Config{Auth: passThrough, PinnedIdleTimeout: 10 * time.Minute,
		OnPinnedClosed: func(k uint64) { closed <- k },
		Groups:         map[string]engine.GroupConfig{"parents": {Peers: []engine.Peer{{Name: "a", Addr: par.Addr(), Parent: true}}}}})
	type result struct {
		resp *engine.TunnelResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: "127.0.0.1:443", Group: "parents", PinKey: 7,
			ProxyAuthorization: bench.NTLMNegotiate()})
		done <- result{resp, err}
	}()
	<-held
	if err := e.DrainPeer("parents", "a"); err != nil {
		t.Fatal(err)
	}
	open()
	if r := <-done; r.resp == nil || r.resp.Status != 407 {
		t.Fatalf("the CONNECT during the drain: %v, %v; want its 407", r.resp, r.err)
	}
	select {
	case k := <-closed:
		if k != 7 {
			t.Fatalf("OnPinnedClosed(%d), want 7", k)
		}
	default:
		t.Fatal("Tunnel returned, and the pin on the drained parent was not reported to OnPinnedClosed")
	}
	if st := tunnelStats(e, par.Addr()); st.Pool.Pinned != 0 || st.Pool.Busy != 0 {
		t.Fatalf("stats %+v: want the pinned connection gone", st)
	}
	e.Unpin(7)
}
