package bench

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkClientRounds compares the registered clients side by side: it
// runs them interleaved, client after client, for several rounds, and
// reports each client's median CPU per request. This machine's speed drifts
// by ±15% from one minute to the next, so BenchmarkClient's
// one-client-after-the-other figures cannot rank clients that are within
// that much of each other; medians of interleaved rounds can.
//
//	GOMAXPROCS=2 go test -run '^$' -bench BenchmarkClientRounds -benchtime 1x ./bench/
//
// Flags (after -args): -rounds (default 7), -round.requests (requests per
// client per caller count per round, default 20000), -round.clients
// (comma-separated names; default all). It reports
// "<client>-c<callers>-cpu-ns/op" metrics and prints a table with each
// client's ratio to serverside.
func BenchmarkClientRounds(b *testing.B) {
	names := registeredClients()
	if *roundClients != "" {
		names = strings.Split(*roundClients, ",")
		for _, n := range names {
			if _, ok := clientRegistry[n]; !ok {
				b.Fatalf("-round.clients: no client %q", n)
			}
		}
	}
	ngx := StartNginx(b, NginxOptions{KeepaliveTimeout: "75s", KeepaliveRequests: 100_000_000})
	url := ngx.URL("/small")
	type key struct {
		name    string
		callers int
	}
	clients := map[key]client{}
	for _, n := range names {
		for _, c := range benchConcurrency {
			cl := newClient(b, n, clientConfig{Addr: ngx.Addr(), MaxConns: benchMaxConns})
			if err := runCallers(c, 2, func() error { return checkSmall(cl, url) }); err != nil {
				b.Fatalf("%s warm-up: %v", n, err)
			}
			clients[key{n, c}] = cl
		}
	}
	samples := map[key][]float64{}
	for i := 0; i < b.N; i++ {
		for r := 0; r < *rounds; r++ {
			// Rotate the start so no client always runs first.
			for j := range names {
				n := names[(j+r)%len(names)]
				for _, c := range benchConcurrency {
					k := key{n, c}
					ns, err := roundCPU(clients[k], url, c, *roundRequests)
					if err != nil {
						b.Fatalf("%s c%d: %v", n, c, err)
					}
					samples[k] = append(samples[k], ns)
				}
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "median CPU ns per request over %d interleaved rounds of %d requests (ratio to serverside):\n", *rounds, *roundRequests)
	for _, c := range benchConcurrency {
		base := median(samples[key{"serverside", c}])
		for _, n := range names {
			m := median(samples[key{n, c}])
			b.ReportMetric(m, fmt.Sprintf("%s-c%d-cpu-ns/op", n, c))
			ratio := ""
			if base > 0 {
				ratio = fmt.Sprintf("%.2f", m/base)
			}
			fmt.Fprintf(&sb, "  c%-3d %-18s %8.0f  %s\n", c, n, m, ratio)
		}
	}
	// Printed, not logged: the testing package cuts a benchmark's log
	// after ten lines.
	fmt.Print(sb.String())
}

var (
	rounds        = flag.Int("rounds", 7, "BenchmarkClientRounds: interleaved rounds")
	roundRequests = flag.Int("round.requests", 20000, "BenchmarkClientRounds: requests per client, caller count and round")
	roundClients  = flag.String("round.clients", "", "BenchmarkClientRounds: comma-separated client names (default all)")
)

// roundCPU makes n GETs with callers concurrent callers and returns this
// process's CPU nanoseconds per request.
func roundCPU(c client, url string, callers, n int) (float64, error) {
	runtime.GC() // the previous client's garbage is not this one's cost
	per := n / callers
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	start := time.Now()
	cpu0 := processCPU()
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < per; j++ {
				if err := checkSmall(c, url); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu1 := processCPU()
	if first != nil {
		return 0, first
	}
	if time.Since(start) > 2*time.Minute {
		return 0, fmt.Errorf("%d requests took %v", n, time.Since(start))
	}
	return float64(cpu1-cpu0) / float64(per*callers), nil
}

// median returns the middle of xs (the mean of the two middles for an
// even count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
