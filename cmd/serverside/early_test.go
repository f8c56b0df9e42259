package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestEarlyAnswerToPausedUpload: nginx refuses an upload with 413 as soon
// as it has the head (client_max_body_size 1k, a Content-Length over it)
// or the first chunks past the limit, while the client has sent only part
// of its body and waits before sending more, as a streaming uploader or
// one watching for an early answer does (RFC 9112 §9.5). Straight to nginx
// the client gets the 413 at once; through the proxy it must too (and a
// Squid parent's 407 to a proxy without its login), not
// only once it sends again or its idle timeout ends the wait (and then a
// 408 in place of the origin's answer). The connection then ends, with
// "Connection: close": the rest of the body cannot be framed. Small
// bodies stay on netpoll, large and chunked ones are read off it, in
// reverse and forward mode.
func TestEarlyAnswerToPausedUpload(t *testing.T) {
	needTools(t)
	if _, err := os.Stat("/usr/lib/squid/basic_ncsa_auth"); err != nil && bench.SquidBinary() != "" {
		t.Skipf("Squid's basic_ncsa_auth helper is missing: %v", err)
	}
	bench.CheckLeaks(t)
	// Nothing listens on port 9: a body nginx accepted would get a 502.
	ng := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /lim { client_max_body_size 1k; proxy_pass http://127.0.0.1:9; }
`})
	rev := startProxy(t, "http://"+ng.Addr())
	fwd := startProxy(t)
	// A parent that wants a login the proxy does not have: Squid answers
	// 407 to the head.
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "basic", Users: map[string]string{"alice": "s3cret"}})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	parent := startProxyConfig(t, cfg)
	chunk := func(n int) string { return fmt.Sprintf("%x\r\n%s\r\n", n, strings.Repeat("c", n)) }
	cases := []struct{ name, framing, sent string }{
		{"length-netpoll", "Content-Length: 102400", strings.Repeat("x", 100)},
		{"length-netpoll-none", "Content-Length: 102400", ""},
		{"length-detached", "Content-Length: 10485760", strings.Repeat("x", 100)},
		{"length-detached-none", "Content-Length: 10485760", ""},
		{"chunked", "Transfer-Encoding: chunked", chunk(100) + chunk(2048)},
	}
	for _, tc := range cases {
		for _, mode := range []string{"reverse", "forward", "parent"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				px, target, status, want := rev, "/lim", 413, "413 Request Entity Too Large"
				switch mode {
				case "forward":
					px, target = fwd, ng.URL("/lim")
				case "parent":
					px, target, status, want = parent, ng.URL("/lim"), 407, "ERR_CACHE_ACCESS_DENIED"
				}
				c, err := net.Dial("tcp", px)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// Far below the proxy's client idle timeout (60 s).
				_ = c.SetDeadline(time.Now().Add(15 * time.Second))
				if _, err := io.WriteString(c, "POST "+target+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n"+tc.framing+"\r\n\r\n"+tc.sent); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("waiting for the early answer with the body paused: %v", err)
				}
				body, err := io.ReadAll(resp.Body)
				if resp.StatusCode != status || err != nil || !strings.Contains(string(body), want) || !resp.Close {
					t.Fatalf("response %d (close %v) %.300q, %v; want the upstream's %d and the close", resp.StatusCode, resp.Close, body, err, status)
				}
				if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("after the response: %d bytes, %v; want the end", n, err)
				}
			})
		}
	}
}
