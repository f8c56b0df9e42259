package engine

import (
	"net/http"
	"strings"
	"testing"
)

func refusal(status int, challenges ...string) *TunnelResponse {
	h := http.Header{}
	for _, c := range challenges {
		h.Add("Proxy-Authenticate", c)
	}
	return &TunnelResponse{Status: status, Header: h}
}

// TestTunnelAnswerRounds: the CONNECT's answers follow the request path's
// policy: Digest with the authority as uri, stale nonces answered at most
// twice without counting, a second plain Digest challenge refused (and
// forgotten), Basic once, nothing without credentials or for a non-407.
func TestTunnelAnswerRounds(t *testing.T) {
	e := &Engine{}
	a := &tunnelAuth{e: e, target: "origin.test:443", own: &Credentials{User: "u", Password: "p"}, maxRounds: 2}
	v, ok := a.answer(refusal(407, `Digest realm="r", nonce="n1", qop="auth"`))
	if !ok || !strings.HasPrefix(v, "Digest ") || !strings.Contains(v, `uri="origin.test:443"`) || !strings.Contains(v, "nc=00000001") {
		t.Fatalf("first Digest: %v %q", ok, v)
	}
	for i := 0; i < 2; i++ {
		if _, ok := a.answer(refusal(407, `Digest realm="r", nonce="s`+string(rune('a'+i))+`", qop="auth", stale=true`)); !ok {
			t.Fatalf("stale %d not answered", i)
		}
	}
	if _, ok := a.answer(refusal(407, `Digest realm="r", nonce="s3", qop="auth", stale=true`)); ok {
		t.Fatal("a third stale nonce answered")
	}
	if _, ok := a.answer(refusal(407, `Digest realm="r", nonce="n2", qop="auth"`)); ok {
		t.Fatal("a second Digest challenge (refused credentials) answered")
	}
	if _, ok := e.digests.authorizeKey(a.dkey, "CONNECT", a.target); ok {
		t.Fatal("refused Digest credentials still remembered")
	}

	b := &tunnelAuth{e: e, target: "t:443", own: &Credentials{User: "u", Password: "p"}, maxRounds: 2}
	if v, ok := b.answer(refusal(407, `Basic realm="r"`)); !ok || v != "Basic dTpw" {
		t.Fatalf("Basic: %v %q", ok, v)
	}
	if _, ok := b.answer(refusal(407, `Basic realm="r"`)); ok {
		t.Fatal("Basic answered twice")
	}
	if _, ok := (&tunnelAuth{e: e, target: "t:443", maxRounds: 2}).answer(refusal(407, `Basic realm="r"`)); ok {
		t.Fatal("answered without credentials")
	}
	c := &tunnelAuth{e: e, target: "t:443", own: &Credentials{User: "u", Password: "p"}, maxRounds: 2}
	if _, ok := c.answer(refusal(403, `Basic realm="r"`)); ok {
		t.Fatal("a 403 answered")
	}
	if _, ok := c.answer(refusal(407, `NTLM`, `Negotiate`)); ok {
		t.Fatal("NTLM answered")
	}
}

// TestTunnelConnectionBased: which refusals keep a parent connection for
// a handshake.
func TestTunnelConnectionBased(t *testing.T) {
	pass := &tunnelAuth{pass: true}
	for _, tc := range []struct {
		a    *tunnelAuth
		resp *TunnelResponse
		want bool
	}{
		{pass, refusal(407, "NTLM"), true},
		{pass, refusal(407, `Basic realm="r"`, "Negotiate"), true},
		{pass, refusal(407, "NTLM TlRMTVNTUAACAAAA"), true},
		{pass, refusal(407, `Basic realm="r"`), false},
		{pass, refusal(403, "NTLM"), false},
		{&tunnelAuth{pass: true, passConn: true}, refusal(407, `Basic realm="r"`), true},
		{&tunnelAuth{}, refusal(407, "NTLM"), false}, // the client's credentials cannot reach the parent
	} {
		if got := tc.a.connectionBased(tc.resp); got != tc.want {
			t.Errorf("%+v, %v: %v, want %v", *tc.a, tc.resp.Header, got, tc.want)
		}
	}
}
