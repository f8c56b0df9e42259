package engine

import (
	"fmt"
	"testing"

	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/shard"
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
// with "Proxy-Support: Session-Based-Authentication". Credentials the
// engine does not forward (replaced by its own, or a Proxy-Authorization
// it removes) pin nothing.
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
		want     pinCause
		notSent  bool // the engine replaces or removes the connAuth field
	}{
		{"origin NTLM challenge", false, parser.HdrOther, ntlm401, pinOrigin, false},
		{"origin Negotiate challenge", false, parser.HdrOther, nego401, pinOrigin, false},
		{"origin Basic challenge", false, parser.HdrOther, basic401, pinNone, false},
		{"origin NTLM via parent without Proxy-Support", true, parser.HdrOther, ntlm401, pinNone, false},
		{"origin NTLM via parent with Proxy-Support", true, parser.HdrOther, ntlm401S, pinOrigin, false},
		{"parent NTLM challenge", true, parser.HdrOther, ntlm407, pinParent, false},
		{"407 from an origin", false, parser.HdrOther, ntlm407, pinNone, false},
		{"NTLM Authorization to an origin", false, parser.HdrAuthorization, ok200, pinOrigin, false},
		{"NTLM Authorization via parent", true, parser.HdrAuthorization, ok200, pinIsolate, false},
		{"NTLM Authorization via parent, challenged", true, parser.HdrAuthorization, ntlm401, pinIsolate, false},
		{"NTLM Authorization via session-based parent", true, parser.HdrAuthorization, ok200S, pinOrigin, false},
		{"NTLM Proxy-Authorization to a parent", true, parser.HdrProxyAuthorization, ok200, pinParent, false},
		{"plain", false, parser.HdrOther, ok200, pinNone, false},
		{"NTLM Authorization replaced by the engine's", false, parser.HdrAuthorization, ok200, pinNone, true},
		{"NTLM Authorization replaced by the engine's, challenged", false, parser.HdrAuthorization, ntlm401, pinOrigin, true},
		{"NTLM Authorization replaced, via session-based parent", true, parser.HdrAuthorization, ok200S, pinNone, true},
		{"NTLM Proxy-Authorization removed", true, parser.HdrProxyAuthorization, ok200, pinNone, true},
		{"NTLM Proxy-Authorization removed, parent challenges", true, parser.HdrProxyAuthorization, ntlm407, pinParent, true},
	} {
		a := &authState{parent: tc.parent}
		switch tc.connAuth {
		case parser.HdrAuthorization:
			a.connAuth[0] = true
			if tc.notSent {
				a.creds[0] = "Basic dTpw"
			}
		case parser.HdrProxyAuthorization:
			a.connAuth[1], a.passPA = true, !tc.notSent
		}
		if got := a.observe(parseResp(t, tc.resp)); got != tc.want {
			t.Errorf("%s: pin %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAnswerRounds checks the answer policy at the head of a challenge:
// a stale Digest challenge after our own Digest answer is answered
// without counting a round, a refused one is not answered again, and
// Basic is not sent twice.
func TestAnswerRounds(t *testing.T) {
	const (
		digest = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n2\", qop=\"auth\"%s\r\nContent-Length: 0\r\n\r\n"
		basic  = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n"
	)
	req := &Request{Head: new(parser.Request)}
	if _, err := req.Head.Parse([]byte("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	pol := &Auth{Origin: Login{Mode: LoginOwn, Credentials: Credentials{User: "u", Password: "p"}}, MaxRounds: 1}
	task := &shard.Task{}
	task.Exchange.Head = req.Head
	for _, tc := range []struct {
		name                       string
		resp                       string
		rounds                     int
		digest, preDigest, basicOn bool
		want                       bool
	}{
		{"first Digest challenge", fmt.Sprintf(digest, ""), 0, false, false, false, true},
		{"rounds used up", fmt.Sprintf(digest, ""), 1, false, false, false, false},
		{"stale after our answer, rounds used up", fmt.Sprintf(digest, ", stale=true"), 1, true, false, false, true},
		{"stale after the remembered answer", fmt.Sprintf(digest, ", stale=true"), 1, false, true, false, true},
		{"refused after our answer", fmt.Sprintf(digest, ", stale=false"), 0, true, false, false, false},
		{"refused remembered answer", fmt.Sprintf(digest, ""), 0, false, true, false, true},
		{"Basic", basic, 0, false, false, false, true},
		{"Basic refused", basic, 0, false, false, true, false},
	} {
		a := &authState{e: &Engine{}, pol: pol, method: "GET", target: "/x", rounds: tc.rounds}
		a.digest[0], a.preDigest[0], a.sentBasic[0] = tc.digest, tc.preDigest, tc.basicOn
		_, v, ok := a.answer(parseResp(t, tc.resp), task)
		if ok != tc.want {
			t.Errorf("%s: answered %v (%q), want %v", tc.name, ok, v, tc.want)
		}
	}
}

// recordSink records what reaches the caller's sink.
type recordSink struct {
	statuses []int
	body     []byte
}

func (s *recordSink) OnHead(r *parser.Response) error {
	s.statuses = append(s.statuses, r.Status())
	return nil
}
func (s *recordSink) OnBody(p []byte) error { s.body = append(s.body, p...); return nil }

// TestCapSinkHoldsBackAndDelivers: an answered challenge is held back
// from the caller's sink; one whose body outgrows maxCapture, or that the
// engine cannot resend after all, is delivered whole, head first.
func TestCapSinkHoldsBackAndDelivers(t *testing.T) {
	req := new(parser.Request)
	if _, err := req.Parse([]byte("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	task := &shard.Task{}
	task.Exchange.Head = req
	pol := &Auth{Origin: Login{Mode: LoginOwn, Credentials: Credentials{User: "u", Password: "p"}}}
	const challenge = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 100000\r\n\r\n"
	for _, size := range []int{1000, maxCapture + 1} {
		next := &recordSink{}
		a := &authState{e: &Engine{}, pol: pol, method: "GET", target: "/x"}
		s := &capSink{a: a, t: task, next: next}
		if err := s.OnHead(parseResp(t, challenge)); err != nil {
			t.Fatal(err)
		}
		if !s.capturing || len(next.statuses) != 0 {
			t.Fatalf("size %d: capturing %v, caller saw %v; want the challenge held back", size, s.capturing, next.statuses)
		}
		body := make([]byte, size)
		for i := 0; i < size; i += 1000 {
			if err := s.OnBody(body[i:min(i+1000, size)]); err != nil {
				t.Fatal(err)
			}
		}
		if size > maxCapture {
			if s.capturing || len(next.statuses) != 1 || next.statuses[0] != 401 || len(next.body) != size {
				t.Fatalf("size %d: capturing %v, caller saw %v and %d bytes; want the whole challenge", size, s.capturing, next.statuses, len(next.body))
			}
			continue
		}
		if len(next.statuses) != 0 {
			t.Fatalf("size %d: caller saw %v", size, next.statuses)
		}
		if err := s.deliver(); err != nil {
			t.Fatal(err)
		}
		if len(next.statuses) != 1 || next.statuses[0] != 401 || len(next.body) != size {
			t.Fatalf("size %d: delivered %v and %d bytes; want the 401 and its body", size, next.statuses, len(next.body))
		}
	}
}
