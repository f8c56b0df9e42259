package engine_test

import (
	"context"
	"testing"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestExchangeRequestStaysOnStack: a caller's Request (here a copy on
// its stack for each call, as a proxy handler builds one) does not
// escape through Exchange: a GET to nginx, direct or through a group,
// costs the caller no allocation once the pool is warm. nginx is a
// process of its own, so the count is the engine's alone.
func TestExchangeRequestStaysOnStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	e := startEngine(t, engine.Config{Shards: 1, Groups: map[string]engine.GroupConfig{
		"web": {Peers: []engine.Peer{{Name: "a", Addr: ngx.Addr()}}},
	}})
	h := groupHead(t, "/small", "alloc.test")
	for _, up := range []engine.Upstream{{Addr: ngx.Addr()}, {Group: "web"}} {
		req := &engine.Request{Upstream: up, Head: h}
		var s statusSink
		get := func() {
			r := *req
			s = statusSink{}
			if err := e.Exchange(context.Background(), &r, &s); err != nil || s.status != 200 {
				t.Fatalf("%+v: %d, %v", up, s.status, err)
			}
		}
		get() // the connection, pooled
		if n := testing.AllocsPerRun(200, get); n >= 1 {
			t.Errorf("%+v: %v allocations per Exchange, want none", up, n)
		}
	}
}
