package engine_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// tlsGetThrough runs a GET for path over TLS on an open tunnel and
// returns the status and body.
func tlsGetThrough(t *testing.T, nc net.Conn, pki *bench.PKI, path string) (int, string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	tc := tls.Client(nc, &tls.Config{ServerName: "origin.test", RootCAs: roots})
	_ = tc.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := io.WriteString(tc, "GET "+path+" HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatalf("write through tunnel: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("read through tunnel: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body through tunnel: %v", err)
	}
	return resp.StatusCode, string(b)
}

func tunnelCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestTunnelDirect opens a direct tunnel to nginx's TLS port and runs a
// TLS request through it; Stats counts it busy while open, never pooled.
func TestTunnelDirect(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr()})
	if err != nil || resp != nil {
		t.Fatalf("tunnel: %v, response %v", err, resp)
	}
	key := ngx.TLSAddr() + " via=tunnel"
	if s := e.Stats()[key]; s.Pool.Busy != 1 || s.Tunnels != 1 || s.Pool.Dialed != 1 {
		t.Fatalf("stats while open: busy %d, tunnels %d, dialed %d; want 1, 1, 1", s.Pool.Busy, s.Tunnels, s.Pool.Dialed)
	}
	status, body := tlsGetThrough(t, nc, pki, "/small")
	if status != 200 || body != bench.SmallBody {
		t.Fatalf("through tunnel: %d %q", status, body)
	}
	_ = nc.Close()
	_ = nc.Close()
	if s := e.Stats()[key]; s.Pool.Busy != 0 || s.Pool.Idle != 0 {
		t.Fatalf("stats after close: busy %d, idle %d; want 0, 0", s.Pool.Busy, s.Pool.Idle)
	}
	logs := ngx.WaitTLSRequests(1, requestTimeout)
	if len(logs) != 1 || logs[0].ServerName != "origin.test" {
		t.Fatalf("TLS log %+v", logs)
	}
}

// TestTunnelCap: tunnels count against MaxConnsPerUpstream of their key;
// one over the cap waits and fails at PendingTimeout.
func TestTunnelCap(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	e := startEngine(t, engine.Config{MaxConnsPerUpstream: 1, PendingTimeout: 200 * time.Millisecond})
	nc, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr()})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr()})
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhasePoolWait {
		t.Fatalf("second tunnel: %v, want a PhasePoolWait error", err)
	}
	_ = nc.Close()
	nc, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr()})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	_ = nc.Close()
}

// TestTunnelDialError: a refused dial is a PhaseDial error, counted.
func TestTunnelDialError(t *testing.T) {
	e := startEngine(t, engine.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: addr})
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial {
		t.Fatalf("err %v, want PhaseDial", err)
	}
	if s := e.Stats()[addr+" via=tunnel"]; s.Errors["dial"] != 1 || s.Pool.Connecting != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTunnelSquid: CONNECT through a real squid parent, then TLS through
// the tunnel to nginx.
func TestTunnelSquid(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())}})
	e := startEngine(t, engine.Config{})
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: &engine.Parent{Addr: sq.Addr()}})
	if err != nil {
		t.Fatalf("tunnel: %v", err)
	}
	if resp == nil || resp.Status != 200 {
		t.Fatalf("CONNECT answer %+v", resp)
	}
	status, body := tlsGetThrough(t, nc, pki, "/16k")
	if status != 200 || body != string(bench.PatternBody(bench.Size16K)) {
		t.Fatalf("through squid: %d, %d bytes", status, len(body))
	}
	_ = nc.Close()
	key := ngx.TLSAddr() + " via=connect=" + sq.Addr()
	if s := e.Stats()[key]; s.Tunnels != 1 || s.Pool.Busy != 0 || s.Pool.Dialed != 1 {
		t.Fatalf("stats %s: %+v", key, s)
	}

	// A port squid does not allow CONNECT to: its 403 comes back as the
	// answer, with the typed error.
	_, resp, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.Addr(), Via: &engine.Parent{Addr: sq.Addr()}})
	if !errors.Is(err, engine.ErrTunnelRefused) || resp == nil || resp.Status != 403 {
		t.Fatalf("CONNECT to a denied port: %v, %+v; want 403 and ErrTunnelRefused", err, resp)
	}
}

