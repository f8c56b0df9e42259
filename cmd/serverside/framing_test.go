package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// TestAbsoluteFormTargets: absolute-form targets become valid origin-form
// ones (RFC 9112 §3.2): a target with a query but no path is sent with
// the path "/", the scheme is matched without regard to case (RFC 9110
// §4.2.3), and a reverse proxy refuses schemes other than http and https
// as the forward proxy does.
func TestAbsoluteFormTargets(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	rev := startProxy(t, "http://"+ng.Addr())
	fwd := startProxy(t)
	cases := []struct {
		px, req string
		status  int
		body    string // "" for any
	}{
		{rev, "GET http://" + ng.Addr() + "?x=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 404, ""},
		{fwd, "GET http://" + ng.Addr() + "?y=2 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 404, ""},
		{fwd, "GET HTTP://" + ng.Addr() + "/small?z=3 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 200, bench.SmallBody},
		{rev, "GET ftp://" + ng.Addr() + "/small HTTP/1.1\r\nHost: other\r\n\r\n", 400, "only http:// and https:// targets are supported\n"},
	}
	for _, tc := range cases {
		all := rawExchange(t, tc.px, tc.req, 20*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.req, err, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || tc.body != "" && string(body) != tc.body {
			t.Fatalf("%q: status %d body %q, want %d %q", tc.req, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	ng.WaitRequests(3, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // a stray request would be logged by now
	reqs := ng.Requests()
	want := map[string]bool{"/?x=1": true, "/?y=2": true, "/small?z=3": true}
	if len(reqs) != len(want) {
		t.Fatalf("nginx saw %+v", reqs)
	}
	for _, r := range reqs {
		if !want[r.URI] {
			t.Fatalf("nginx saw %+v", reqs)
		}
	}
}

// TestOptionsAbsoluteForm: "OPTIONS http://host:port HTTP/1.1" asks about
// the server, and is forwarded as "OPTIONS * HTTP/1.1" (RFC 9112 §3.2.4).
func TestOptionsAbsoluteForm(t *testing.T) {
	bench.CheckLeaks(t)
	lines := make(chan string, 1)
	origin := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		lines <- line
		if _, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader(line), br))); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n")
	})
	px := startProxy(t)
	all := rawExchange(t, px, "OPTIONS http://"+origin.Addr()+" HTTP/1.1\r\nHost: "+origin.Addr()+"\r\nConnection: close\r\n\r\n", 20*time.Second)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("reply:\n%s", all)
	}
	if got := <-lines; got != "OPTIONS * HTTP/1.1\r\n" {
		t.Fatalf("origin got request line %q", got)
	}
}
