package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TRACE and OPTIONS with Max-Forwards: 0 are answered by the proxy as
// their final recipient and never reach the origin (RFC 9110 §7.6.2);
// TRACE reflects the request less its credentials and cookies (§9.3.8);
// OPTIONS lists in Allow the methods this proxy takes (§9.3.7; a reverse
// proxy refuses CONNECT); the connection stays open for the next request.
// The answers carry the proxy's Via, as its error responses do and as
// Squid's answer to them does.
func TestMaxForwardsZeroAnsweredHere(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxy(t, "http://"+ng.Addr())
	all := rawExchange(t, px,
		"OPTIONS * HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n"+
			"TRACE /t HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nAuthorization: Basic eDp5\r\nCookie: s=1\r\nX-A: 1\r\n\r\n"+
			"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 20*time.Second)
	br := bufio.NewReader(bytes.NewReader(all))
	for i, want := range []struct {
		ctype, body, allow string
	}{
		{"", "", "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"},
		{"message/http", "TRACE /t HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nX-A: 1\r\n\r\n", ""},
		{"text/plain", bench.SmallBody, ""},
	} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v\n%s", i, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want.body || !strings.HasPrefix(resp.Header.Get("Content-Type"), want.ctype) ||
			resp.Header.Get("Allow") != want.allow {
			t.Fatalf("response %d: %d %q %q (Allow %q), want 200 %q %q (Allow %q)", i, resp.StatusCode, resp.Header.Get("Content-Type"), body,
				resp.Header.Get("Allow"), want.ctype, want.body, want.allow)
		}
		if i < 2 && resp.Close {
			t.Fatalf("response %d closes the connection", i)
		}
		if via := resp.Header.Values("Via"); len(via) != 1 || via[0] != "1.1 "+testViaName+" (serverside)" {
			t.Fatalf("response %d: Via %q, want the proxy's alone", i, via)
		}
	}
	ng.WaitRequests(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	if reqs := ng.Requests(); len(reqs) != 1 || reqs[0].URI != "/small" {
		t.Fatalf("nginx saw %+v", reqs)
	}
}

// A forward proxy's own answer to OPTIONS allows CONNECT too.
func TestMaxForwardsZeroOptionsForward(t *testing.T) {
	bench.CheckLeaks(t)
	px := startProxyClient(t, engine.Config{}, clientConfig{})
	all := rawExchange(t, px, "OPTIONS http://example.test/ HTTP/1.1\r\nHost: example.test\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n", 20*time.Second)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, all)
	}
	if want := "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"; resp.StatusCode != 200 || resp.Header.Get("Allow") != want {
		t.Fatalf("%d, Allow %q, want 200 and %q", resp.StatusCode, resp.Header.Get("Allow"), want)
	}
}

// Above 0, Max-Forwards goes on one lower; other methods and requests
// without it pass unchanged. A fake origin that reports the field it got.
func TestMaxForwardsDecremented(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			h, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			got := "none"
			for _, l := range h {
				if v, ok := strings.CutPrefix(l, "Max-Forwards: "); ok {
					got = v
				}
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(got))+"\r\n\r\n"+got)
		}
	})
	px := startProxy(t, "http://"+o.Addr())
	for _, tc := range []struct{ req, want string }{
		{"OPTIONS /o HTTP/1.1\r\nHost: x\r\nMax-Forwards: 3\r\nConnection: close\r\n\r\n", "2"},
		{"TRACE /t HTTP/1.1\r\nHost: x\r\nMax-Forwards: 1\r\nConnection: close\r\n\r\n", "0"},
		{"GET /g HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n", "0"},
		{"OPTIONS /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "none"},
	} {
		out := string(rawExchange(t, px, tc.req, 10*time.Second))
		if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "\r\n\r\n"+tc.want) {
			t.Fatalf("%q: got %q, want the origin to see %q", tc.req, out, tc.want)
		}
	}
}

// A Max-Forwards that is not 1*DIGIT, or given twice with different
// values, is refused with 400 and never forwarded: Squid reads "0, 5"
// or "0x1" as 0 and answers the TRACE itself, where the proxy would
// have read no limit and forwarded it. A valid value too large for any
// integer type still goes on one lower (RFC 9110 §7.6.2: every
// intermediary updates it); Apache's reflection of the TRACE shows what
// arrived.
func TestMaxForwardsInvalidRefused(t *testing.T) {
	bench.CheckLeaks(t)
	ap := bench.StartApache(t, bench.ApacheOptions{})
	px := startProxy(t, "http://"+ap.Addr())
	for _, mf := range []string{
		"Max-Forwards: 0, 5\r\n",
		"Max-Forwards: 0x1\r\n",
		"Max-Forwards: abc\r\n",
		"Max-Forwards: -1\r\n",
		"Max-Forwards: \r\n",
		"Max-Forwards: 5\r\nMax-Forwards: 0\r\n",
	} {
		req := "TRACE /small HTTP/1.1\r\nHost: x\r\n" + mf + "Connection: close\r\n\r\n"
		resp, body := readOne(t, rawExchange(t, px, req, 10*time.Second))
		if resp.StatusCode != 400 || body != "invalid Max-Forwards\n" || !resp.Close {
			t.Fatalf("%q: %d close=%v %q, want 400 invalid Max-Forwards and a close", mf, resp.StatusCode, resp.Close, body)
		}
	}
	for _, tc := range []struct{ mf, want string }{
		{"Max-Forwards: 99999999999999999999999999\r\n", "Max-Forwards: 2147483646\r\n"},
		{"Max-Forwards: 4294967296\r\n", "Max-Forwards: 2147483646\r\n"},
		{"Max-Forwards: 2147483647\r\n", "Max-Forwards: 2147483646\r\n"},
		{"Max-Forwards: 2147483646\r\n", "Max-Forwards: 2147483645\r\n"},
		{"Max-Forwards: 3\r\nMax-Forwards: 03\r\n", "Max-Forwards: 2\r\n"},
	} {
		req := "TRACE /small HTTP/1.1\r\nHost: x\r\n" + tc.mf + "Connection: close\r\n\r\n"
		resp, body := readOne(t, rawExchange(t, px, req, 10*time.Second))
		if resp.StatusCode != 200 || !strings.Contains(body, "\r\n"+tc.want) || strings.Count(body, "Max-Forwards") != 1 {
			t.Fatalf("%q: %d, Apache reflected %q, want %q once", tc.mf, resp.StatusCode, body, tc.want)
		}
	}
	log := ap.AccessLog()
	for deadline := time.Now().Add(5 * time.Second); len(log) < 5 && time.Now().Before(deadline); log = ap.AccessLog() {
		time.Sleep(20 * time.Millisecond) // Apache logs a request as it ends
	}
	if len(log) != 5 {
		t.Fatalf("Apache saw %d requests, want the 5 valid ones: %q", len(log), log)
	}
}