// TestTunnelSquidAuth: squid requiring Basic authentication answers 407
// without credentials (returned as the answer, head and body, for the
// caller to relay) and opens the tunnel with them.
func TestTunnelSquidAuth(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	e := startEngine(t, engine.Config{})
	for _, p := range []*engine.Parent{{Addr: sq.Addr()}, {Addr: sq.Addr(), User: "alice", Password: "wrong"}} {
		nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: p})
		if nc != nil || !errors.Is(err, engine.ErrTunnelRefused) {
			t.Fatalf("user %q: conn %v, err %v; want ErrTunnelRefused", p.User, nc, err)
		}
		if resp == nil || resp.Status != 407 || !strings.Contains(resp.Header.Get("Proxy-Authenticate"), `realm="serverside-test"`) {
			t.Fatalf("user %q: answer %+v, want 407 with a Basic challenge", p.User, resp)
		}
		if !strings.HasPrefix(string(resp.Head), "HTTP/1.1 407 ") || !strings.HasSuffix(string(resp.Head), "\r\n\r\n") {
			t.Fatalf("raw head %q", resp.Head)
		}
		if cl, _ := strconv.Atoi(resp.Header.Get("Content-Length")); cl != len(resp.Body) || cl == 0 {
			t.Fatalf("body %d bytes, Content-Length %q", len(resp.Body), resp.Header.Get("Content-Length"))
		}
	}
	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(),
		Via: &engine.Parent{Addr: sq.Addr(), User: "alice", Password: "s3cret"}})
	if err != nil || resp.Status != 200 {
		t.Fatalf("with credentials: %v", err)
	}
	status, body := tlsGetThrough(t, nc, pki, "/small")
	_ = nc.Close()
	if status != 200 || body != bench.SmallBody {
		t.Fatalf("through squid with auth: %d %q", status, body)
	}
	// Each credential is a scope of its own in the key, the secret never
	// shows: no credentials, the wrong password, the right one.
	keys, tunnels := 0, uint64(0)
	for k, s := range e.Stats() {
		if strings.Contains(k, "s3cret") || strings.Contains(k, "alice") || strings.Contains(k, "wrong") {
			t.Errorf("stats key %q shows the credentials", k)
		}
		if strings.Contains(k, "via=connect=") {
			keys++
			tunnels += s.Tunnels
			if s.Requests != 1 {
				t.Errorf("%s: requests %d, want 1", k, s.Requests)
			}
			// A refusal is the parent's answer, as a 407 to a GET is:
			// neither a failed request nor a failed dial.
			if len(s.Errors) != 0 || s.Pool.DialFailed != 0 {
				t.Errorf("%s: errors %v, failed dials %d, want none", k, s.Errors, s.Pool.DialFailed)
			}
		}
	}
	if keys != 3 || tunnels != 1 {
		t.Errorf("%d tunnel keys with %d tunnels, want 3 and 1: %v", keys, tunnels, e.Stats())
	}
}

