package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestApacheIdleTimeoutThroughProxy: net/http clients send rounds of 4
// concurrent GETs through the proxy, in reverse mode (-origin) and in
// forward mode, to a real Apache that closes a kept-alive connection a
// second after its last response (KeepAliveTimeout 1), paused about that
// second apart. The proxy's upstream requests say "Connection: keep-alive"
// (the clients' own Connection fields are hop-by-hop), so Apache announces
// its timeout and the pool retires each connection before Apache closes
// it: no request meets the close. The clients see only 200s, and Apache
// answers each GET once.
func TestApacheIdleTimeoutThroughProxy(t *testing.T) {
	if bench.ApacheBinary() == "" {
		t.Skip("apache2 not installed")
	}
	for _, mode := range []string{"reverse", "forward"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			a := bench.StartApache(t, bench.ApacheOptions{Extra: []string{"KeepAliveTimeout 1"}})
			var origins []string
			if mode == "reverse" {
				origins = []string{a.URL("")}
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			p, err := newProxy(logger, origins, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
			if err != nil {
				t.Fatal(err)
			}
			px := serveProxy(t, p)
			tr := &http.Transport{MaxIdleConnsPerHost: 4}
			target := "http://" + px + "/small"
			if mode == "forward" {
				tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: px})
				target = a.URL("/small")
			}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			defer tr.CloseIdleConnections()

			const callers = 4
			// Rounds after a pause of about Apache's second, each followed
			// by one after a shorter pause.
			pauses := []time.Duration{
				0, 1000 * time.Millisecond, 300 * time.Millisecond, 1001 * time.Millisecond, 0,
				999 * time.Millisecond, 600 * time.Millisecond, 1002 * time.Millisecond, 200 * time.Millisecond,
				1000 * time.Millisecond, 100 * time.Millisecond, 1003 * time.Millisecond,
			}
			for r, pause := range pauses {
				time.Sleep(pause)
				var wg sync.WaitGroup
				for i := 0; i < callers; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := client.Get(target)
						if err != nil {
							t.Errorf("round %d (after %v idle), client %d: %v", r, pause, i, err)
							return
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil || resp.StatusCode != 200 || string(body) != bench.SmallBody {
							t.Errorf("round %d (after %v idle), client %d: %d %q %v", r, pause, i, resp.StatusCode, body, err)
						}
					}()
				}
				wg.Wait()
			}
			n := len(pauses) * callers

			var s engine.UpstreamStats
			for k, st := range p.eng.Stats() {
				if strings.HasPrefix(k, a.Addr()) {
					s = st
					t.Logf("engine %s: requests %d, races hit %d, retried %d, dialed %d, reused %d, errors %v",
						k, st.Requests, st.RacesHit, st.RacesRetried, st.Pool.Dialed, st.Pool.Reused, st.Errors)
				}
			}
			var lines []string
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if lines = a.AccessLog(); len(lines) >= n || time.Now().After(deadline) {
					break
				}
			}
			ports := map[string]bool{}
			for _, l := range lines {
				if !strings.HasPrefix(l, `200 "GET /small HTTP/1.1" - `) {
					t.Errorf("apache logged %q", l)
				}
				ports[l[strings.LastIndexByte(l, ' ')+1:]] = true
			}
			t.Logf("apache: %d requests on %d connections", len(lines), len(ports))
			if len(lines) != n {
				t.Errorf("apache logged %d requests, want %d (each GET answered once)", len(lines), n)
			}
			if s.Requests != uint64(n) || len(s.Errors) != 0 || s.RacesHit != 0 || s.Pool.Closed.HintExpired == 0 ||
				len(ports) != int(s.Pool.Dialed) {
				t.Errorf("engine: %d requests, errors %v, races hit %d, closed for the hint %d, dialed %d; want %d, none, none, some, %d",
					s.Requests, s.Errors, s.RacesHit, s.Pool.Closed.HintExpired, s.Pool.Dialed, n, len(ports))
			}
		})
	}
}
