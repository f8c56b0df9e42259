package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// The tests here run Negotiate (SPNEGO with Kerberos) handshakes through
// the demo against real servers: a throwaway MIT realm (bench.Kerberos),
// Apache with mod_auth_gssapi as an origin and Squid with
// negotiate_kerberos_auth as a parent. curl gets its tickets from the
// realm (kinit), for HTTP/127.0.0.1: the demo, Apache and Squid all listen
// on 127.0.0.1.

const krbUser, krbPass = "alice", "wonderland"

// gssLog is an Apache log of its own, one line per request: the status,
// the method, the URL, the user, the client's source port (which tells
// the demo's upstream connections apart) and the Authorization scheme
// the request carried ("-" for none).
type gssLog string

type gssLine struct {
	status    int
	method    string
	url, user string
	port      int
	auth      string
}

// startGSSAPIApache starts a realm with krbUser logged in (curl's ticket
// cache) and an Apache that demands Negotiate, binding a login to its
// connection, with the extra directives.
func startGSSAPIApache(t *testing.T, extra ...string) (*bench.Kerberos, *bench.Apache, gssLog) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	krb := bench.StartKerberos(t, bench.KerberosOptions{Users: map[string]string{krbUser: krbPass}})
	krb.Kinit(t, krbUser, krbPass)
	// Apache's children run as www-data: let them into the directory.
	dir := t.TempDir()
	for d, mode := range map[string]os.FileMode{dir: 0o777, filepath.Dir(dir): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "gss.log")
	ap := bench.StartApache(t, bench.ApacheOptions{Auth: "gssapi", Keytab: krb.Keytab(), Extra: append([]string{
		`LogFormat "%>s %m %U%q %u %{remote}p %{Authorization}i" gss`,
		"CustomLog " + log + " gss",
	}, extra...)})
	return krb, ap, gssLog(log)
}

