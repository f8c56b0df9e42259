package engine_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// Keep-alive races against a real Squid parent that closes an idle client
// connection after a second (client_idle_pconn_timeout 1 seconds).

// idleSquid starts a Squid parent that closes idle client connections
// after a second, logging each request with the client's port, and
// allowing CONNECT to connectPorts (any port when none).
func idleSquid(t *testing.T, connectPorts ...int) *squid {
	t.Helper()
	log := filepath.Join(logDir(t), "ports.log")
	s := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: connectPorts, Extra: []string{
		"logformat authtest %>p %>Hs %rm %ru %un",
		"access_log stdio:" + log + " authtest",
		"client_idle_pconn_timeout 1 seconds",
	}})
	return &squid{addr: s.Addr(), log: log}
}

// logPorts counts the connections (client ports) in lines.
func logPorts(lines []logLine) int {
	seen := map[int]bool{}
	for _, l := range lines {
		seen[l.Port] = true
	}
	return len(seen)
}

// TestSquidParentIdleTimeoutRace: rounds of 4 concurrent GETs through a
// Squid parent (absolute-form targets, to nginx), paused about Squid's
// idle timeout of a second apart. No error reaches a caller, Squid relays
// each GET once, and the connections still open after a short pause are
// all reused.
func TestSquidParentIdleTimeoutRace(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	sq := idleSquid(t)
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"parents": {
		Peers: []engine.Peer{{Name: "squid", Addr: sq.addr, Parent: true}},
	}}})
	const callers = 4
	mk := make([]func() *engine.Request, callers)
	for i := range mk {
		mk[i] = func() *engine.Request {
			return &engine.Request{Upstream: engine.Upstream{Group: "parents"}, Head: groupHead(t, "/small", ngx.Addr())}
		}
	}
	errs := raceRounds(t, e, aboutASecond, mk)
	n := len(aboutASecond) * callers
	for r, es := range errs {
		for i, err := range es {
			if err != nil {
				t.Errorf("round %d (after %v idle), caller %d: %v", r, aboutASecond[r], i, err)
			}
		}
	}
	s := logStats(t, e, sq.addr+" via=fwd")
	lines := readLog(t, sq.log, n)
	conns := logPorts(lines)
	t.Logf("squid: %d requests on %d connections", len(lines), conns)
	if len(lines) != n {
		t.Errorf("squid logged %d requests, want %d (each GET relayed once)", len(lines), n)
	}
	for _, l := range lines {
		if l.Status != 200 || l.Method != "GET" || l.Target != ngx.URL("/small") {
			t.Errorf("squid logged %+v", l)
		}
	}
	if got := countURI(ngx.WaitRequests(n, 5*time.Second), "/small"); got != n {
		t.Errorf("nginx logged %d GETs, want %d", got, n)
	}
	if s.Requests != uint64(n) || len(s.Errors) != 0 || s.RacesRetried != s.RacesHit {
		t.Errorf("engine: %d requests, errors %v, races hit %d, retried %d; want %d, none, all retried",
			s.Requests, s.Errors, s.RacesHit, s.RacesRetried, n)
	}
	// Squid's idle timer is coarse: a connection may close after a pause
	// shorter than its second (a run saw 32 connections where the long
	// pauses alone would make 28). Only the rounds that follow the one
	// before at once are sure to find theirs open.
	if max := n - callers*zeroPauses(aboutASecond); conns != int(s.Pool.Dialed) || conns > max {
		t.Errorf("squid saw %d connections, engine dialed %d; want the same, at most %d", conns, s.Pool.Dialed, max)
	}
}

// zeroPauses counts the rounds that follow the one before without a pause
// (the first excepted).
func zeroPauses(ps []time.Duration) int {
	n := 0
	for i, p := range ps {
		if i > 0 && p == 0 {
			n++
		}
	}
	return n
}

// TestSquidTunnelIdleTimeoutRace: the same rounds to an https origin
// through the Squid parent's CONNECT tunnels, which the engine pools
// (TLS over the tunnel, under a key naming both). nginx closes a
// kept-alive connection after a second (keepalive_timeout 1s), and Squid
// passes the close on through the tunnel. No error reaches a caller,
// nginx answers each GET once, and Squid logs one CONNECT per connection
// the engine dialed, each tunnel logged as it closes.
func TestSquidTunnelIdleTimeoutRace(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	ngx := bench.StartNginx(t, bench.NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, KeepaliveTimeout: "1s"})
	sq := idleSquid(t, bench.Port(t, ngx.TLSAddr()))
	e := startEngine(t, engine.Config{})
	tlsCfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	const callers = 4
	mk := make([]func() *engine.Request, callers)
	for i := range mk {
		mk[i] = func() *engine.Request {
			r := tlsGet(t, ngx, "origin.test", "/small", tlsCfg, "")
			r.Via = &engine.Parent{Addr: sq.addr}
			return r
		}
	}
	errs := raceRounds(t, e, aboutASecond, mk)
	n := len(aboutASecond) * callers
	for r, es := range errs {
		for i, err := range es {
			if err != nil {
				t.Errorf("round %d (after %v idle), caller %d: %v", r, aboutASecond[r], i, err)
			}
		}
	}
	var s engine.UpstreamStats
	for k := range e.Stats() {
		if strings.Contains(k, "via=connect="+sq.addr) {
			s = logStats(t, e, k)
		}
	}
	lines := readLog(t, sq.log, int(s.Pool.Dialed))
	t.Logf("squid: %d CONNECTs", len(lines))
	for _, l := range lines {
		if l.Status != 200 || l.Method != "CONNECT" || l.Target != ngx.TLSAddr() {
			t.Errorf("squid logged %+v", l)
		}
	}
	reqs := ngx.WaitTLSRequests(n, 5*time.Second)
	t.Logf("nginx: %d requests over TLS", len(reqs))
	if len(reqs) != n {
		t.Errorf("nginx logged %d TLS requests, want %d (each GET once)", len(reqs), n)
	}
	if s.Requests != uint64(n) || len(s.Errors) != 0 || s.RacesRetried != s.RacesHit {
		t.Errorf("engine: %d requests, errors %v, races hit %d, retried %d; want %d, none, all retried",
			s.Requests, s.Errors, s.RacesHit, s.RacesRetried, n)
	}
	if max := callers * (1 + longPauses(aboutASecond)); len(lines) != int(s.Pool.Dialed) || len(lines) > max {
		t.Errorf("squid saw %d CONNECTs, engine dialed %d; want the same, at most %d", len(lines), s.Pool.Dialed, max)
	}
}
