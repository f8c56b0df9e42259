package engine_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
)

// TestGroupTLSPeers: a group whose peers are https origins (Peer.TLS):
// verified against the test CA with the configured SNI, a client
// certificate for mTLS, and a pool key of their own per TLS identity.
func TestGroupTLSPeers(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, true)
	withCert := &engine.TLS{ServerName: "a.test", RootCAs: pki.CAPEM, Certificate: &pki.Client}
	noCert := &engine.TLS{ServerName: "b.test", RootCAs: pki.CAPEM}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"mtls":   {Peers: []engine.Peer{{Name: "a", Addr: ngx.TLSAddr(), TLS: withCert}}},
		"nocert": {Peers: []engine.Peer{{Name: "b", Addr: ngx.TLSAddr(), TLS: noCert}}},
	}})
	for i := 0; i < 2; i++ {
		status, err := exchange(e, "mtls", groupHead(t, "/small", "origin.test"))
		if err != nil || status != 200 {
			t.Fatalf("mtls peer: %d %v", status, err)
		}
	}
	// nginx answers 400 to a request without the client certificate it
	// asked for.
	if status, err := exchange(e, "nocert", groupHead(t, "/small", "origin.test")); err != nil || status != 400 {
		t.Fatalf("peer without client certificate: %d %v, want 400", status, err)
	}
	reqs := ngx.WaitTLSRequests(3, requestTimeout)
	if len(reqs) != 3 {
		t.Fatalf("nginx logged %d TLS requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		want, dn := "a.test", pki.ClientDN
		if i == 2 {
			want, dn = "b.test", ""
		}
		if r.ServerName != want || r.ClientDN != dn {
			t.Errorf("request %d: SNI %q, client %q; want %q, %q", i, r.ServerName, r.ClientDN, want, dn)
		}
	}
	if reqs[0].Connection != reqs[1].Connection {
		t.Errorf("the mtls peer's requests used connections %d and %d, want one", reqs[0].Connection, reqs[1].Connection)
	}
	keys := 0
	for k, s := range e.Stats() {
		if strings.HasPrefix(k, ngx.TLSAddr()+" tls=sni=") {
			keys++
			if s.TLSHandshakes != 1 {
				t.Errorf("%s: %d handshakes, want 1", k, s.TLSHandshakes)
			}
		}
	}
	if keys != 2 {
		t.Errorf("%d TLS keys, want 2: %v", keys, e.Stats())
	}
}

// TestGroupTLSPeerWrongCA: a peer whose certificate does not verify fails
// the request with the x509 reason, and counts as a failed connect.
func TestGroupTLSPeerWrongCA(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	other := bench.NewPKI(t, "origin.test")
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"g": {Peers: []engine.Peer{{Name: "a", Addr: ngx.TLSAddr(), TLS: &engine.TLS{RootCAs: other.CAPEM}}}},
	}})
	_, err := exchange(e, "g", groupHead(t, "/small", "origin.test"))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("err %v, want an unknown authority", err)
	}
	if ps := e.PeerStats()["g"].Peers[0]; ps.Failures != 1 {
		t.Fatalf("peer stats %+v, want 1 failure", ps)
	}
	// With another peer, the request goes there, and the failures mark
	// the peer down as connect failures do.
	good, pki := tlsNginx(t, false)
	e = startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"g": {Peers: []engine.Peer{
			{Name: "bad", Addr: ngx.TLSAddr(), TLS: &engine.TLS{ServerName: "origin.test", RootCAs: other.CAPEM}},
			{Name: "good", Addr: good.TLSAddr(), TLS: &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}},
		}, Health: engine.Health{MaxFails: 2}},
	}})
	for i := 0; i < 6; i++ {
		if status, err := exchange(e, "g", groupHead(t, "/small", "origin.test")); err != nil || status != 200 {
			t.Fatalf("request %d: %d %v", i, status, err)
		}
	}
	if ps := e.PeerStats()["g"].Peers[0]; ps.Failures != 2 || ps.Downs != 1 || ps.State != engine.PeerDown || ps.Rerouted != 2 {
		t.Fatalf("bad peer %+v, want 2 failures, rerouted, then down", ps)
	}
	if _, err := engine.New(engine.Config{Groups: map[string]engine.GroupConfig{
		"bad": {Peers: []engine.Peer{{Addr: ngx.TLSAddr(), TLS: &engine.TLS{RootCAs: []byte("not PEM")}}}},
	}}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("bad RootCAs: %v, want ErrBadRequest", err)
	}
}

