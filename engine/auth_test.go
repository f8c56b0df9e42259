package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/engine/auth"
	"github.com/serverside-go/serverside/parser"
)

// credStats adds up the stats of addr's connections that carry
// credentials: Stats keys each credential scope apart ("addr cred=…").
func credStats(e *engine.Engine, addr string) engine.UpstreamStats {
	var sum engine.UpstreamStats
	for k, st := range e.Stats() {
		if strings.HasPrefix(k, addr+" cred=") {
			sum.Requests += st.Requests
			sum.AuthRounds += st.AuthRounds
			sum.Attempts += st.Attempts
		}
	}
	return sum
}

// statuses renders the statuses of log lines, as fmt prints an []int.
func statuses(lines []logLine) string {
	st := make([]int, len(lines))
	for i, l := range lines {
		st[i] = l.Status
	}
	return fmt.Sprint(st)
}

// recSink records what the caller sees of a response.
type recSink struct {
	heads  []int
	header map[string]string
	body   bytes.Buffer
	err    error
}

func (s *recSink) OnHead(r *parser.Response) error {
	s.heads = append(s.heads, r.Status())
	s.header = map[string]string{}
	for i := 0; i < r.Len(); i++ {
		s.header[strings.ToLower(string(r.Name(i)))] = string(r.Value(i))
	}
	return nil
}
func (s *recSink) OnBody(p []byte) error { s.body.Write(p); return nil }
func (s *recSink) OnDone(err error)      { s.err = err }

// send runs req through Exchange and returns what the sink saw.
func send(t *testing.T, e *engine.Engine, req *engine.Request) *recSink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	s := &recSink{}
	if err := e.Exchange(ctx, req, s); err != nil && s.err == nil {
		s.err = err
	}
	return s
}

// request builds a request for upstream: the head in origin form for
// host, and, when absolute, an Edits target override in absolute form (a
// request for a parent proxy).
func request(t *testing.T, upstream, method, host, path string, absolute bool, fields ...string) *engine.Request {
	t.Helper()
	raw := method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\n"
	for _, f := range fields {
		raw += f + "\r\n"
	}
	h := new(parser.Request)
	if _, err := h.Parse([]byte(raw + "\r\n")); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	req := &engine.Request{Upstream: engine.Upstream{Addr: upstream}, Head: h}
	if absolute {
		req.Edits = &parser.Edits{Target: []byte("http://" + host + path)}
	}
	return req
}

func own(user, pass string) engine.Login {
	return engine.Login{Mode: engine.LoginOwn, Credentials: engine.Credentials{User: user, Password: pass}}
}

