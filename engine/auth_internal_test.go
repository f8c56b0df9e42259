package engine

import (
	"testing"

	"github.com/serverside-go/serverside/parser"
)

func TestOriginForm(t *testing.T) {
	for in, want := range map[string]string{
		"http://a.test/x/y?q=1": "/x/y?q=1",
		"http://a.test":         "/",
		"http://a.test?q":       "/?q",
		"/already":              "/already",
		"a.test:443":            "a.test:443",
	} {
		if got := originForm(in); got != want {
			t.Errorf("originForm(%q) = %q, want %q", in, got, want)
		}
	}
}

func parseResp(t *testing.T, raw string) *parser.Response {
	t.Helper()
	r := new(parser.Response)
	if _, err := r.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return r
}

// TestObservePinning checks which exchanges pin: connection-based
// challenges and credentials, and, through a parent, an origin's only
// with "Proxy-Support: Session-Based-Authentication".
func TestObservePinning(t *testing.T) {
	const (
		ntlm401  = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n"
		nego401  = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate, Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"
		ntlm401S = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nProxy-Support: Session-Based-Authentication\r\nContent-Length: 0\r\n\r\n"
		ntlm407  = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM TlRMTVNTUAACAAAA\r\nContent-Length: 0\r\n\r\n"
		basic401 = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"
		ok200    = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		ok200S   = "HTTP/1.1 200 OK\r\nProxy-Support: Session-Based-Authentication\r\nContent-Length: 0\r\n\r\n"
	)
	for _, tc := range []struct {
		name     string
		parent   bool
		connAuth parser.HeaderID
		resp     string
		want     bool
	}{
		{"origin NTLM challenge", false, parser.HdrOther, ntlm401, true},
		{"origin Negotiate challenge", false, parser.HdrOther, nego401, true},
		{"origin Basic challenge", false, parser.HdrOther, basic401, false},
		{"origin NTLM via parent without Proxy-Support", true, parser.HdrOther, ntlm401, false},
		{"origin NTLM via parent with Proxy-Support", true, parser.HdrOther, ntlm401S, true},
		{"parent NTLM challenge", true, parser.HdrOther, ntlm407, true},
		{"407 from an origin", false, parser.HdrOther, ntlm407, false},
		{"NTLM Authorization to an origin", false, parser.HdrAuthorization, ok200, true},
		{"NTLM Authorization via parent", true, parser.HdrAuthorization, ok200, false},
		{"NTLM Authorization via session-based parent", true, parser.HdrAuthorization, ok200S, true},
		{"NTLM Proxy-Authorization to a parent", true, parser.HdrProxyAuthorization, ok200, true},
		{"plain", false, parser.HdrOther, ok200, false},
	} {
		a := &authState{parent: tc.parent, connAuth: tc.connAuth}
		if got := a.observe(parseResp(t, tc.resp)); got != tc.want {
			t.Errorf("%s: pin %v, want %v", tc.name, got, tc.want)
		}
	}
}
