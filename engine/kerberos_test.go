package engine_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// gssapiApache starts a throwaway Kerberos realm with alice logged in,
// and an Apache that demands Negotiate (mod_auth_gssapi, a login bound to
// its connection) with the extra directives. It returns Apache, the
// Authorization value of alice's login (a Negotiate token for Apache's
// service principal) and the path of a log that names the client's port
// and the Authorization received.
func gssapiApache(t *testing.T, extra ...string) (*bench.Apache, string, string) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	krb := bench.StartKerberos(t, bench.KerberosOptions{Users: map[string]string{"alice": "wonderland"}})
	krb.Kinit(t, "alice", "wonderland")
	log := filepath.Join(logDir(t), "gss.log")
	ap := bench.StartApache(t, bench.ApacheOptions{Auth: "gssapi", Keytab: krb.Keytab(), Extra: append([]string{
		`LogFormat "%{remote}p %>s %m %U%q %u %{Authorization}i" gss`,
		"CustomLog " + log + " gss",
	}, extra...)})
	return ap, "Authorization: " + krb.NegotiateToken(t), log
}

// TestApacheNegotiatePinning: a Negotiate login to a real Apache
// (Kerberos, mod_auth_gssapi with GssapiConnectionBound) pins its
// connection to the caller's key. The key's next request, without
// credentials, is served as alice on that connection; requests with
// another key or none get connections of their own and Apache's 401,
// bounced (the one with a key pinned to it). After Unpin, the key starts afresh and is challenged.
func TestApacheNegotiatePinning(t *testing.T) {
	leakBaseline(t)
	ap, login, log := gssapiApache(t)
	e := startEngine(t, engine.Config{})
	host := ap.Addr()
	get := func(key uint64, path string, fields ...string) *recSink {
		t.Helper()
		req := request(t, ap.Addr(), "GET", host, path, false, fields...)
		req.PinKey = key
		return send(t, e, req)
	}
	if s := get(1, "/small?k=1&n=1", login); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 ||
		s.body.String() != bench.SmallBody || !strings.HasPrefix(s.header["www-authenticate"], "Negotiate ") {
		t.Fatalf("login: heads %v %v, err %v; want 200 with Apache's mutual authentication token", s.heads, s.header, s.err)
	}
	if !e.Pinned(1) || e.Stats()[host].Pool.Pinned != 1 {
		t.Fatalf("after the login: pinned %v, pool %+v; want key 1's session", e.Pinned(1), e.Stats()[host].Pool)
	}
	if s := get(1, "/small?k=1&n=2"); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("key 1 without credentials: heads %v, err %v; want 200 on the logged-in connection", s.heads, s.err)
	}
	for _, key := range []uint64{2, 0} {
		// Apache offers Negotiate and NTLM, in two fields.
		if s := get(key, "/small?k=other"); s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 ||
			s.header["www-authenticate"] == "" {
			t.Fatalf("key %d without credentials: heads %v %v, err %v; want Apache's 401", key, s.heads, s.header, s.err)
		}
	}
	// Apache logs each request as it ends: lines of different
	// connections come in any order.
	var mine, others []logLine
	for _, l := range readLog(t, log, 4) {
		if strings.HasPrefix(l.Target, "/small?k=1") {
			mine = append(mine, l)
		} else {
			others = append(others, l)
		}
	}
	if len(mine) != 2 || len(others) != 2 || mine[0].Port != mine[1].Port || mine[1].Status != 200 ||
		mine[1].User != bench.Principal("alice") || mine[1].Extra != "-" || !strings.HasPrefix(mine[0].Extra, "Negotiate ") {
		t.Fatalf("Apache's log: want key 1's login and its request without credentials on one connection:\n%+v\n%+v", mine, others)
	}
	for _, l := range others {
		if l.Port == mine[0].Port || l.Status != 401 {
			t.Fatalf("Apache's log: %+v ran on key 1's connection (port %d)", l, mine[0].Port)
		}
	}
	// Key 2's request met a Negotiate challenge: its connection is
	// pinned to key 2, for the login that would follow. Key 0's, a bare
	// challenge to a request without credentials, carries no login and
	// went back to the pool.
	if !e.Pinned(2) || e.Stats()[host].Pool.Pinned != 2 || e.Stats()[host].Pool.Idle != 1 {
		t.Fatalf("pinned %v, pool %+v; want keys 1 and 2 pinned, one idle", e.Pinned(2), e.Stats()[host].Pool)
	}
	e.Unpin(1)
	waitFor(t, "key 2's pinned connection alone after Unpin", func() bool { return e.Stats()[host].Pool.Pinned == 1 })
	if s := get(1, "/small?k=1&n=3"); s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
		t.Fatalf("key 1 after Unpin: heads %v, err %v; want a fresh connection's 401", s.heads, s.err)
	}
}

// TestApacheNegotiatePinnedGone: Apache closes the idle connection a
// Negotiate login is bound to (KeepAliveTimeout). The engine tells the
// embedder (OnPinnedClosed), and the key's next request fails with
// ErrPinnedGone: no attempt, no dial, nothing in Apache's log.
func TestApacheNegotiatePinnedGone(t *testing.T) {
	leakBaseline(t)
	ap, login, log := gssapiApache(t, "KeepAliveTimeout 1")
	closed := make(chan uint64, 1)
	e := startEngine(t, engine.Config{OnPinnedClosed: func(k uint64) { closed <- k }})
	host := ap.Addr()
	req := request(t, host, "GET", host, "/small", false, login)
	req.PinKey = 5
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("login: heads %v, err %v", s.heads, s.err)
	}
	select {
	case k := <-closed:
		if k != 5 {
			t.Fatalf("OnPinnedClosed(%d), want 5", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnPinnedClosed not called after Apache closed the pinned connection")
	}
	before := e.Stats()[host]
	req = request(t, host, "GET", host, "/small?after", false)
	req.PinKey = 5
	s := send(t, e, req)
	if !errors.Is(s.err, engine.ErrPinnedGone) || len(s.heads) != 0 {
		t.Fatalf("after the close: heads %v, err %v; want ErrPinnedGone", s.heads, s.err)
	}
	after := e.Stats()[host]
	if after.Attempts != before.Attempts || after.Pool.Dialed != before.Pool.Dialed {
		t.Fatalf("stats before %+v, after %+v: want no attempt and no dial", before, after)
	}
	if lines := readLog(t, log, 1); len(lines) != 1 {
		t.Fatalf("Apache's log: want the login alone:\n%+v", lines)
	}
}