// TestApacheChallenges runs Basic and Digest against a real Apache
// origin: the engine's credentials answer the 401 on the same connection
// and the caller sees only the final 200; wrong credentials give the
// caller Apache's second 401 unchanged; without credentials the first 401
// goes back.
func TestApacheChallenges(t *testing.T) {
	leakBaseline(t)
	for _, tc := range []struct {
		loc, scheme, realm string
	}{
		{"basic", "Basic", apacheBasicRealm},
		{"digest", "Digest", apacheDigestRealm},
	} {
		t.Run(tc.loc, func(t *testing.T) {
			ap := startApache(t, tc.loc)
			right := &engine.Auth{Origin: own(apacheUser, apachePass)}
			e := startEngine(t, engine.Config{Auth: func(u engine.Upstream) *engine.Auth {
				if u.Addr == ap.addr {
					return right
				}
				return nil
			}})
			const path = "/small"
			logged := len(readLog(t, ap.log, 0))

			s := send(t, e, request(t, ap.addr, "GET", "a.test", path, false))
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
				t.Fatalf("right credentials: heads %v, body %q, err %v; want only the 200", s.heads, s.body.String(), s.err)
			}
			lines := readLog(t, ap.log, logged+2)[logged:]
			if len(lines) != 2 || lines[0].Status != 401 || lines[1].Status != 200 || lines[1].User != apacheUser {
				t.Fatalf("apache log %+v: want a 401 then a 200 for %s", lines, apacheUser)
			}
			if lines[0].Port != lines[1].Port {
				t.Errorf("challenge answered on another connection: ports %d, %d", lines[0].Port, lines[1].Port)
			}
			if st := credStats(e, ap.addr); st.AuthRounds != 1 {
				t.Errorf("AuthRounds = %d, want 1 (stats %v)", st.AuthRounds, e.Stats())
			}
			// The space is remembered: Basic is sent, and Digest
			// answered, up front.
			s = send(t, e, request(t, ap.addr, "GET", "a.test", path, false))
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
				t.Fatalf("second request: heads %v, err %v", s.heads, s.err)
			}
			const n = 1
			lines = readLog(t, ap.log, logged+2+n)[logged+2:]
			if len(lines) != n || lines[n-1].Status != 200 {
				t.Fatalf("apache log %+v: want %d lines ending with a 200", lines, n)
			}
			logged += n

			// Wrong credentials: answered once, then Apache's 401 reaches
			// the caller as Apache sent it.
			req := request(t, ap.addr, "GET", "a.test", path, false)
			req.Auth = &engine.Auth{Origin: own(apacheUser, "wrong")}
			s = send(t, e, req)
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 || !strings.Contains(s.body.String(), "401 Unauthorized") {
				t.Fatalf("wrong credentials: heads %v, body %q, err %v; want Apache's 401", s.heads, s.body.String(), s.err)
			}
			if ch := s.header["www-authenticate"]; !strings.HasPrefix(ch, tc.scheme+` realm="`+tc.realm+`"`) {
				t.Errorf("challenge %q, want Apache's %s challenge", ch, tc.scheme)
			}
			lines = readLog(t, ap.log, logged+4)[logged+2:]
			if len(lines) != 2 || lines[0].Status != 401 || lines[1].Status != 401 {
				t.Fatalf("apache log %+v: want two 401s", lines)
			}
			// Another identity, another connection: the pool key's
			// credential scope keeps them apart.
			first := readLog(t, ap.log, logged+2)[logged]
			if lines[0].Port == first.Port {
				t.Errorf("wrong credentials sent on the connection of the right ones (port %d)", first.Port)
			}

			// No credentials for this upstream: the challenge is bounced.
			req = request(t, ap.addr, "GET", "a.test", path, false)
			req.Auth = &engine.Auth{}
			s = send(t, e, req)
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
				t.Fatalf("no credentials: heads %v, err %v; want the 401", s.heads, s.err)
			}
			if lines = readLog(t, ap.log, logged+5)[logged+4:]; len(lines) != 1 || lines[0].Status != 401 {
				t.Fatalf("apache log %+v: want one 401", lines)
			}
		})
	}
}

// TestApacheRemembersSpace: a request whose body cannot be sent again
// (no GetBody, no Expect) cannot have its 401 answered, and the caller
// gets it; but the engine learns the protection space from it, so the
// next such request carries the credentials up front (Basic, RFC 7617
// §2.2; Digest with the remembered nonce, RFC 7616 §3.4) and is served,
// where before every one of them got the 401. Wrong credentials sent up
// front are forgotten once refused.
func TestApacheRemembersSpace(t *testing.T) {
	leakBaseline(t)
	for _, loc := range []string{"basic", "digest"} {
		t.Run(loc, func(t *testing.T) {
			ap := startApache(t, loc)
			login := &engine.Auth{Origin: own(apacheUser, apachePass)}
			e := startEngine(t, engine.Config{Auth: func(engine.Upstream) *engine.Auth { return login }})
			post := func(pol *engine.Auth) *recSink {
				req := request(t, ap.addr, "POST", "a.test", "/small", false, "Content-Length: 5")
				req.Body, req.ContentLength = strings.NewReader("hello"), 5
				req.Auth = pol
				return send(t, e, req)
			}
			s := post(nil)
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
				t.Fatalf("first POST: heads %v, err %v; want the 401", s.heads, s.err)
			}
			for i := range 2 {
				if s = post(nil); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
					t.Fatalf("POST %d after the 401: heads %v, err %v; want the 200", i+2, s.heads, s.err)
				}
			}
			lines := readLog(t, ap.log, 3)
			if statuses(lines) != "[401 200 200]" || lines[1].User != apacheUser || lines[2].User != apacheUser {
				t.Fatalf("apache log %+v: want the 401, then two 200s for %s with no challenge", lines, apacheUser)
			}

			// Wrong credentials learn the space too, and are refused:
			// their next request goes without them again.
			bad := &engine.Auth{Origin: own(apacheUser, "wrong")}
			for i, want := range []int{401, 401, 401} {
				if s = post(bad); s.err != nil || len(s.heads) != 1 || s.heads[0] != want {
					t.Fatalf("wrong credentials, POST %d: heads %v, err %v; want %d", i+1, s.heads, s.err, want)
				}
			}
			lines = readLog(t, ap.log, 6)[3:]
			users := []string{lines[0].User, lines[1].User, lines[2].User}
			if statuses(lines) != "[401 401 401]" || users[0] != "-" || users[1] != apacheUser || users[2] != "-" {
				t.Fatalf("apache log %+v: want no credentials, the refused ones, no credentials", lines)
			}
		})
	}
}

