package main

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

var statusLine = regexp.MustCompile(`HTTP/1\.[01] (\d{3}) `)

// curlCodes runs curl -i and returns the status codes of the responses
// it printed, its output, and its stderr.
func curlCodes(t *testing.T, args ...string) ([]int, string, string) {
	t.Helper()
	out, errb := curl(t, append([]string{"-i"}, args...)...)
	var codes []int
	// A body without a final newline runs into the next status line.
	for _, m := range statusLine.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		codes = append(codes, n)
	}
	return codes, out, errb
}

func sameInts(a []int, b ...int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReverseOriginAuth: -origin http://alice:pw@apache answers Apache's
// Basic and Digest 401s; wrong or no credentials bounce the 401, with
// its challenge, to curl, on a connection that stays open for the next
// request.
func TestReverseOriginAuth(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	for _, scheme := range []string{"basic", "digest"} {
		t.Run(scheme, func(t *testing.T) {
			ap := bench.StartApache(t, bench.ApacheOptions{Auth: scheme, Users: map[string]string{"alice": "pw"}})
			right := startProxy(t, "http://alice:pw@"+ap.Addr())
			codes, out, _ := curlCodes(t, "http://"+right+"/small", "http://"+right+"/small")
			if !sameInts(codes, 200, 200) || strings.Count(out, bench.SmallBody) != 2 {
				t.Fatalf("right credentials: statuses %v:\n%.600s", codes, out)
			}
			wantChallenge := map[string]string{"basic": "WWW-Authenticate: Basic", "digest": "WWW-Authenticate: Digest"}[scheme]
			for _, origin := range []string{"http://alice:wrong@" + ap.Addr(), "http://" + ap.Addr()} {
				px := startProxy(t, origin)
				codes, out, errb := curlCodes(t, "-v", "http://"+px+"/small", "http://"+px+"/small")
				if !sameInts(codes, 401, 401) || strings.Count(out, wantChallenge) != 2 {
					t.Fatalf("%s: statuses %v, want 401 twice with %q:\n%.1500s", redactURL(origin), codes, wantChallenge, out)
				}
				// The 401 is framed: curl sent the second request on the
				// same connection.
				if !strings.Contains(errb, "Re-using existing connection") {
					t.Fatalf("%s: the second request did not reuse the connection:\n%s", redactURL(origin), errb)
				}
			}
		})
	}
}

// TestPeerURLCredentialsEscaped: the userinfo of a peer URL is
// percent-decoded before it becomes credentials: a ':', '@', '%', '/'
// or a space in the password and UTF-8 in the user name reach Apache
// (Basic and Digest) and a Squid parent (the peer's preemptive Basic,
// and the engine's login with preemptive=0) as the user typed them.
func TestPeerURLCredentialsEscaped(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	const user, pass = "jürgen", "p:w@d%/é ü"
	userinfo := url.UserPassword(user, pass).String()
	if userinfo != "j%C3%BCrgen:p%3Aw%40d%25%2F%C3%A9%20%C3%BC" {
		t.Fatalf("userinfo %q", userinfo)
	}
	for _, scheme := range []string{"basic", "digest"} {
		ap := bench.StartApache(t, bench.ApacheOptions{Auth: scheme, Users: map[string]string{user: pass}})
		px := startProxy(t, "http://"+userinfo+"@"+ap.Addr())
		if codes, out, _ := curlCodes(t, "http://"+px+"/small"); !sameInts(codes, 200) || !strings.HasSuffix(out, bench.SmallBody) {
			t.Fatalf("Apache %s: statuses %v:\n%.1500s", scheme, codes, out)
		}
	}
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{user: pass}})
	for _, q := range []string{"", "?preemptive=0"} {
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{"http://" + userinfo + "@" + sq.Addr() + q}, ""); err != nil {
			t.Fatal(err)
		}
		px := startProxyConfig(t, cfg)
		if codes, out, _ := curlCodes(t, "-x", "http://"+px, ng.URL("/small")); !sameInts(codes, 200) || !strings.HasSuffix(out, bench.SmallBody) {
			t.Fatalf("Squid parent%s: statuses %v:\n%.1500s", q, codes, out)
		}
	}
}

// TestOwnLoginInfoWithheld: Apache's Authentication-Info to a request
// that carried the demo's own Digest credentials (-origin with
// credentials) is about the demo's login, not the client's, and does not
// reach the client: its rspauth, cnonce and nc, with the nonce of a 401
// that did reach the client (a POST whose body could not be sent again),
// would let the client test guesses of the origin's password offline. A
// client's own Digest login gets its Authentication-Info. The same for a
// Squid parent's Proxy-Authentication-Info (its nextnonce), which is for
// the next outbound client (RFC 9110 §11.7.3): the client gets it only
// when its own login went to the parent (-client-auth pass).
func TestOwnLoginInfoWithheld(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ap := bench.StartApache(t, bench.ApacheOptions{Auth: "digest", Users: map[string]string{"alice": "pw"}})
	px := startProxy(t, "http://alice:pw@"+ap.Addr())
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, maxReplay+1), 0o644); err != nil {
		t.Fatal(err)
	}
	codes, out, _ := curlCodes(t, "-H", "Expect:", "--data-binary", "@"+big, "http://"+px+"/small")
	if !sameInts(codes, 401) || !strings.Contains(out, "WWW-Authenticate: Digest") {
		t.Fatalf("POST over %d bytes: statuses %v, want Apache's 401 with its challenge:\n%.1500s", maxReplay, codes, out)
	}
	codes, out, _ = curlCodes(t, "http://"+px+"/small", "http://"+px+"/small")
	if !sameInts(codes, 200, 200) || strings.Contains(out, "Authentication-Info") {
		t.Fatalf("with the demo's login: statuses %v, want 200s without Authentication-Info:\n%.1500s", codes, out)
	}
	// The client's own login, through a demo without credentials.
	px = startProxy(t, "http://"+ap.Addr())
	codes, out, _ = curlCodes(t, "--digest", "-u", "alice:pw", "http://"+px+"/small")
	if !sameInts(codes, 401, 200) || !strings.Contains(out, "Authentication-Info: rspauth=") {
		t.Fatalf("the client's login: statuses %v, want 401 then 200 with Authentication-Info:\n%.1500s", codes, out)
	}

	// Squid sends a nextnonce on the last request a nonce may serve.
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "digest", Users: map[string]string{"alice": "pw"},
		Extra: []string{"auth_param digest nonce_max_count 2"}})
	proxyTo := func(parent, clientAuth string) string {
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{parent}, ""); err != nil {
			t.Fatal(err)
		}
		if err := withClientAuth(&cfg, clientAuth); err != nil {
			t.Fatal(err)
		}
		return startProxyConfig(t, cfg)
	}
	px = proxyTo("http://alice:pw@"+sq.Addr()+"?preemptive=0", clientAuthNone)
	codes, out, _ = curlCodes(t, "-x", "http://"+px, ng.URL("/small"), ng.URL("/small"), ng.URL("/small"))
	if !sameInts(codes, 200, 200, 200) || strings.Contains(out, "Proxy-Authentication-Info") {
		t.Fatalf("with the demo's login to Squid: statuses %v, want 200s without Proxy-Authentication-Info:\n%.1500s", codes, out)
	}
	px = proxyTo("http://"+sq.Addr(), clientAuthPass)
	codes, out, _ = curlCodes(t, "--proxy-digest", "-U", "alice:pw", "-x", "http://"+px, ng.URL("/small"))
	if !sameInts(codes, 407, 200) || !strings.Contains(out, "Proxy-Authentication-Info: nextnonce=") {
		t.Fatalf("the client's login to Squid: statuses %v, want 407 then 200 with Proxy-Authentication-Info:\n%.1500s", codes, out)
	}
}