// lines waits (bounded) for at least n lines: Apache logs a request
// after answering it.
func (l gssLog) lines(t *testing.T, n int) []gssLine {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []gssLine
		data, _ := os.ReadFile(string(l))
		for _, s := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(s)
			if len(f) < 6 {
				continue
			}
			status, _ := strconv.Atoi(f[0])
			port, _ := strconv.Atoi(f[4])
			out = append(out, gssLine{status: status, method: f[1], url: f[2], user: f[3], port: port, auth: f[5]})
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get sends a GET for target with the extra header fields on rc and
// reads the response.
func (rc *rawClient) get(t *testing.T, target string, fields ...string) (*http.Response, string) {
	t.Helper()
	rc.write(t, "GET "+target+" HTTP/1.1\r\nHost: demo\r\n"+strings.Join(append(fields, ""), "\r\n")+"\r\n")
	return rc.read(t)
}

// byClient groups log lines by the c= query parameter of their URL (the
// client connection that sent them).
func byClient(lines []gssLine) map[string][]gssLine {
	m := map[string][]gssLine{}
	for _, l := range lines {
		_, q, _ := strings.Cut(l.url, "c=")
		c, _, _ := strings.Cut(q, "&")
		m[c] = append(m[c], l)
	}
	return m
}

// TestNegotiateOrigin: Negotiate (Kerberos) logins to Apache
// (mod_auth_gssapi, a login bound to its connection) through the demo,
// in reverse and in forward mode. curl --anyauth gets Apache's 401
// challenge, answers it with its ticket and gets the pages, its requests
// on one upstream connection. A client driven one message at a time
// shows the pinning itself: after its login, a request without
// credentials is served as that user on the pinned connection, while
// another client connection, meanwhile, gets a connection of its own
// and Apache's 401.
func TestNegotiateOrigin(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	krb, ap, log := startGSSAPIApache(t)
	token := krb.NegotiateToken(t)
	for _, mode := range []string{"reverse", "forward"} {
		t.Run(mode, func(t *testing.T) {
			_ = os.Truncate(string(log), 0)
			cfg := engine.Config{}
			target := func(c string, n int) string { return fmt.Sprintf("/small?c=%s&n=%d", c, n) }
			var curlArgs []string
			if mode == "reverse" {
				if err := withPeers(&cfg, []string{"http://" + ap.Addr()}, nil, ""); err != nil {
					t.Fatal(err)
				}
			} else {
				target = func(c string, n int) string { return ap.URL(fmt.Sprintf("/small?c=%s&n=%d", c, n)) }
			}
			p, px := startAuthProxy(t, cfg)
			if mode == "reverse" {
				curlArgs = []string{"http://" + px + target("curl", 1), "http://" + px + target("curl", 2)}
			} else {
				curlArgs = []string{"-x", "http://" + px, target("curl", 1), target("curl", 2)}
			}

			codes, out, errb := curlCodes(t, append([]string{"-v", "--anyauth", "-u", ":"}, curlArgs...)...)
			if !sameInts(codes, 401, 200, 200) || strings.Count(out, bench.SmallBody) != 2 ||
				!strings.Contains(out, "WWW-Authenticate: Negotiate\r\n") {
				t.Fatalf("curl: statuses %v, want 401 (Negotiate challenge) 200 200:\n%.2000s", codes, out)
			}
			if !strings.Contains(errb, "Re-using existing connection") {
				t.Fatalf("curl did not answer the challenge on its connection:\n%s", errb)
			}
			lines := log.lines(t, 3)
			if len(lines) != 3 || lines[0].status != 401 || lines[0].auth != "-" ||
				lines[1].status != 200 || lines[1].user != bench.Principal(krbUser) || lines[1].auth != "Negotiate" ||
				lines[2].status != 200 || lines[2].user != bench.Principal(krbUser) ||
				lines[0].port != lines[1].port || lines[1].port != lines[2].port {
				t.Fatalf("Apache's log: want the 401 and the two logged-in requests on one connection:\n%+v", lines)
			}
			// curl closed its connection: the demo unpinned.
			waitPinned(t, p, 0)

			_ = os.Truncate(string(log), 0)
			a, b := dialRaw(t, px), dialRaw(t, px)
			resp, _ := a.get(t, target("a", 1))
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "Negotiate" || resp.Close {
				t.Fatalf("a, no credentials: %d %v (close %v), want Apache's 401 asking for Negotiate", resp.StatusCode, resp.Header, resp.Close)
			}
			resp, body := a.get(t, target("a", 2), "Authorization: "+token)
			if resp.StatusCode != 200 || body != bench.SmallBody || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Negotiate ") {
				t.Fatalf("a, the ticket: %d %v %q, want 200 with Apache's mutual authentication token", resp.StatusCode, resp.Header, body)
			}
			waitPinned(t, p, 1)
			if resp, _ := b.get(t, target("b", 1)); resp.StatusCode != 401 {
				t.Fatalf("b, no credentials, while a is logged in: %d, want 401 (a connection of b's own)", resp.StatusCode)
			}
			if resp, body := a.get(t, target("a", 3)); resp.StatusCode != 200 || body != bench.SmallBody {
				t.Fatalf("a, no credentials after the login: %d %q, want 200 on the connection it logged in on", resp.StatusCode, body)
			}
			if resp, _ := b.get(t, target("b", 2)); resp.StatusCode != 401 {
				t.Fatalf("b again: %d, want 401", resp.StatusCode)
			}
			m := byClient(log.lines(t, 5))
			la, lb := m["a"], m["b"]
			if len(la) != 3 || len(lb) != 2 || la[0].port != la[1].port || la[1].port != la[2].port ||
				la[2].status != 200 || la[2].auth != "-" || la[2].user != bench.Principal(krbUser) {
				t.Fatalf("Apache's log: want a's 3 requests on one connection, the last without credentials served as %s:\n%+v",
					krbUser, m)
			}
			for _, l := range lb {
				if l.port == la[1].port || l.status != 401 || l.user != "-" {
					t.Fatalf("Apache's log: b's request %+v on a's connection (port %d), or served", l, la[1].port)
				}
			}
			// b showed authentication (a 401): its second request's
			// connection, challenged, is pinned to b too.
			waitPinned(t, p, 2)
			a.c.Close()
			waitPinned(t, p, 1)
			b.c.Close()
			waitPinned(t, p, 0)
		})
	}
}

// TestNegotiateOriginPinnedGone: Apache closes the idle connection a
// client logged in on (its keep-alive timeout). The demo closes that
// client's connection; a client whose next request had started gets a
// 502 naming the cause. Nothing is sent again on another connection,
// where it would meet a new 401 the client never asked for.
func TestNegotiateOriginPinnedGone(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	krb, ap, log := startGSSAPIApache(t, "KeepAliveTimeout 1")
	token := krb.NegotiateToken(t)
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + ap.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	idle, busy := dialRaw(t, px), dialRaw(t, px)
	for _, c := range []*rawClient{idle, busy} {
		if resp, _ := c.get(t, "/small", "Authorization: "+token); resp.StatusCode != 200 {
			t.Fatalf("login: %d, want 200", resp.StatusCode)
		}
	}
	waitPinned(t, p, 2)
	waitBusy(t, p, 0, "the logins did not end")
	busy.write(t, "GET /small HTTP/1.1\r\n")
	waitBusy(t, p, 1, "the started request did not reach the proxy")
	waitPinned(t, p, 0)
	if !idle.eof(t) {
		t.Fatal("the idle client's connection is still open after its pinned connection closed")
	}
	busy.write(t, "Host: demo\r\n\r\n")
	resp, body := busy.read(t)
	if resp.StatusCode != 502 || !strings.Contains(body, "Negotiate") || !resp.Close {
		t.Fatalf("request after the pinned connection closed: %d (close %v) %q, want 502 naming the cause", resp.StatusCode, resp.Close, body)
	}
	if !busy.eof(t) {
		t.Fatal("the client connection is still open after the 502")
	}
	if n := len(log.lines(t, 2)); n != 2 {
		t.Fatalf("Apache logged %d requests, want the 2 logins and nothing after", n)
	}
}