// TestApacheNoProxyAuthorizationToOrigin checks that neither the client's
// Proxy-Authorization nor the engine's proxy credentials reach an origin
// (a request in origin form), while its origin credentials do.
func TestApacheNoProxyAuthorizationToOrigin(t *testing.T) {
	ap := startApache(t, "basic")
	pol := &engine.Auth{Origin: own(apacheUser, apachePass), Proxy: own("proxyuser", "proxypass")}
	pol.Origin.Preemptive, pol.Proxy.Preemptive = true, true
	e := startEngine(t, engine.Config{Auth: func(engine.Upstream) *engine.Auth { return pol }})
	for _, mode := range []engine.LoginMode{engine.LoginOwn, engine.LoginPassThrough, engine.LoginNone} {
		pol.Proxy.Mode = mode
		req := request(t, ap.addr, "GET", "a.test", "/small", false, "Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==")
		s := send(t, e, req)
		if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("mode %d: heads %v, err %v; want a preemptive Basic 200", mode, s.heads, s.err)
		}
	}
	for _, l := range readLog(t, ap.log, 3) {
		if l.Extra != "-" || l.User != apacheUser {
			t.Errorf("origin got Proxy-Authorization %q (user %q)", l.Extra, l.User)
		}
	}
	if st := credStats(e, ap.addr); st.AuthRounds != 0 || st.Requests != 3 {
		t.Errorf("stats %+v: want 3 requests, no challenge answered", st)
	}
}

// squidAndNginx starts a Squid parent demanding scheme in front of a real
// nginx origin.
func squidAndNginx(t *testing.T, opts squidOptions) (*squid, *bench.Nginx) {
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	return startSquid(t, opts), ngx
}