// TestParentDigestAuth: -parent http://alice:pw@squid answers the
// Digest 407s of a Squid parent, with or without the preemptive Basic
// first; wrong credentials bounce the 407 to curl, without its
// Proxy-Authenticate, which curl could not answer (the demo sends the
// parent its own credentials, not curl's).
func TestParentDigestAuth(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "digest", Users: map[string]string{"alice": "pw"}})
	proxyTo := func(parent string) string {
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{parent}, ""); err != nil {
			t.Fatal(err)
		}
		return startProxyConfig(t, cfg)
	}
	px := proxyTo("http://alice:pw@" + sq.Addr() + "?preemptive=0")
	codes, out, _ := curlCodes(t, "-x", "http://"+px, ng.URL("/small"), ng.URL("/small"))
	if !sameInts(codes, 200, 200) || strings.Count(out, bench.SmallBody) != 2 {
		t.Fatalf("statuses %v:\n%.600s", codes, out)
	}
	// Without preemptive=0 the credentials are the peer's own, sent as
	// Basic, which this Squid refuses: its 407 reaches curl.
	px = proxyTo("http://alice:pw@" + sq.Addr())
	codes, out, _ = curlCodes(t, "-x", "http://"+px, ng.URL("/small"))
	if !sameInts(codes, 407) || strings.Contains(out, "Proxy-Authenticate") || !strings.Contains(out, "ERR_CACHE_ACCESS_DENIED") {
		t.Fatalf("preemptive Basic to a Digest parent: statuses %v:\n%.1500s", codes, out)
	}
	px = proxyTo("http://alice:wrong@" + sq.Addr() + "?preemptive=0")
	codes, out, errb := curlCodes(t, "-v", "-x", "http://"+px, ng.URL("/small"), ng.URL("/small"))
	if !sameInts(codes, 407, 407) || strings.Contains(out, "Proxy-Authenticate") || strings.Count(out, "X-Squid-Error: ERR_CACHE_ACCESS_DENIED") != 2 {
		t.Fatalf("wrong credentials: statuses %v, want Squid's 407 twice, without its challenge:\n%.1500s", codes, out)
	}
	if !strings.Contains(errb, "Re-using existing connection") {
		t.Fatalf("the second request did not reuse the connection:\n%s", errb)
	}
	var alice int
	for _, l := range sq.AccessLog() {
		if strings.Contains(l, " alice ") && strings.Contains(l, "/200 ") {
			alice++
		}
	}
	if alice != 2 {
		t.Fatalf("Squid logged %d requests by alice, want 2:\n%s", alice, strings.Join(sq.AccessLog(), "\n"))
	}
}

// TestParentChallengeRelayed: a Squid parent's 407 reaches the client
// with its Proxy-Authenticate only when the client's answer would reach
// that parent (-client-auth pass, a parent without credentials of its
// own). Otherwise the demo strips or replaces the client's
// Proxy-Authorization, and a challenge kept would only have the client
// (a browser: its user) answer in a loop; the 407 comes without it, as
// from Squid with a cache_peer without login=PASSTHRU (RFC 9110 §11.7.1:
// Proxy-Authenticate is for the next outbound client). The same for a
// refused CONNECT.
func TestParentChallengeRelayed(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{"alice": "pw"}})
	proxyTo := func(parent, clientAuth string) string {
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{parent}, ""); err != nil {
			t.Fatal(err)
		}
		if err := withClientAuth(&cfg, clientAuth); err != nil {
			t.Fatal(err)
		}
		return startProxyClient(t, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	}
	connect := "CONNECT " + ng.Addr() + " HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n"
	for _, tc := range []struct{ parent, clientAuth string }{
		{"http://" + sq.Addr(), clientAuthNone},
		{"http://alice:wrong@" + sq.Addr(), clientAuthNone},
		{"http://alice:wrong@" + sq.Addr() + "?preemptive=0", clientAuthNone},
		{"http://alice:wrong@" + sq.Addr(), clientAuthPass},
	} {
		px := proxyTo(tc.parent, tc.clientAuth)
		codes, out, _ := curlCodes(t, "--proxy-anyauth", "-U", "alice:pw", "-x", "http://"+px, ng.URL("/small"))
		if !sameInts(codes, 407) || strings.Contains(out, "Proxy-Authenticate") || !strings.Contains(out, "ERR_CACHE_ACCESS_DENIED") {
			t.Fatalf("%s, -client-auth %s: statuses %v, want one 407, Squid's page without its challenge:\n%.1500s",
				redactURL(tc.parent), tc.clientAuth, codes, out)
		}
		// The same for CONNECT.
		_, _, resp, body := rawConnect(t, px, connect+"\r\n")
		if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != "" || !strings.Contains(body, "ERR_CACHE_ACCESS_DENIED") {
			t.Fatalf("%s, -client-auth %s: CONNECT: %d %v, want Squid's 407 without its challenge",
				redactURL(tc.parent), tc.clientAuth, resp.StatusCode, resp.Header)
		}
	}
	// Passed through: curl gets the challenge and answers it.
	px := proxyTo("http://"+sq.Addr(), clientAuthPass)
	codes, out, _ := curlCodes(t, "--proxy-anyauth", "-U", "alice:pw", "-x", "http://"+px, ng.URL("/small"))
	if !sameInts(codes, 407, 200) || !strings.Contains(out, `Proxy-Authenticate: Basic realm="`+bench.SquidRealm+`"`) ||
		!strings.HasSuffix(out, bench.SmallBody) {
		t.Fatalf("-client-auth pass: statuses %v, want 407 with Squid's challenge, then 200:\n%.1500s", codes, out)
	}
	_, _, resp, _ := rawConnect(t, px, connect+"\r\n")
	if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != `Basic realm="`+bench.SquidRealm+`"` {
		t.Fatalf("-client-auth pass: CONNECT: %d %v, want Squid's 407 with its challenge", resp.StatusCode, resp.Header)
	}
	c, _, resp, _ := rawConnect(t, px, connect+"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("-client-auth pass: CONNECT with curl's answer: %d %v, want 200", resp.StatusCode, resp.Header)
	}
	c.Close()
}