// readOne parses the first response in raw and returns it with its body.
func readOne(t *testing.T, raw []byte) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return resp, string(body)
}

// "OPTIONS *" to a forward proxy asks about the proxy itself (RFC 9112
// §3.2.4: asterisk-form names the server that receives it; nothing names
// another), so the proxy answers it, with or without Max-Forwards, as it
// answers one at Max-Forwards 0, and keeps the connection: not a 400
// for a well-formed request (Squid answers 501). Directly and through a
// parent (nginx, which takes absolute-form requests): only the GET after
// it reaches nginx; from an HTTP/1.0 client, whose connection a forward
// proxy does not keep (RFC 9112 §9.3), not even that. A reverse proxy
// forwards it (TestOptionsAsteriskReverse).
func TestOptionsAsteriskForward(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + ng.Addr()}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	direct := startProxy(t)
	parent := startProxyConfig(t, cfg)
	get := "GET http://" + ng.Addr() + "/small HTTP/1.1\r\nHost: " + ng.Addr() + "\r\nConnection: close\r\n\r\n"
	const allow = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"
	for _, tc := range []struct {
		name, px, req, conn string
	}{
		{"direct", direct, "OPTIONS * HTTP/1.1\r\nHost: " + direct + "\r\n\r\n", ""},
		{"direct, Max-Forwards 5", direct, "OPTIONS * HTTP/1.1\r\nHost: " + direct + "\r\nMax-Forwards: 5\r\n\r\n", ""},
		{"direct, HTTP/1.0", direct, "OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "close"},
		{"parent", parent, "OPTIONS * HTTP/1.1\r\nHost: " + parent + "\r\n\r\n", ""},
	} {
		br := bufio.NewReader(bytes.NewReader(rawExchange(t, tc.px, tc.req+get, 20*time.Second)))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Allow") != allow || len(body) != 0 || resp.ContentLength != 0 ||
			resp.Header.Get("Connection") != strings.TrimPrefix(tc.conn, "close") || resp.Close != (tc.conn == "close") ||
			resp.Header.Get("Date") == "" {
			t.Fatalf("%s: %d %v %q, want 200 with Allow %q and Connection %q", tc.name, resp.StatusCode, resp.Header, body, allow, tc.conn)
		}
		if tc.conn == "close" {
			if rest, _ := io.ReadAll(br); len(rest) != 0 {
				t.Fatalf("%s: after the answer, want the close: %q", tc.name, rest)
			}
			continue
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: the GET after it: %v", tc.name, err)
		}
		body, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != bench.SmallBody {
			t.Fatalf("%s: the GET after it: %d %q", tc.name, resp.StatusCode, body)
		}
	}
	ng.WaitRequests(3, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	reqs := ng.Requests()
	if len(reqs) != 3 {
		t.Fatalf("nginx saw %+v, want the 3 GETs", reqs)
	}
	for _, r := range reqs {
		if r.Method != "GET" {
			t.Fatalf("nginx saw %+v, want the 3 GETs", reqs)
		}
	}
}

// A reverse proxy sends "OPTIONS *" on to its origin, which is the server
// it asks about: Apache answers it (nginx would refuse asterisk-form), an
// HTTP/1.0 one without Host included.
func TestOptionsAsteriskReverse(t *testing.T) {
	bench.CheckLeaks(t)
	ap := bench.StartApache(t, bench.ApacheOptions{})
	px := startProxy(t, "http://"+ap.Addr())
	for _, req := range []string{
		"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"OPTIONS * HTTP/1.0\r\n\r\n",
	} {
		resp, body := readOne(t, rawExchange(t, px, req, 10*time.Second))
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("Server") == "" || resp.Header.Get("Via") != "1.1 proxy.test (serverside)" {
			t.Fatalf("%q: %d %v %q, want Apache's 200", req, resp.StatusCode, resp.Header, body)
		}
	}
	log := ap.AccessLog()
	for deadline := time.Now().Add(5 * time.Second); len(log) < 2 && time.Now().Before(deadline); log = ap.AccessLog() {
		time.Sleep(20 * time.Millisecond) // Apache logs a request as it ends
	}
	if len(log) != 2 || !strings.HasPrefix(log[0], `200 "OPTIONS * HTTP/1.1"`) || !strings.HasPrefix(log[1], `200 "OPTIONS * HTTP/1.1"`) {
		t.Fatalf("Apache saw %q, want two OPTIONS *", log)
	}
}
