package main

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// TestPipelinedOriginThroughProxy: with "?pipeline=8" on its -origin, the
// proxy pipelines the GETs and HEADs of many keep-alive clients to a real
// nginx that closes every connection after three requests: every client
// gets its own exact response, the metrics count pipelined requests, and
// no error.
func TestPipelinedOriginThroughProxy(t *testing.T) {
	ng := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 3})
	px, adm := startProxyAdmin(t, "http://"+ng.Addr()+"?pipeline=8")
	const clients, each = 24, 20
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for i := 0; i < each; i++ {
				method, want := http.MethodGet, bench.SmallBody
				if (c+i)%3 == 0 {
					method, want = http.MethodHead, ""
				}
				req, _ := http.NewRequest(method, "http://"+px+"/small", nil)
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("%s /small: %v", method, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(b) != want || resp.ContentLength != int64(len(bench.SmallBody)) {
					t.Errorf("%s /small: %d, Content-Length %d, body %q, err %v", method, resp.StatusCode, resp.ContentLength, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m := scrapeMetrics(t, adm)
	pipelined := m.sum("serverside_upstream_pipelined_total")
	unanswered := m.sum("serverside_upstream_unanswered_total")
	errs := m.sum("serverside_upstream_errors_total")
	t.Logf("pipelined %v, unanswered %v, upstream errors %v", pipelined, unanswered, errs)
	if pipelined == 0 || errs != 0 {
		t.Errorf("pipelined %v, upstream errors %v: want pipelined requests and no error", pipelined, errs)
	}
	if got := len(ng.WaitRequests(clients*each, 5*time.Second)); got < clients*each {
		t.Errorf("nginx logged %d requests, want at least %d", got, clients*each)
	}
}