// TestCredentialsRedacted: the passwords of peer URLs appear in no log
// line, error or admin page.
func TestCredentialsRedacted(t *testing.T) {
	const pw = "s3cret"
	list := originList{"http://u:" + pw + "@127.0.0.1:1", "http://127.0.0.1:2"}
	if s := list.String(); strings.Contains(s, pw) || !strings.Contains(s, "u:xxxxx@127.0.0.1:1") {
		t.Errorf("flag value %q", s)
	}
	for _, bad := range []string{
		"http://u:" + pw + "@127.0.0.1:1?colour=red",
		"http://u:" + pw + "@127.0.0.1:1?preemptive=perhaps",
		"ftp://u:" + pw + "@127.0.0.1:1",
		"http://u:" + pw + "@127.0.0.1:1/%zz",
		// Without a scheme: "u" parses as one, the rest as opaque.
		"u:" + pw + "@127.0.0.1:1",
		"u:" + pw + "@127.0.0.1:1/%zz",
	} {
		err := withPeers(&engine.Config{}, nil, []string{bad}, "")
		if err == nil || strings.Contains(err.Error(), pw) {
			t.Errorf("withPeers(%q): %v", bad, err)
		}
	}
	for _, bad := range []string{"ftp://u:" + pw + "@127.0.0.1:1", "u:" + pw + "@127.0.0.1:1"} {
		_, err := parseConfig("c.json", []byte(`{"parents": [{"url": "`+bad+`"}]}`))
		if err == nil || strings.Contains(err.Error(), pw) {
			t.Errorf("config error %v", err)
		}
	}
	if s := (&originList{"u:" + pw + "@127.0.0.1:1"}).String(); strings.Contains(s, pw) {
		t.Errorf("flag value %q", s)
	}
	// A URL without a scheme is shown, but for its userinfo, with what
	// the flag wants.
	for bad, want := range map[string]string{
		"127.0.0.1:8081":           `-origin "127.0.0.1:8081": want http://host:port or https://host:port`,
		"u:" + pw + "@127.0.0.1:1": `-origin "xxxxx@127.0.0.1:1": want http://host:port or https://host:port`,
	} {
		if err := withPeers(&engine.Config{}, []string{bad}, nil, ""); err == nil || err.Error() != want {
			t.Errorf("withPeers(%q): %v, want %s", bad, err, want)
		}
	}
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://u:" + pw + "@127.0.0.1:1"}, ""); err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v", peerSpecs(cfg)); strings.Contains(s, pw) {
		t.Errorf("admin peers %s", s)
	}
}

// portLog is a Squid access log of its own, one line per request: the
// client's source port (which tells the proxy's upstream connections
// apart), the status, the method, the URL and the user.
type portLog string

func squidPortLog(t *testing.T) (portLog, []string) {
	t.Helper()
	dir := t.TempDir()
	// Squid runs as its own user: let it into the directory.
	for d, mode := range map[string]os.FileMode{dir: 0o777, filepath.Dir(dir): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "ports.log")
	return portLog(log), []string{
		"logformat demoauth %>p %>Hs %rm %ru %un",
		"access_log stdio:" + log + " demoauth",
		"strip_query_terms off",
	}
}

type portLine struct {
	port, status int
	url, user    string
}

// lines waits (bounded) for at least n lines: Squid logs a request after
// answering it.
func (l portLog) lines(t *testing.T, n int) []portLine {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []portLine
		data, _ := os.ReadFile(string(l))
		for _, s := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(s)
			// The fixture's readiness probe logs an error: not a request.
			if len(f) != 5 || strings.HasPrefix(f[3], "error:") {
				continue
			}
			port, _ := strconv.Atoi(f[0])
			status, _ := strconv.Atoi(f[1])
			out = append(out, portLine{port: port, status: status, url: f[3], user: f[4]})
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startAuthProxy serves a proxy for cfg (with its peer group) and returns
// it and its address.
func startAuthProxy(t *testing.T, cfg engine.Config) (*proxy, string) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Shards, cfg.Logger = 2, logger
	p, err := newProxy(logger, nil, cfg, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return p, serveProxy(t, p)
}

// pinned is the number of pinned upstream connections.
func pinned(p *proxy) int {
	n := 0
	for _, st := range p.eng.Stats() {
		n += st.Pool.Pinned
	}
	return n
}

// waitPinned waits (bounded) until p has want pinned connections.
func waitPinned(t *testing.T, p *proxy, want int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); pinned(p) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pinned connections, want %d", pinned(p), want)
		}
	}
}

// idleAndBusyNTLM starts a demo reverse proxy (engine config cfg) in
// front of a Squid accelerator that demands NTLM (with the extra Squid
// directives), and two clients that each log in on a pinned connection:
// idle then waits, busy has started its next request, whose head is not
// complete.
func idleAndBusyNTLM(t *testing.T, cfg engine.Config, squidExtra ...string) (*proxy, portLog, *rawClient, *rawClient) {
	t.Helper()
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: append(extra, squidExtra...)})
	if err := withPeers(&cfg, []string{"http://" + sq.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	idle, busy := dialRaw(t, px), dialRaw(t, px)
	idle.handshake(t, "idle")
	busy.handshake(t, "busy")
	waitPinned(t, p, 2)
	// Both handshakes' last responses are out (a client may read one
	// before the proxy is done with it), then one request starts.
	waitBusy(t, p, 0, "the handshakes did not end")
	busy.write(t, "GET /small HTTP/1.1\r\n")
	waitBusy(t, p, 1, "the started request did not reach the proxy")
	return p, plog, idle, busy
}

// waitBusy waits until want of p's client connections are serving a
// request.
func waitBusy(t *testing.T, p *proxy, want int, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := 0
		p.each(func(cc *clientConn) {
			if cc.state.Load() == stBusy {
				n++
			}
		})
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d client connections busy, want %d", what, n, want)
		}
	}
}

