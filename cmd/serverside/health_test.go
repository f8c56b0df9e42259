package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// An origin that fails its active health check takes no requests, while
// the healthy one takes them all; the flags come from a -config file.
func TestActiveHealthCheck(t *testing.T) {
	needTools(t)
	sick := bench.StartNginx(t, bench.NginxOptions{Locations: `        location = /healthz { return 503; }`})
	well := bench.StartNginx(t, bench.NginxOptions{Locations: `        location = /healthz { return 204; }`})

	file := filepath.Join(t.TempDir(), "serverside.json")
	conf := `{"health": {"path": "/healthz", "interval": "50ms", "timeout": "1s", "status": 204, "max_fails": 2}}`
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var x cliExtras
	x.register(fs)
	var h healthFlags
	h.register(fs)
	if err := fs.Parse([]string{"-config", file, "-health-interval", "40ms"}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if h.path != "/healthz" || h.interval != 40*time.Millisecond || h.status != 204 || h.maxFails != 2 || h.timeout != time.Second {
		t.Fatalf("health flags %+v: the file sets path, status, max_fails and timeout, the command line the interval", h)
	}

	var cfg engine.Config
	if err := withPeers(&cfg, []string{"http://" + sick.Addr(), "http://" + well.Addr()}, nil, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	h.apply(&cfg)
	if got := cfg.Groups[peerGroup].Health; got.CheckPath != "/healthz" || got.CheckStatus != 204 || got.MaxFails != 2 {
		t.Fatalf("group health %+v", got)
	}
	addr := startProxyConfig(t, cfg)

	// Wait until the first checks have run and marked the sick origin down.
	deadline := time.Now().Add(10 * time.Second)
	for countPath(sick.Requests(), "/healthz") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	const n = 20
	for i := 0; i < n; i++ {
		if body, _ := curl(t, "http://"+addr+"/small"); body != bench.SmallBody {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
	well.WaitRequests(n, 5*time.Second)
	if got := countPath(sick.Requests(), "/small"); got != 0 {
		t.Errorf("the origin failing its health check served %d of %d requests, want 0", got, n)
	}
	if got := countPath(well.Requests(), "/small"); got != n {
		t.Errorf("the healthy origin served %d of %d requests, want all", got, n)
	}
}

func countPath(reqs []bench.LoggedRequest, path string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r.URI, path) {
			n++
		}
	}
	return n
}