// TestSquidChallenges runs Basic and Digest against a real Squid parent
// (407) forwarding to nginx, with absolute-form targets.
func TestSquidChallenges(t *testing.T) {
	for _, tc := range []struct{ scheme, realm string }{
		{"basic", squidBasicRealm},
		{"digest", squidDigestRealm},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			sq, ngx := squidAndNginx(t, squidOptions{scheme: tc.scheme})
			right := &engine.Auth{Proxy: own(squidUser, squidPass)}
			e := startEngine(t, engine.Config{Auth: func(u engine.Upstream) *engine.Auth {
				if u.Addr == sq.addr {
					return right
				}
				return nil
			}})
			get := func(fields ...string) *engine.Request {
				return request(t, sq.addr, "GET", ngx.Addr(), "/small", true, fields...)
			}
			s := send(t, e, get())
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
				t.Fatalf("right credentials: heads %v, body %q, err %v", s.heads, s.body.String(), s.err)
			}
			lines := readLog(t, sq.log, 2)
			if len(lines) != 2 || lines[0].Status != 407 || lines[1].Status != 200 || lines[1].User != squidUser ||
				lines[1].Target != ngx.URL("/small") {
				t.Fatalf("squid log %+v: want a 407 then a 200 for %s", lines, squidUser)
			}
			if lines[0].Port != lines[1].Port {
				t.Errorf("challenge answered on another connection: ports %d, %d", lines[0].Port, lines[1].Port)
			}

			// The next requests: Basic is sent up front (the space asked
			// for it); the Digest challenge is remembered and answered up
			// front with the next nonce count, which squid checks
			// (check_nonce_count).
			for i := 2; i <= 3; i++ {
				if s = send(t, e, get()); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
					t.Fatalf("request %d: heads %v, err %v", i, s.heads, s.err)
				}
			}
			want := []int{407, 200, 200, 200}
			lines = readLog(t, sq.log, len(want))
			if got := statuses(lines); got != fmt.Sprint(want) {
				t.Fatalf("squid log statuses %s, want %v", got, want)
			}
			rounds := uint64(len(want) - 3)

			// A body is sent again when GetBody can replay it.
			body := "hello"
			post := request(t, sq.addr, "POST", ngx.Addr(), "/echo", true)
			post.Body, post.ContentLength = strings.NewReader(body), int64(len(body))
			post.GetBody = func() (io.Reader, error) { return strings.NewReader(body), nil }
			if s = send(t, e, post); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != "5\n" {
				t.Fatalf("POST with GetBody: heads %v, body %q, err %v; want nginx's echo of 5 bytes", s.heads, s.body.String(), s.err)
			}
			// Without GetBody the body cannot be sent twice: the challenge
			// goes back to the caller (an engine that has not met squid's
			// Digest challenge yet).
			fresh := startEngine(t, engine.Config{})
			post = request(t, sq.addr, "POST", ngx.Addr(), "/echo", true)
			post.Body, post.ContentLength = strings.NewReader(body), int64(len(body))
			post.Auth = right
			if s = send(t, fresh, post); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
				t.Fatalf("POST without GetBody: heads %v, err %v; want the 407", s.heads, s.err)
			}

			// Wrong credentials: squid's second 407 reaches the caller.
			req := get()
			req.Auth = &engine.Auth{Proxy: own(squidUser, "wrong")}
			s = send(t, e, req)
			if s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 ||
				!strings.Contains(strings.ToLower(s.header["proxy-authenticate"]), tc.scheme+` realm="`+tc.realm+`"`) {
				t.Fatalf("wrong credentials: heads %v, header %v, err %v; want squid's 407", s.heads, s.header, s.err)
			}
			// No credentials: the first 407 goes back.
			req = get()
			req.Auth = &engine.Auth{}
			if s = send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
				t.Fatalf("no credentials: heads %v, err %v; want the 407", s.heads, s.err)
			}
			// Five requests with credentials (two identities, added up);
			// the wrong credentials were answered once.
			if st := credStats(e, sq.addr); st.AuthRounds != rounds+1 || st.Requests != 5 {
				t.Errorf("own-credential stats %+v: want 5 requests, %d rounds", st, rounds+1)
			}
			if st := e.Stats()[sq.addr]; st.AuthRounds != 0 || st.Requests != 1 {
				t.Errorf("no-credential stats %+v: want 1 request, no round", st)
			}
		})
	}
}

// TestSquidDigestPassThrough: a client's own Digest login passed through
// to a Digest Squid (LoginPassThrough). Its Proxy-Authorization differs
// from request to request (nonce count, cnonce, response) while the
// identity stays: the requests share one pooled connection, as the
// client's Basic login would, instead of a new connection per request
// left idle under a scope of its own.
func TestSquidDigestPassThrough(t *testing.T) {
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "digest"})
	e := startEngine(t, engine.Config{Auth: passThrough})
	target := ngx.URL("/small")
	s := send(t, e, request(t, sq.addr, "GET", ngx.Addr(), "/small", true))
	if s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("no credentials: heads %v, err %v; want the 407", s.heads, s.err)
	}
	cs, err := auth.ParseChallenges(s.header["proxy-authenticate"])
	if err != nil {
		t.Fatal(err)
	}
	d, err := auth.NewDigest(auth.Pick(cs), auth.Credentials{User: squidUser, Password: squidPass})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	for i := range n {
		req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true, "Proxy-Authorization: "+d.Authorize("GET", target))
		if s = send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
			t.Fatalf("request %d: heads %v, body %q, err %v", i, s.heads, s.body.String(), s.err)
		}
	}
	lines := readLog(t, sq.log, n+1)
	if len(lines) != n+1 {
		t.Fatalf("squid log %+v: want %d lines", lines, n+1)
	}
	for _, l := range lines[1:] {
		if l.Status != 200 || l.User != squidUser || l.Port != lines[1].Port {
			t.Fatalf("squid log %+v: want %d 200s for %s on one connection", lines, n, squidUser)
		}
	}
}