// TestNTLMReverse: curl --ntlm through the demo in front of a Squid
// accelerator that demands NTLM. Each curl's handshake and the request
// after it run over one upstream connection (Squid serves the request
// without credentials only on the authenticated connection), and two
// concurrent curls never share one. When curl goes away, the demo
// unpins its connection.
func TestNTLMReverse(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: extra})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + sq.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)

	var wg sync.WaitGroup
	outs := make([]string, 2)
	codes := make([][]int, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := fmt.Sprintf("http://%s/small?c=%d", px, i)
			codes[i], outs[i], _ = curlCodes(t, "--ntlm", "-u", fmt.Sprintf("user%d:pw", i), u+"&n=1", u+"&n=2")
		}()
	}
	wg.Wait()
	for i := range outs {
		// curl shows the 401 of the handshake, then the two 200s.
		if !sameInts(codes[i], 401, 200, 200) || strings.Count(outs[i], bench.SmallBody) != 2 {
			t.Fatalf("curl %d: statuses %v, want 401 200 200:\n%.1500s", i, codes[i], outs[i])
		}
	}
	lines := plog.lines(t, 6)
	ports := map[string]map[int]bool{}
	for _, l := range lines {
		c := "other"
		for _, k := range []string{"c=0", "c=1"} {
			if strings.Contains(l.url, k) {
				c = k
			}
		}
		if ports[c] == nil {
			ports[c] = map[int]bool{}
		}
		ports[c][l.port] = true
	}
	if len(lines) != 6 || len(ports) != 2 || len(ports["c=0"]) != 1 || len(ports["c=1"]) != 1 {
		t.Fatalf("Squid's log: want each curl's 3 requests on one connection of its own:\n%+v", lines)
	}
	for p0 := range ports["c=0"] {
		if ports["c=1"][p0] {
			t.Fatalf("both curls on the connection from port %d:\n%+v", p0, lines)
		}
	}
	// The curls closed their connections: their sessions ended.
	waitPinned(t, p, 0)
}

// TestNTLMParentPassThrough: with -client-auth pass, curl --proxy-ntlm
// logs in to a Squid parent through the demo.
func TestNTLMParentPassThrough(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "ntlm", Extra: extra})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	if err := withClientAuth(&cfg, clientAuthPass); err != nil {
		t.Fatal(err)
	}
	_, px := startAuthProxy(t, cfg)
	codes, out, _ := curlCodes(t, "--proxy-ntlm", "-U", "user:pw", "-x", "http://"+px, ng.URL("/small?n=1"), ng.URL("/small?n=2"))
	if !sameInts(codes, 407, 200, 200) || strings.Count(out, bench.SmallBody) != 2 {
		t.Fatalf("statuses %v, want 407 200 200:\n%.1500s", codes, out)
	}
	lines := plog.lines(t, 3)
	if len(lines) != 3 || lines[0].port != lines[1].port || lines[1].port != lines[2].port ||
		lines[0].status != 407 || lines[1].status != 200 || !strings.Contains(lines[1].user, "user") {
		t.Fatalf("Squid's log: want the handshake and the next request on one connection:\n%+v", lines)
	}

	// Without -client-auth pass, the client's Proxy-Authorization is
	// stripped: Squid never sees the handshake, and its 407 reaches curl
	// without the challenge that curl's answer could not meet.
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	_, px = startAuthProxy(t, cfg)
	codes, out, _ = curlCodes(t, "--proxy-ntlm", "-U", "user:pw", "-x", "http://"+px, ng.URL("/small"))
	if !sameInts(codes, 407) || strings.Contains(out, "Proxy-Authenticate") || !strings.Contains(out, "ERR_CACHE_ACCESS_DENIED") {
		t.Fatalf("statuses %v, want one 407 without its challenge:\n%.1500s", codes, out)
	}
}

// rawClient is one client connection to the proxy, kept open between
// requests.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, px string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		t.Fatal(err)
	}
}

// read reads one response, body included.
func (rc *rawClient) read(t *testing.T) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// handshake runs an NTLM handshake on rc: the Type 1 message, the 401
// with the Type 2 challenge, the Type 3 message and the 200.
func (rc *rawClient) handshake(t *testing.T, user string) {
	t.Helper()
	rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMNegotiate()+"\r\n\r\n")
	resp, _ := rc.read(t)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.HasPrefix(ch, "NTLM ") {
		t.Fatalf("Type 1: %d %q, want a 401 with an NTLM challenge", resp.StatusCode, ch)
	}
	rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMAuthenticate("DOM", user, "WS")+"\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("Type 3: %d %q, want 200", resp.StatusCode, body)
	}
}

// eof reports whether the proxy closed rc (nothing more to read).
func (rc *rawClient) eof(t *testing.T) bool {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(rc.br)
	return err == nil && len(rest) == 0
}

// TestNTLMPinnedGone: Squid closes the idle pinned connections of two
// authenticated clients. The idle client's connection is closed by the
// demo (Config.OnPinnedClosed); the client whose next request had
// already started gets a 502 naming the cause, and its connection is
// closed. Nothing is retried.
func TestNTLMPinnedGone(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	// Squid closes a client connection idle for 2 seconds.
	p, plog, idle, busy := idleAndBusyNTLM(t, engine.Config{}, "client_idle_pconn_timeout 2 seconds")
	// Squid's idle timeout closes both pinned connections.
	waitPinned(t, p, 0)
	if !idle.eof(t) {
		t.Fatal("the idle client's connection is still open after its pinned connection closed")
	}
	before := len(plog.lines(t, 4))
	busy.write(t, "Host: demo\r\n\r\n")
	resp, body := busy.read(t)
	if resp.StatusCode != 502 || !strings.Contains(body, "NTLM") || !resp.Close {
		t.Fatalf("request after the pinned connection closed: %d (close %v) %q, want 502 naming the cause", resp.StatusCode, resp.Close, body)
	}
	if !busy.eof(t) {
		t.Fatal("the client connection is still open after the 502")
	}
	if after := len(plog.lines(t, 4)); after != before || before != 4 {
		t.Fatalf("Squid logged %d requests, then %d: want 4, and none after the pinned connection closed", before, after)
	}
}