// TestTLSViaParent: an https origin behind a parent: CONNECT to squid,
// TLS to nginx through the tunnel, then requests that reuse it.
func TestTLSViaParent(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())}})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 3; i++ {
		req := tlsGet(t, ngx, "origin.test", "/small", cfg, "")
		req.Via = &engine.Parent{Addr: sq.Addr()}
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	logs := ngx.WaitTLSRequests(3, requestTimeout)
	if len(logs) != 3 || logs[0].Connection != logs[2].Connection {
		t.Fatalf("TLS log %+v: want three requests on one connection", logs)
	}
	key, s := statsWithPrefix(t, e, ngx.TLSAddr())
	if !strings.Contains(key, "via=connect="+sq.Addr()) || s.Pool.Dialed != 1 || s.OnReused != 2 || s.TLSHandshakes != 1 {
		t.Fatalf("stats %s: %+v", key, s)
	}
	// squid logs a tunnel when it ends.
	_ = e.Close()
	deadline := time.Now().Add(requestTimeout)
	for !strings.Contains(strings.Join(sq.AccessLog(), "\n"), "CONNECT "+ngx.TLSAddr()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(strings.Join(sq.AccessLog(), "\n"), "CONNECT "+ngx.TLSAddr()) {
		t.Fatalf("squid access log has no CONNECT %s:\n%s", ngx.TLSAddr(), strings.Join(sq.AccessLog(), "\n"))
	}
}

// TestTunnelTLSParent: squid spoken to over TLS (https_port): a tunnel
// through it, with TLS to nginx inside; an https origin behind it through
// the engine; a plain request forwarded to it over TLS; a parent whose
// certificate does not verify.
func TestTunnelTLSParent(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	e := startEngine(t, engine.Config{})
	parentTLS := &engine.TLS{RootCAs: pki.CAPEM} // SNI: 127.0.0.1, which is never sent; verified as an IP
	parent := &engine.Parent{Addr: sq.TLSAddr(), TLS: parentTLS}

	nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: parent})
	if err != nil || resp.Status != 200 {
		t.Fatalf("tunnel over TLS to the parent: %v", err)
	}
	status, body := tlsGetThrough(t, nc, pki, "/small")
	_ = nc.Close()
	if status != 200 || body != bench.SmallBody {
		t.Fatalf("through the TLS parent: %d %q", status, body)
	}

	// An https origin behind the TLS parent: TLS inside TLS, pooled.
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 2; i++ {
		req := tlsGet(t, ngx, "origin.test", "/16k", cfg, "")
		req.Via = parent
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || len(body) != bench.Size16K {
			t.Fatalf("https via the TLS parent, request %d: %v", i, err)
		}
	}
	found := false
	for k, s := range e.Stats() {
		if strings.Contains(k, "via=connect="+sq.TLSAddr()+";tls=") && strings.Contains(k, " tls=sni=origin.test") {
			found = true
			if s.Pool.Dialed != 1 || s.OnReused != 1 {
				t.Errorf("%s: dialed %d, on reused %d; want 1, 1", k, s.Pool.Dialed, s.OnReused)
			}
		}
	}
	if !found {
		t.Errorf("no stats key for the https origin via the TLS parent: %v", e.Stats())
	}

	// A plain http request forwarded to the parent over TLS.
	h := new(parser.Request)
	raw := "GET http://" + ngx.Addr() + "/small HTTP/1.1\r\nHost: " + ngx.Addr() + "\r\n\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	fresp, fbody, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: sq.TLSAddr(),
		TLS: &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}}, Head: h})
	if err != nil || fresp.Status != 200 || string(fbody) != bench.SmallBody {
		t.Fatalf("forwarded over TLS to the parent: %v, %q", err, fbody)
	}
	// nginx's main log has every request; the TLS log all but the
	// forwarded one, which squid sent in plaintext.
	if all, tl := ngx.WaitRequests(4, requestTimeout), ngx.TLSRequests(); len(all) != 4 || len(tl) != 3 || all[3].URI != "/small" {
		t.Fatalf("nginx logs: all %+v, TLS %+v; want the forwarded /small in plaintext", all, tl)
	}

	// A wrong CA for the parent fails its handshake, typed.
	_, _, err = e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(),
		Via: &engine.Parent{Addr: sq.TLSAddr(), TLS: &engine.TLS{}}})
	var ua x509.UnknownAuthorityError
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseTLS || !errors.As(err, &ua) {
		t.Fatalf("parent with an unknown CA: %v, want PhaseTLS with x509.UnknownAuthorityError", err)
	}
}

// TestTunnelViaToParent: TunnelRequest.ViaValue reaches the parent, as
// Squid logs it, and no Via goes without one. A value that could break
// out of its line is refused before anything is dialed.
func TestTunnelViaToParent(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	log := filepath.Join(logDir(t), "via.log")
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		Extra: []string{"logformat viatest %rm [%{Via}>h]", "access_log stdio:" + log + " viatest"}})
	e := startEngine(t, engine.Config{})
	parent := &engine.Parent{Addr: sq.Addr()}
	for _, via := range []string{"1.0 client, 1.1 proxy.test (serverside)", ""} {
		nc, resp, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: parent, ViaValue: via})
		if err != nil || resp.Status != 200 {
			t.Fatalf("Via %q: %v %+v", via, err, resp)
		}
		if status, body := tlsGetThrough(t, nc, pki, "/small"); status != 200 || body != bench.SmallBody {
			t.Fatalf("through the tunnel: %d %q", status, body)
		}
		_ = nc.Close()
	}
	if _, _, err := e.Tunnel(tunnelCtx(t), engine.TunnelRequest{Target: ngx.TLSAddr(), Via: parent,
		ViaValue: "1.1 a\r\nX-Injected: 1"}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("CRLF in the Via: %v, want ErrBadRequest", err)
	}
	want := "CONNECT [1.0 client, 1.1 proxy.test (serverside)]\nCONNECT [-]\n"
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(log)
		// Squid logs its own startup probe too, with no method.
		got = strings.ReplaceAll(string(b), "- [-]\n", "")
		if got == want {
			return
		}
	}
	t.Fatalf("squid logged\n%s\nwant\n%s", got, want)
}