// TestSquidPreemptiveBasic sends Basic before any challenge: squid never
// answers 407.
func TestSquidPreemptiveBasic(t *testing.T) {
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "basic"})
	pol := &engine.Auth{Proxy: own(squidUser, squidPass)}
	pol.Proxy.Preemptive = true
	e := startEngine(t, engine.Config{})
	for i := 0; i < 3; i++ {
		req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true)
		req.Auth = pol
		if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
			t.Fatalf("request %d: heads %v, err %v", i, s.heads, s.err)
		}
	}
	lines := readLog(t, sq.log, 3)
	for _, l := range lines {
		if l.Status != 200 || l.User != squidUser || l.Port != lines[0].Port {
			t.Errorf("squid log %+v: want 200s for %s on one connection", lines, squidUser)
		}
	}
}

// TestSquidExpectContinue answers a 407 to a request whose body waited
// for "100 Continue" and was never sent: no GetBody is needed. The next
// request sends Basic up front, on the connection the first left.
func TestSquidExpectContinue(t *testing.T) {
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "basic"})
	e := startEngine(t, engine.Config{})
	body := strings.Repeat("x", 1000)
	pol := &engine.Auth{Proxy: own(squidUser, squidPass)}
	for i := 1; i <= 2; i++ {
		req := request(t, sq.addr, "POST", ngx.Addr(), "/echo", true, "Expect: 100-continue")
		req.Body, req.ContentLength = strings.NewReader(body), int64(len(body))
		req.Auth = pol
		s := send(t, e, req)
		if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != "1000\n" {
			t.Fatalf("request %d: heads %v, body %q, err %v; want nginx's echo of 1000 bytes", i, s.heads, s.body.String(), s.err)
		}
		if st := credStats(e, sq.addr); st.AuthRounds != 1 || st.Requests != uint64(i) {
			t.Errorf("stats %+v: want %d requests, 1 round", st, i)
		}
	}
	// Squid answered the 407 before the body; the body was never sent on
	// that connection, so the request went again on another one, with the
	// body unread until then. The second request reused that one.
	lines := readLog(t, sq.log, 3)
	if len(lines) != 3 || lines[0].Status != 407 || lines[1].Status != 200 || lines[2].Status != 200 ||
		lines[1].User != squidUser || lines[2].User != squidUser || lines[0].Port == lines[1].Port || lines[1].Port != lines[2].Port {
		t.Fatalf("squid log %+v: want a 407, then two 200s on another connection", lines)
	}
}

// TestSquidThenApache answers two challenges for one request: Squid's 407
// (Basic, for the parent) and then, through it, Apache's 401 (Digest, for
// the origin, whose uri is the origin-form target the parent forwards).
func TestSquidThenApache(t *testing.T) {
	leakBaseline(t)
	ap := startApache(t, "digest")
	sq := startSquid(t, squidOptions{scheme: "basic"})
	e := startEngine(t, engine.Config{})
	req := request(t, sq.addr, "GET", ap.addr, "/small", true)
	req.Auth = &engine.Auth{Proxy: own(squidUser, squidPass), Origin: own(apacheUser, apachePass)}
	s := send(t, e, req)
	if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
		t.Fatalf("heads %v, body %q, err %v; want only the final 200", s.heads, s.body.String(), s.err)
	}
	sql := readLog(t, sq.log, 3)
	if len(sql) != 3 || sql[0].Status != 407 || sql[1].Status != 401 || sql[2].Status != 200 ||
		sql[0].Port != sql[1].Port || sql[1].Port != sql[2].Port {
		t.Errorf("squid log %+v: want 407, 401, 200 on one connection", sql)
	}
	apl := readLog(t, ap.log, 2)
	if len(apl) != 2 || apl[0].Status != 401 || apl[1].Status != 200 || apl[1].User != apacheUser || apl[1].Extra != "-" {
		t.Errorf("apache log %+v: want a 401, then a 200 for %s, no Proxy-Authorization", apl, apacheUser)
	}
	if st := credStats(e, sq.addr); st.AuthRounds != 2 || st.Requests != 1 {
		t.Errorf("stats %+v: want 1 request, 2 rounds", st)
	}

	// MaxRounds 1: the second challenge goes back to the caller (an
	// engine that has not met Apache's Digest challenge yet).
	fresh := startEngine(t, engine.Config{})
	req = request(t, sq.addr, "GET", ap.addr, "/small", true)
	req.Auth = &engine.Auth{Proxy: own(squidUser, squidPass), Origin: own(apacheUser, apachePass), MaxRounds: 1}
	if s = send(t, fresh, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 401 {
		t.Fatalf("MaxRounds 1: heads %v, err %v; want Apache's 401", s.heads, s.err)
	}
}