// TestNTLMDrainPinnedPeer: draining the origin that holds two clients'
// NTLM sessions ends them at once, not at their idle timeout. The idle
// client's connection is closed by the demo; the client whose next
// request had started gets a 502 naming the cause, and its connection is
// closed. Nothing more reaches Squid, and the origin is drained.
func TestNTLMDrainPinnedPeer(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	p, plog, idle, busy := idleAndBusyNTLM(t, engine.Config{PinnedIdleTimeout: 10 * time.Minute})
	peers := p.eng.PeerStats()[p.group].Peers
	if len(peers) != 1 {
		t.Fatalf("peers %+v, want the Squid origin alone", peers)
	}
	if err := p.eng.DrainPeer(p.group, peers[0].Name); err != nil {
		t.Fatal(err)
	}
	waitPinned(t, p, 0)
	if !idle.eof(t) {
		t.Fatal("the idle client's connection is still open after its origin was drained")
	}
	if st := p.eng.PeerStats()[p.group].Peers[0].State; st != engine.PeerDrained {
		t.Fatalf("origin %v after its sessions ended, want drained", st)
	}
	busy.write(t, "Host: demo\r\n\r\n")
	resp, body := busy.read(t)
	if resp.StatusCode != 502 || !strings.Contains(body, "NTLM") || !resp.Close {
		t.Fatalf("request after the drain: %d (close %v) %q, want 502 naming the cause", resp.StatusCode, resp.Close, body)
	}
	if !busy.eof(t) {
		t.Fatal("the client connection is still open after the 502")
	}
	if n := len(plog.lines(t, 4)); n != 4 {
		t.Fatalf("Squid logged %d requests, want the 4 of the handshakes", n)
	}
}

// TestNTLMOriginWithCredentials: the origin's URL carries credentials
// (for its Basic and Digest challenges), so its connections pool under a
// key with their credential scope; a client's NTLM handshake with it
// pins one of them. The session is still the peer's: the request after
// the handshake is served on the authenticated connection (Squid's log,
// by client port), and /metrics counts the pinned connection as the
// peer's. (The session's key was not the peer's key, so its requests
// failed as if the peer had left the group: a 502 to the Type 3.)
func TestNTLMOriginWithCredentials(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: extra})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://u:pw@" + sq.Addr() + "?name=squid"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	c := dialRaw(t, px)
	c.handshake(t, "alice")
	c.write(t, "GET /small?after HTTP/1.1\r\nHost: demo\r\n\r\n")
	if resp, body := c.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("request after the handshake: %d %q, want 200", resp.StatusCode, body)
	}
	lines := plog.lines(t, 3)
	if len(lines) != 3 || lines[2].port != lines[1].port || lines[2].status != 200 || !strings.Contains(lines[2].url, "after") {
		t.Fatalf("Squid's log: want the request after the handshake on the authenticated connection:\n%+v", lines)
	}
	var b bytes.Buffer
	a := newAdmin(p, adminInfo{Shards: 2})
	a.writeMetrics(&b, a.snapshot())
	m, err := parseProm(b.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := m.get(t, "serverside_peer_connections", "peer", "squid", "state", "pinned"); n != 1 {
		t.Fatalf("serverside_peer_connections{state=pinned} %v, want 1", n)
	}
}

// TestNTLMForwardOtherSite: in forward mode, a client that logged in to
// an NTLM site (a Squid accelerator) moves on to another site (nginx) on
// the same proxy connection, as browsers do: that request is served, and
// the next one to the NTLM site still runs on the authenticated
// connection, without a new handshake.
func TestNTLMForwardOtherSite(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	closer := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 1})
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: extra})
	p, px := startAuthProxy(t, engine.Config{})
	c := dialRaw(t, px)
	get := func(target string, fields ...string) (*http.Response, string) {
		t.Helper()
		c.write(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n"+strings.Join(append(fields, ""), "\r\n")+"\r\n")
		return c.read(t)
	}
	ntlmSite := "http://" + sq.Addr() + "/small"
	if resp, _ := get(ntlmSite, "Authorization: "+bench.NTLMNegotiate()); resp.StatusCode != 401 {
		t.Fatalf("Type 1: %d, want the 401 challenge", resp.StatusCode)
	}
	if resp, body := get(ntlmSite, "Authorization: "+bench.NTLMAuthenticate("DOM", "user", "WS")); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("Type 3: %d %q", resp.StatusCode, body)
	}
	waitPinned(t, p, 1)
	if resp, body := get(ng.URL("/small")); resp.StatusCode != 200 || body != bench.SmallBody || resp.Close {
		t.Fatalf("the other site: %d (close %v) %q, want 200 on a connection that stays", resp.StatusCode, resp.Close, body)
	}
	// A site that closes its connection after each response: that close
	// is not the session's, so the client's connection stays.
	if resp, body := get(closer.URL("/small")); resp.StatusCode != 200 || body != bench.SmallBody || resp.Close {
		t.Fatalf("a site closing its connection: %d (close %v) %q, want 200 on a connection that stays", resp.StatusCode, resp.Close, body)
	}
	if resp, body := get(ntlmSite); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("back to the NTLM site: %d %q, want 200 on the authenticated connection", resp.StatusCode, body)
	}
	lines := plog.lines(t, 3)
	if len(lines) != 3 || lines[1].port != lines[2].port || lines[2].status != 200 {
		t.Fatalf("Squid's log: want the handshake and the last request on one connection:\n%+v", lines)
	}
	if pinned(p) != 1 {
		t.Fatalf("%d pinned connections, want the session kept", pinned(p))
	}
}