// TestNegotiateParent: Negotiate (Kerberos) logins to a Squid parent
// (negotiate_kerberos_auth) through the demo, which has no credentials
// for it and passes the client's Proxy-Authorization through
// (-client-auth pass). curl --proxy-anyauth gets Squid's 407 challenge,
// answers it with its ticket and gets nginx's pages, its login and the
// request after it on one parent connection; a client logged in that way is served without credentials
// on its pinned connection, while another one gets the 407 on a
// connection of its own. HTTPS goes through the same login, on CONNECT.
func TestNegotiateParent(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	krb := bench.StartKerberos(t, bench.KerberosOptions{Users: map[string]string{krbUser: krbPass}})
	krb.Kinit(t, krbUser, krbPass)
	token := krb.NegotiateToken(t)
	ng, pki := tlsOrigin(t, false)
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "negotiate", Extra: extra})
	p, px := startTunnelAuthProxy(t, engine.Config{}, "http://"+sq.Addr(), true)

	codes, out, _ := curlCodes(t, "--proxy-anyauth", "-U", ":", "-x", "http://"+px, ng.URL("/small?c=curl&n=1"), ng.URL("/small?c=curl&n=2"))
	if !sameInts(codes, 407, 200, 200) || strings.Count(out, bench.SmallBody) != 2 ||
		!strings.Contains(out, "Proxy-Authenticate: Negotiate\r\n") {
		t.Fatalf("curl: statuses %v, want 407 (Negotiate challenge) 200 200:\n%.2000s", codes, out)
	}
	// curl's first request carried no credentials, so no pin key: the
	// engine closes the connection its 407 came on rather than pool a
	// connection that saw a handshake. The login starts the session, on
	// a connection of its own.
	// Squid logs each request as it ends: lines of different
	// connections may come in any order.
	lines := plog.lines(t, 3)
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].status > lines[j].status })
	if len(lines) != 3 || lines[0].status != 407 || lines[1].status != 200 || lines[2].status != 200 ||
		lines[1].user != bench.Principal(krbUser) || lines[0].port == lines[1].port || lines[1].port != lines[2].port {
		t.Fatalf("Squid's log: want the 407, then %s's two requests on one other connection:\n%+v", krbUser, lines)
	}
	waitPinned(t, p, 0)

	a, b := dialRaw(t, px), dialRaw(t, px)
	if resp, body := a.get(t, ng.URL("/small?c=a&n=1"), "Proxy-Authorization: "+token); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("a, the ticket: %d %q, want 200", resp.StatusCode, body)
	}
	waitPinned(t, p, 1)
	if resp, _ := b.get(t, ng.URL("/small?c=b&n=1")); resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != "Negotiate" {
		t.Fatalf("b, no credentials, while a is logged in: %d %v, want Squid's 407", resp.StatusCode, resp.Header)
	}
	if resp, body := a.get(t, ng.URL("/small?c=a&n=2")); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("a, no credentials after the login: %d %q, want 200 on the connection it logged in on", resp.StatusCode, body)
	}
	m := map[string][]portLine{}
	for _, l := range plog.lines(t, 6) {
		_, q, _ := strings.Cut(l.url, "c=")
		c, _, _ := strings.Cut(q, "&")
		m[c] = append(m[c], l)
	}
	if la, lb := m["a"], m["b"]; len(la) != 2 || len(lb) != 1 || la[0].port != la[1].port || la[1].user != bench.Principal(krbUser) ||
		lb[0].port == la[0].port || lb[0].status != 407 {
		t.Fatalf("Squid's log: want a's requests on one connection as %s, b's 407 on another:\n%+v", krbUser, m)
	}
	a.c.Close()
	b.c.Close()
	waitPinned(t, p, 0)

	// HTTPS: curl's CONNECT gets the 407, answers it, and the tunnel
	// carries its TLS to nginx.
	out, errb := curl(t, "-v", "--proxy-anyauth", "-U", ":", "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
	if out != bench.SmallBody || !strings.Contains(errb, "< HTTP/1.1 407") {
		t.Fatalf("through a CONNECT tunnel: %q, want the page after Squid's 407:\n%s", out, errb)
	}
	var connects []portLine
	for deadline := time.Now().Add(10 * time.Second); len(connects) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		connects = connects[:0]
		for _, l := range plog.lines(t, 0) {
			if strings.Contains(l.url, ng.TLSAddr()) {
				connects = append(connects, l)
			}
		}
	}
	// As above, the 407 to a CONNECT without credentials leaves no
	// connection to keep.
	sort.SliceStable(connects, func(i, j int) bool { return connects[i].status > connects[j].status })
	if len(connects) != 2 || connects[0].status != 407 || connects[1].status != 200 || connects[0].port == connects[1].port ||
		connects[1].user != bench.Principal(krbUser) {
		t.Fatalf("Squid's log: want the CONNECT's 407, then %s's tunnel on another connection:\n%+v", krbUser, connects)
	}
}
