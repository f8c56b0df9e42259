package engine_test

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// With Config.GoNetIO the plain-TCP path runs on Go net connections: the
// same keep-alive, framing and stale-connection rules against real nginx.
func TestGoNetIONginx(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{KeepaliveTimeout: "1s", KeepaliveRequests: 3})
	e := startEngine(t, engine.Config{GoNetIO: true})

	// keepalive_requests 3: nginx closes every connection after its third
	// response; no GET may fail for it.
	const n = 12
	for i := 0; i < n; i++ {
		resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0))
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("GET %d: %v %v %q", i, err, resp, body)
		}
	}
	// A body of known length, and an upload echoed back.
	resp, body, err := fetch(e, ngxRequest(t, ngx, "GET", "/1m", nil, 0))
	if err != nil || resp.Status != 200 || !bytes.Equal(body, bench.PatternBody(bench.Size1M)) {
		t.Fatalf("GET /1m: %v, %d bytes", err, len(body))
	}
	up := strings.Repeat("x", 100_000)
	resp, body, err = fetch(e, ngxRequest(t, ngx, "POST", "/echo", strings.NewReader(up), int64(len(up))))
	if err != nil || resp.Status != 200 || string(body) != strconv.Itoa(len(up))+"\n" {
		t.Fatalf("POST /echo: %v %q", err, body)
	}
	// Idle past nginx's keepalive_timeout: the dead connection is noticed
	// (a peek finds the close) or the race is retried.
	time.Sleep(1100 * time.Millisecond)
	if resp, _, err := fetch(e, ngxRequest(t, ngx, "GET", "/small", nil, 0)); err != nil || resp.Status != 200 {
		t.Fatalf("GET after idle: %v", err)
	}
	s := logStats(t, e, ngx.Addr())
	reqs := ngx.WaitRequests(n+3, 5*time.Second)
	conns := bench.CountConnections(reqs)
	t.Logf("nginx: %d requests on %d connections", len(reqs), conns)
	if s.Requests != n+3 || len(s.Errors) != 0 {
		t.Fatalf("stats: %d requests, errors %v", s.Requests, s.Errors)
	}
	if conns > (n+3)/3+2 || s.Pool.Reused == 0 {
		t.Fatalf("%d connections for %d requests (reused %d): keep-alive not used", conns, n+3, s.Pool.Reused)
	}
	if s.Detached != 0 {
		t.Fatalf("detached %d: Go net connections never detach", s.Detached)
	}
}

// Config.GoNetIO holds for a group's plain-TCP peers too, origins and
// parents: a body far over the high-water mark, read slowly, is relayed
// with no detach (a netpoll connection detaches for it).
func TestGoNetIOGroupPeers(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	for _, goNet := range []bool{false, true} {
		for _, parent := range []bool{false, true} {
			peer := engine.Peer{Name: "n", Addr: ngx.Addr(), Parent: parent}
			e := startEngine(t, engine.Config{GoNetIO: goNet, BodyHighWater: 64 << 10,
				Groups: map[string]engine.GroupConfig{"g": {Peers: []engine.Peer{peer}}}})
			req := ngxRequest(t, ngx, "GET", "/1m", nil, 0)
			req.Upstream = engine.Upstream{Group: "g"}
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			resp, err := e.Do(ctx, req)
			if err != nil {
				cancel()
				t.Fatalf("GoNetIO %v, parent %v: %v", goNet, parent, err)
			}
			n := 0
			buf := make([]byte, 16<<10)
			for err == nil {
				var k int
				k, err = resp.Body.Read(buf)
				n += k
				time.Sleep(time.Millisecond)
			}
			resp.Body.Close()
			cancel()
			if err != io.EOF || resp.Status != 200 || n != bench.Size1M {
				t.Fatalf("GoNetIO %v, parent %v: status %d, %d bytes, %v", goNet, parent, resp.Status, n, err)
			}
			var detached uint64
			for _, s := range e.Stats() {
				detached += s.Detached
			}
			if goNet && detached != 0 || !goNet && detached == 0 {
				t.Errorf("GoNetIO %v, parent %v: %d detached connections", goNet, parent, detached)
			}
		}
	}
}