// TestNTLMParentOtherSite: forward mode through a Squid parent, to an
// NTLM site (a Squid accelerator) behind it. The parent says
// "Proxy-Support: Session-Based-Authentication" and ties its connection
// to the site to ours, so ours is pinned for the client. The client then
// moves on to another site on the same proxy connection, as browsers do:
// that request is not the session's and goes on another connection to
// the parent (on the pinned one, the parent answers 503, "Unable to
// forward", and closes it, ending the login). The next request to the
// NTLM site runs on the authenticated connection without a new handshake.
func TestNTLMParentOtherSite(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	plog, extra := squidPortLog(t)
	site := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm", Extra: extra})
	// Another name: Squid refuses a request whose Via names itself.
	parent := bench.StartSquid(t, bench.SquidOptions{Extra: []string{"visible_hostname parent.test"}})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + parent.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	c := dialRaw(t, px)
	get := func(target string, fields ...string) (*http.Response, string) {
		t.Helper()
		c.write(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n"+strings.Join(append(fields, ""), "\r\n")+"\r\n")
		return c.read(t)
	}
	ntlmSite := "http://" + site.Addr() + "/small"
	if resp, _ := get(ntlmSite, "Authorization: "+bench.NTLMNegotiate()); resp.StatusCode != 401 {
		t.Fatalf("Type 1: %d, want the 401 challenge", resp.StatusCode)
	}
	if resp, body := get(ntlmSite, "Authorization: "+bench.NTLMAuthenticate("DOM", "user", "WS")); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("Type 3: %d %q", resp.StatusCode, body)
	}
	waitPinned(t, p, 1)
	if resp, body := get(ng.URL("/small")); resp.StatusCode != 200 || body != bench.SmallBody || resp.Close {
		t.Fatalf("the other site: %d (close %v) %.80q, want 200 on a connection that stays", resp.StatusCode, resp.Close, body)
	}
	if resp, body := get(ntlmSite); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("back to the NTLM site: %d %q, want 200 on the authenticated connection", resp.StatusCode, body)
	}
	lines := plog.lines(t, 3)
	if len(lines) != 3 || lines[1].port != lines[2].port || lines[2].status != 200 {
		t.Fatalf("the NTLM site's log: want the handshake and the last request on one connection:\n%+v", lines)
	}
	if pinned(p) != 1 {
		t.Fatalf("%d pinned connections, want the session kept", pinned(p))
	}

	// The parent's own NTLM login (-client-auth pass), by contrast, holds
	// for every site: after it, a request for another site, without
	// credentials, runs on the authenticated connection.
	plog, extra = squidPortLog(t)
	ntlmParent := bench.StartSquid(t, bench.SquidOptions{Auth: "ntlm", Extra: extra})
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + ntlmParent.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	if err := withClientAuth(&cfg, clientAuthPass); err != nil {
		t.Fatal(err)
	}
	p, px = startAuthProxy(t, cfg)
	c = dialRaw(t, px)
	if resp, _ := get(ng.URL("/small"), "Proxy-Authorization: "+bench.NTLMNegotiate()); resp.StatusCode != 407 {
		t.Fatalf("parent login, Type 1: %d, want the 407 challenge", resp.StatusCode)
	}
	if resp, body := get(ng.URL("/small"), "Proxy-Authorization: "+bench.NTLMAuthenticate("DOM", "user", "WS")); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("parent login, Type 3: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(ntlmSite); resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM") {
		t.Fatalf("another site through the parent's login: %d %.80q, want the NTLM site's own 401", resp.StatusCode, body)
	}
	lines = plog.lines(t, 3)
	if len(lines) != 3 || lines[1].port != lines[2].port || lines[2].status != 401 || lines[2].url != ntlmSite {
		t.Fatalf("the parent's log: want the login and the request for the other site on one connection:\n%+v", lines)
	}
}

// TestNTLMProxySupport: a forward proxy that pins its connection to an
// origin for a client's NTLM or Negotiate login says so on the 401 that
// asks for it, "Proxy-Support: Session-Based-Authentication" (RFC 4559
// §5), as Squid does: clients that log in to an origin through a proxy
// (.NET's HttpClient) do not start the handshake without it. Directly to
// the NTLM site, and through a Squid parent that announces it; not as a
// reverse proxy, where the client does not know of a proxy.
func TestNTLMProxySupport(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	site := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm"})
	parent := bench.StartSquid(t, bench.SquidOptions{Extra: []string{"visible_hostname parent.test"}})
	viaParent := engine.Config{}
	if err := withPeers(&viaParent, nil, []string{"http://" + parent.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	ntlmSite := "http://" + site.Addr() + "/small"
	for _, tc := range []struct {
		name string
		cfg  engine.Config
	}{{"direct", engine.Config{}}, {"through a parent", viaParent}} {
		_, px := startAuthProxy(t, tc.cfg)
		c := dialRaw(t, px)
		for _, creds := range []string{"", "Authorization: " + bench.NTLMNegotiate() + "\r\n"} {
			c.write(t, "GET "+ntlmSite+" HTTP/1.1\r\nHost: x\r\n"+creds+"\r\n")
			resp, _ := c.read(t)
			if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM") ||
				resp.Header.Get("Proxy-Support") != "Session-Based-Authentication" || len(resp.Header.Values("Proxy-Support")) != 1 {
				t.Fatalf("%s, %q: %d %v, want the NTLM challenge with Proxy-Support: Session-Based-Authentication",
					tc.name, creds, resp.StatusCode, resp.Header)
			}
		}
		c.write(t, "GET "+ntlmSite+" HTTP/1.1\r\nHost: x\r\nAuthorization: "+bench.NTLMAuthenticate("DOM", "user", "WS")+"\r\n\r\n")
		if resp, body := c.read(t); resp.StatusCode != 200 || body != bench.SmallBody || resp.Header.Get("Proxy-Support") != "" {
			t.Fatalf("%s, Type 3: %d %q %v, want the 200 without Proxy-Support", tc.name, resp.StatusCode, body, resp.Header)
		}
	}
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + site.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	_, px := startAuthProxy(t, cfg)
	c := dialRaw(t, px)
	c.write(t, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.read(t); resp.StatusCode != 401 || resp.Header.Get("Proxy-Support") != "" {
		t.Fatalf("reverse proxy: %d %v, want the 401 without Proxy-Support", resp.StatusCode, resp.Header)
	}
}

// registered is the number of client connections in p's pin registry.
func registered(p *proxy) int {
	n := 0
	for i := range p.pins.shards {
		s := &p.pins.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// TestNTLMAfterBareChallenge: a browser's order. The first request has
// no credentials and gets the 401 asking for NTLM; the handshake follows
// on the same client connection, and a request without credentials after
// it is served on the authenticated upstream connection. A client
// connection that never authenticates gets no pin key and is not
// registered.
func TestNTLMAfterBareChallenge(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{Origin: ng.Addr(), Auth: "ntlm"})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + sq.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)

	rc := dialRaw(t, px)
	rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\n\r\n")
	resp, _ := rc.read(t)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "NTLM" || resp.Close {
		t.Fatalf("bare request: %d %q (close %v), want a 401 asking for NTLM on an open connection",
			resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Close)
	}
	rc.handshake(t, "browser")
	rc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("after the handshake: %d %q, want 200 on the authenticated connection", resp.StatusCode, body)
	}
	if n := pinned(p); n != 1 {
		t.Fatalf("%d pinned connections, want 1", n)
	}
	if n := registered(p); n != 1 {
		t.Fatalf("%d registered client connections, want 1", n)
	}

	// A client that never authenticates (nginx behind another proxy):
	// nothing registered for it.
	cfg = engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + ng.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	pp, plain := startAuthProxy(t, cfg)
	pc := dialRaw(t, plain)
	pc.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\n\r\n")
	if resp, body := pc.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
		t.Fatalf("plain request: %d %q", resp.StatusCode, body)
	}
	if n := registered(pp); n != 0 {
		t.Fatalf("%d registered client connections without authentication, want 0", n)
	}
	rc.c.Close()
	waitPinned(t, p, 0)
	for deadline := time.Now().Add(10 * time.Second); registered(p) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d registered client connections after the close, want 0", registered(p))
		}
	}
}