// TestApacheDigestStale: a remembered nonce that Apache has retired is
// refused with stale=true; the engine answers the new nonce (one field,
// not a second one beside the stale answer) without counting a failed
// round.
func TestApacheDigestStale(t *testing.T) {
	ap := startApache(t, "digest", "<Location />", "  AuthDigestNonceLifetime 1", "</Location>")
	e := startEngine(t, engine.Config{})
	pol := &engine.Auth{Origin: own(apacheUser, apachePass), MaxRounds: 1}
	get := func() *recSink {
		req := request(t, ap.addr, "GET", "a.test", "/small", false)
		req.Auth = pol
		return send(t, e, req)
	}
	if s := get(); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
		t.Fatalf("first request: heads %v, err %v", s.heads, s.err)
	}
	time.Sleep(2500 * time.Millisecond) // AuthDigestNonceLifetime 1
	// The second request answers the remembered nonce up front; Apache
	// refuses it as stale, and the engine answers the new nonce.
	if s := get(); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
		t.Fatalf("after the nonce expired: heads %v, body %q, err %v; want 200", s.heads, s.body.String(), s.err)
	}
	lines := readLog(t, ap.log, 4)
	if got := statuses(lines); got != "[401 200 401 200]" {
		t.Fatalf("apache log %+v: want 401 200 401 200", lines)
	}
	if lines[3].User != apacheUser {
		t.Errorf("final request authenticated as %q", lines[3].User)
	}
	if st := credStats(e, ap.addr); st.AuthRounds != 2 {
		t.Errorf("AuthRounds %d, want 2", st.AuthRounds)
	}

	// Again, for a POST whose body waits for "100 Continue", without
	// GetBody: it goes on the pooled connection, and the stale
	// 401 arrives before the body, so the request is sent again.
	time.Sleep(2500 * time.Millisecond)
	body := strings.Repeat("x", 1000)
	req := request(t, ap.addr, "POST", "a.test", "/small", false, "Expect: 100-continue", "Content-Length: 1000")
	req.Body, req.ContentLength = strings.NewReader(body), int64(len(body))
	req.Auth = pol
	if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
		t.Fatalf("POST after the nonce expired: heads %v, body %q, err %v; want 200", s.heads, s.body.String(), s.err)
	}
	lines = readLog(t, ap.log, 6)
	if got := statuses(lines); got != "[401 200 401 200 401 200]" {
		t.Fatalf("apache log %+v: want 401 200 401 200 401 200", lines)
	}
}