// TestGroupTLSPeerHandshakeTimeout: a peer that takes the connection but
// never finishes the TLS handshake fails the request at
// TLSHandshakeTimeout, with the request's own context still live: a
// failed connect, counted against the peer as a failed handshake is, and
// the request moves to another peer.
func TestGroupTLSPeerHandshakeTimeout(t *testing.T) {
	leakBaseline(t)
	hung := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br) // read the ClientHello, say nothing
	})
	good, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{TLSHandshakeTimeout: 100 * time.Millisecond, Groups: map[string]engine.GroupConfig{
		"lone": {Peers: []engine.Peer{{Name: "hung", Addr: hung.Addr(), TLS: &engine.TLS{ServerName: "origin.test"}}}},
		"g": {Peers: []engine.Peer{
			{Name: "hung", Addr: hung.Addr(), TLS: &engine.TLS{ServerName: "origin.test"}},
			{Name: "good", Addr: good.TLSAddr(), TLS: &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}},
		}, Health: engine.Health{MaxFails: 2}},
	}})
	_, err := exchange(e, "lone", groupHead(t, "/small", "origin.test"))
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseTLS || !errors.Is(err, conn.ErrTLSHandshakeTimeout) {
		t.Fatalf("err %v, want a PhaseTLS handshake timeout", err)
	}
	if ps := e.PeerStats()["lone"].Peers[0]; ps.Failures != 1 {
		t.Fatalf("peer stats %+v, want 1 failure", ps)
	}
	for i := 0; i < 6; i++ {
		if status, err := exchange(e, "g", groupHead(t, "/small", "origin.test")); err != nil || status != 200 {
			t.Fatalf("request %d: %d %v", i, status, err)
		}
	}
	if ps := peersOf(e, "g")["hung"]; ps.Failures != 2 || ps.Downs != 1 || ps.State != engine.PeerDown || ps.Rerouted != 2 {
		t.Fatalf("hung peer %+v, want 2 failures, rerouted, then down", ps)
	}
	hung.Close()
}

// TestTunnelGroup: tunnels through a group of parent proxies use the
// picked peer's credentials; a refusal is returned and counts as an
// answer, a parent that cannot be reached as a failure.
func TestTunnelGroup(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{
		"good": {Peers: []engine.Peer{{Name: "sq", Addr: sq.Addr(), Parent: true, Username: "alice", Password: "s3cret"}}},
		"anon": {Peers: []engine.Peer{{Name: "sq", Addr: sq.Addr(), Parent: true}}},
		"dead": {Peers: []engine.Peer{{Name: "gone", Addr: "127.0.0.1:1", Parent: true}}},
		"orig": {Peers: []engine.Peer{{Name: "o", Addr: ngx.Addr()}}},
	}})
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "good"})
	if err != nil || resp.Status != 200 {
		t.Fatalf("good: %v", err)
	}
	status, body := tlsGetThrough(t, nc, pki, "/small")
	_ = nc.Close()
	if status != 200 || body != bench.SmallBody {
		t.Fatalf("through the group: %d %q", status, body)
	}
	nc, resp, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "anon"})
	if nc != nil || !errors.Is(err, engine.ErrTunnelRefused) || resp == nil || resp.Status != 407 {
		t.Fatalf("anon: %v %v %+v, want a 407 refusal", nc, err, resp)
	}
	if _, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "dead"}); err == nil {
		t.Fatal("dead parent: no error")
	}
	if _, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Group: "orig"}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("group of origins: %v, want ErrBadRequest", err)
	}
	ps := e.PeerStats()
	for g, want := range map[string][2]uint64{"good": {1, 0}, "anon": {1, 0}, "dead": {1, 1}} {
		p := ps[g].Peers[0]
		if p.Picks != want[0] || p.Failures != want[1] {
			t.Errorf("%s: picks %d failures %d, want %v", g, p.Picks, p.Failures, want)
		}
	}
	p, err := e.PickParent("good", "")
	if err != nil || p.Addr != sq.Addr() || p.User != "alice" || p.Password != "s3cret" {
		t.Fatalf("PickParent: %+v %v", p, err)
	}
}