// TestReverseOriginAuthPost: -origin http://alice:pw@apache, Basic not
// preemptive. Once Apache has asked for Basic, the demo sends it up front:
// a POST without Expect (whose body the demo cannot send twice) is
// served, where before it got the 401 its client cannot answer, and a GET
// costs no 401 round trip.
func TestReverseOriginAuthPost(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ap := bench.StartApache(t, bench.ApacheOptions{Auth: "basic", Users: map[string]string{"alice": "pw"}})
	px := startProxy(t, "http://alice:pw@"+ap.Addr())
	for i, args := range [][]string{
		{"http://" + px + "/small"},
		{"-d", "x=1", "http://" + px + "/small"},
		{"http://" + px + "/small"},
	} {
		if codes, out, _ := curlCodes(t, args...); !sameInts(codes, 200) || !strings.HasSuffix(out, bench.SmallBody) {
			t.Fatalf("request %d %v: statuses %v, want 200:\n%.1500s", i+1, args, codes, out)
		}
	}
	want := []string{`401 "GET -`, `200 "GET alice`, `200 "POST alice`, `200 "GET alice`}
	// Apache logs a request after its response: wait for every line.
	lines := ap.AccessLog()
	for deadline := time.Now().Add(5 * time.Second); len(lines) < len(want) && time.Now().Before(deadline); lines = ap.AccessLog() {
		time.Sleep(10 * time.Millisecond)
	}
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		got = append(got, f[0]+" "+f[1]+" "+f[4])
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Apache's log %q, want %q", got, want)
	}
}

// TestNTLMPinnedClosesWithResponse: the origin closes the pinned
// connection with a response ("Connection: close", as a server does at
// its keep-alive request limit; a fault-injecting origin that plays the
// NTLM server). The client gets that response with "Connection: close"
// and its connection closes, so that it authenticates again on a new
// one; its next request is not answered 502 on the old one.
func TestNTLMPinnedClosesWithResponse(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			switch n {
			case 0:
				_, _ = io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\n"+
					"WWW-Authenticate: NTLM TlRMTVNTUAACAAAAAAAAADgAAAAFgomiESIzRFVmd4gAAAAAAAAAAAAAAAAAAAAA\r\n"+
					"Content-Length: 0\r\n\r\n")
			case 1:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast")
				return
			}
		}
	})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + o.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	rc := dialRaw(t, px)
	rc.write(t, "GET / HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMNegotiate()+"\r\n\r\n")
	if resp, _ := rc.read(t); resp.StatusCode != 401 {
		t.Fatalf("Type 1: %d, want 401", resp.StatusCode)
	}
	rc.write(t, "GET / HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMAuthenticate("DOM", "u", "WS")+"\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != "ok" || resp.Close {
		t.Fatalf("Type 3: %d %q (close %v), want 200 on an open connection", resp.StatusCode, body, resp.Close)
	}
	rc.write(t, "GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
	if resp, body := rc.read(t); resp.StatusCode != 200 || body != "last" || !resp.Close {
		t.Fatalf("last response on the pinned connection: %d %q (close %v), want the 200 with Connection: close",
			resp.StatusCode, body, resp.Close)
	}
	if !rc.eof(t) {
		t.Fatal("the client connection is still open after its pinned connection closed")
	}
	waitPinned(t, p, 0)
	if n := o.Accepted(); n != 1 {
		t.Fatalf("the origin accepted %d connections, want 1", n)
	}
}

// TestNTLMChallengeCloses: the origin (fault-injecting, playing the NTLM
// server) answers the client's Type 1 message with its Type 2 challenge
// and "Connection: close", as a server does at its keep-alive request
// limit. The handshake is lost with that connection: the client gets the
// challenge with "Connection: close" and its connection closes, as it
// would directly, so that it starts over on a new one. Its Type 3 message
// does not go, on the same client connection, to a new upstream
// connection that never saw the handshake.
func TestNTLMChallengeCloses(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n"+
			"WWW-Authenticate: NTLM TlRMTVNTUAACAAAAAAAAADgAAAAFgomiESIzRFVmd4gAAAAAAAAAAAAAAAAAAAAA\r\n"+
			"Content-Length: 0\r\n\r\n")
	})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + o.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	rc := dialRaw(t, px)
	rc.write(t, "GET / HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMNegotiate()+"\r\n\r\n")
	resp, _ := rc.read(t)
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM T") || !resp.Close {
		t.Fatalf("Type 1: %d %v (close %v), want the 401 with the Type 2 challenge and Connection: close",
			resp.StatusCode, resp.Header, resp.Close)
	}
	if !rc.eof(t) {
		t.Fatal("the client connection is still open after the connection of its handshake closed")
	}
	waitPinned(t, p, 0)
	if n := o.Accepted(); n != 1 {
		t.Fatalf("the origin accepted %d connections, want 1", n)
	}
}