// TestGroupParentAuth: a request to a peer group gets the credentials
// Config.Auth gives for the chosen peer's address, and a parent peer with
// its own Username/Password keeps sending only those.
func TestGroupParentAuth(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "basic"})
	pol := &engine.Auth{Proxy: own(squidUser, squidPass)}
	e := startEngine(t, engine.Config{
		Groups: map[string]engine.GroupConfig{
			"parents": {Peers: []engine.Peer{{Name: "squid", Addr: sq.addr, Parent: true}}},
			"withcreds": {Peers: []engine.Peer{{Name: "squid", Addr: sq.addr, Parent: true,
				Username: squidUser, Password: squidPass}}},
		},
		Auth: func(u engine.Upstream) *engine.Auth {
			if u.Addr == sq.addr {
				return pol
			}
			return nil
		},
	})
	for i, group := range []string{"parents", "withcreds"} {
		// An origin-form head: the group's parent peer sends it in
		// absolute form.
		req := request(t, "", "GET", ngx.Addr(), "/small", false, "Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==")
		req.Group = group
		s := send(t, e, req)
		if s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 || s.body.String() != bench.SmallBody {
			t.Fatalf("group %s: heads %v, body %q, err %v", group, s.heads, s.body.String(), s.err)
		}
		want := [][]int{{407, 200}, {407, 200, 200}}[i]
		if got := statuses(readLog(t, sq.log, len(want))); got != fmt.Sprint(want) {
			t.Fatalf("group %s: squid log statuses %s, want %v", group, got, want)
		}
	}
}

// TestSquidDigestConcurrent: callers in parallel through a Digest parent.
// Each connection answers with a nonce of its own, so its nonce counts
// reach squid in order (squid checks them: check_nonce_count) and a
// connection is challenged about once, when it first goes out (and again
// only when squid retires a nonce after its nonce_max_count of 50 uses).
// With one nonce shared by every connection the counts of concurrent
// requests overtake one another and squid answers stale=true to many.
func TestSquidDigestConcurrent(t *testing.T) {
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "digest"})
	e := startEngine(t, engine.Config{})
	pol := &engine.Auth{Proxy: own(squidUser, squidPass)}
	const callers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				req := request(t, sq.addr, "GET", ngx.Addr(), "/small", true)
				req.Auth = pol
				if s := send(t, e, req); s.err != nil || len(s.heads) != 1 || s.heads[0] != 200 {
					errs <- fmt.Errorf("request %d: heads %v, err %v", j, s.heads, s.err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := credStats(e, sq.addr)
	dialed := uint64(0)
	for k, s := range e.Stats() {
		if strings.HasPrefix(k, sq.addr+" cred=") {
			dialed += s.Pool.Dialed
		}
	}
	// Per connection: its first challenge, at most one stale answer for a
	// shared nonce it started with, and squid's retirements of its nonce.
	limit := 2*dialed + callers*each/50 + callers
	t.Logf("%d requests on %d connections: %d challenges answered (limit %d)", st.Requests, dialed, st.AuthRounds, limit)
	if st.Requests != callers*each || st.AuthRounds > limit {
		t.Fatalf("stats %+v on %d connections: want %d requests and at most %d challenges answered", st, dialed, callers*each, limit)
	}
}

// TestSquidEarlyChallengeNotReused: Squid answers a 407 to a large upload
// before reading all of it, with keep-alive, and then reads no more of it
// nor any further request on that connection. The engine, which sees the
// answer come in while the body is still going out, stops sending it (RFC
// 9112 §9.5: it would block) and does not use the connection again: the
// next request gets its own 407 on a new connection, instead of waiting on
// the old one for the response-header timeout.
func TestSquidEarlyChallengeNotReused(t *testing.T) {
	leakBaseline(t)
	sq, ngx := squidAndNginx(t, squidOptions{scheme: "basic"})
	e := startEngine(t, engine.Config{ResponseHeaderTimeout: 5 * time.Second})
	const size = 32 << 20 // more than the socket buffers hold: Squid answers while it goes out
	post := request(t, sq.addr, "POST", ngx.Addr(), "/echo", true, fmt.Sprintf("Content-Length: %d", size))
	post.Body, post.ContentLength = bytes.NewReader(make([]byte, size)), size
	if s := send(t, e, post); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("large POST without credentials: heads %v, err %v; want Squid's 407", s.heads, s.err)
	}
	if s := send(t, e, request(t, sq.addr, "GET", ngx.Addr(), "/small", true)); s.err != nil || len(s.heads) != 1 || s.heads[0] != 407 {
		t.Fatalf("the next request: heads %v, err %v; want Squid's 407 at once", s.heads, s.err)
	}
	if st := e.Stats()[sq.addr]; st.Pool.Dialed != 2 {
		t.Fatalf("stats %+v: want a second connection for the second request", st)
	}
}