// startSumApache starts Apache demanding Digest (alice:pw) for a CGI
// script at /cgi/sum that answers the SHA-256 of the request body it
// received, in hex: what reached the origin, byte for byte.
func startSumApache(t *testing.T) *bench.Apache {
	t.Helper()
	dir := t.TempDir()
	cgi := filepath.Join(dir, "cgi")
	// Apache's children run as www-data.
	for d, mode := range map[string]os.FileMode{filepath.Dir(dir): 0o755, dir: 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(cgi, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nsha256sum | cut -c1-64\n"
	if err := os.WriteFile(filepath.Join(cgi, "sum"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum([]byte("alice:" + bench.SquidRealm + ":pw"))
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:"+bench.SquidRealm+":"+hex.EncodeToString(sum[:])+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return bench.StartApache(t, bench.ApacheOptions{Auth: "digest", Users: map[string]string{"alice": "pw"}, Extra: []string{
		"LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so",
		"LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so",
		"ScriptAlias /cgi/ " + cgi + "/",
		"<Directory " + cgi + ">",
		"  Options +ExecCGI",
		"  AuthType Digest",
		"  AuthDigestProvider file",
		`  AuthName "` + bench.SquidRealm + `"`,
		"  AuthUserFile " + users,
		"  Require valid-user",
		"</Directory>",
	}})
}

// TestReverseOriginAuthPostReplay: -origin with credentials in front of
// Apache demanding Digest. The first request is a POST (no Expect) whose
// body came whole with its head: the demo keeps a copy, the engine
// answers Apache's 401 and sends the body again, and the script behind
// Apache hashes exactly curl's bytes. A body over 64 KiB is not kept: its
// 401 reaches curl unchanged, body included, as Apache sent it.
func TestReverseOriginAuthPostReplay(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ap := startSumApache(t)
	dir := t.TempDir()
	post := func(size int) ([]int, string, string) {
		f := filepath.Join(dir, strconv.Itoa(size))
		h := writeRandomFile(t, f, int64(size))
		// A fresh proxy: no challenge of Apache's is known yet.
		px := startProxy(t, "http://alice:pw@"+ap.Addr())
		codes, out, _ := curlCodes(t, "-H", "Expect:", "--data-binary", "@"+f, "http://"+px+"/cgi/sum")
		return codes, out, hex.EncodeToString(h[:])
	}
	codes, out, want := post(3000)
	if !sameInts(codes, 200) || !strings.HasSuffix(out, "\r\n\r\n"+want+"\n") {
		t.Fatalf("POST of 3000 bytes: statuses %v, want 200 with the body's SHA-256 %s:\n%.1500s", codes, want, out)
	}
	// Apache logs a request after its response: wait for both lines.
	lines := ap.AccessLog()
	for deadline := time.Now().Add(5 * time.Second); len(lines) < 2 && time.Now().Before(deadline); lines = ap.AccessLog() {
		time.Sleep(10 * time.Millisecond)
	}
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		got = append(got, f[0]+" "+f[1]+" "+f[4]+" "+f[5])
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], `401 "POST - `) || !strings.HasPrefix(got[1], `200 "POST alice `) ||
		got[0][len(got[0])-6:] != got[1][len(got[1])-6:] {
		t.Fatalf("Apache's log %q: want the 401 and the 200 for alice, on one connection", got)
	}

	codes, out, _ = post(maxReplay + 1)
	if !sameInts(codes, 401) || !strings.Contains(out, "WWW-Authenticate: Digest") || !strings.HasSuffix(out, "</body></html>\n") {
		t.Fatalf("POST over %d bytes: statuses %v, want Apache's 401 with its challenge and page:\n%.1500s", maxReplay, codes, out)
	}
}

// TestOwnLoginDoesNotPin: Apache offers NTLM besides Basic or Digest, the
// demo's -origin URL carries the credentials, and the client's first
// request carries an NTLM Type 1 message (curl --ntlm sends one before
// any challenge). The demo answers Apache's 401 with its own login, which
// replaces the client's field: the upstream connection is authenticated
// per request and pinned to nobody. After Apache's keep-alive timeout has
// closed it, the client connection is still open and its next request is
// served on a new upstream connection. (The client's unsent NTLM field
// pinned the connection: its close closed the client's idle connection,
// or answered a request under way with a 502.)
func TestOwnLoginDoesNotPin(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	for _, scheme := range []string{"basic", "digest"} {
		t.Run(scheme, func(t *testing.T) {
			ap := bench.StartApache(t, bench.ApacheOptions{Auth: scheme, Users: map[string]string{"alice": "pw"},
				AlsoOffer: "NTLM", Extra: []string{"KeepAliveTimeout 1"}})
			cfg := engine.Config{}
			if err := withPeers(&cfg, []string{"http://alice:pw@" + ap.Addr()}, nil, ""); err != nil {
				t.Fatal(err)
			}
			p, px := startAuthProxy(t, cfg)
			c := dialRaw(t, px)
			c.write(t, "GET /small HTTP/1.1\r\nHost: demo\r\nAuthorization: "+bench.NTLMNegotiate()+"\r\n\r\n")
			if resp, body := c.read(t); resp.StatusCode != 200 || body != bench.SmallBody {
				t.Fatalf("with the client's Type 1: %d %q, want the 200 of the demo's login", resp.StatusCode, body)
			}
			if n := pinned(p); n != 0 {
				t.Fatalf("%d pinned connections after the demo's own login, want none", n)
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				n := 0
				for _, st := range p.eng.Stats() {
					n += st.Pool.Conns()
				}
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d upstream connections still open after Apache's keep-alive timeout", n)
				}
			}
			c.write(t, "GET /small?after HTTP/1.1\r\nHost: demo\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatalf("request after Apache closed the upstream connection: %v (the demo closed the client connection)", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != bench.SmallBody || resp.Close {
				t.Fatalf("request after Apache closed the upstream connection: %d (close %v) %q, want 200", resp.StatusCode, resp.Close, body)
			}
			// Apache logs a request after answering it.
			log := ap.AccessLog()
			for deadline := time.Now().Add(5 * time.Second); len(log) < 3 && time.Now().Before(deadline); log = ap.AccessLog() {
				time.Sleep(20 * time.Millisecond)
			}
			if len(log) != 3 || !strings.HasPrefix(log[0], "401 ") || !strings.HasPrefix(log[2], `200 "GET /small?after HTTP/1.1" alice `) {
				t.Fatalf("Apache's log: want a 401, then alice's two 200s:\n%s", strings.Join(log, "\n"))
			}
		})
	}
}
