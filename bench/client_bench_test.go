package bench

import (
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Client benchmarks: several HTTP clients GET /small from one real nginx
// (the fixture in nginx.go) in the same run, with 1 and 64 concurrent
// callers. Besides ns/op and allocations they report:
//
//	cpu-ns/op  user+system CPU time of this whole process (getrusage
//	           RUSAGE_SELF) over the timed loop, divided by b.N. nginx is
//	           another process, so its CPU is not included.
//	conns      TCP connections nginx saw from the client during the run
//	           (from its access log), to show that the client kept its
//	           connections alive.
//
// Run them with a bounded count, e.g.
//
//	GOMAXPROCS=2 go test -run '^$' -bench BenchmarkClient -benchtime 20000x -count 3 ./bench/
//
// # Adding a client
//
// A client is one small interface and a constructor, registered from an
// init function in its own file, client_<name>_test.go:
//
//	func init() {
//		registerClient("serverside", func(cfg clientConfig) (client, error) {
//			return newServersideClient(cfg)
//		})
//	}
//
// The benchmark and TestClients then include it. A client that also
// implements io.Closer is closed when its sub-benchmark ends.

// client is what the benchmarks need from an HTTP client: one GET, the
// reply's status and the number of body bytes read. It must be safe for
// concurrent use, read the whole body, and leave the connection reusable.
type client interface {
	Get(url string) (status int, bodyLen int, err error)
}

// clientConfig is what every client constructor is given.
type clientConfig struct {
	// Addr is the origin's "127.0.0.1:port".
	Addr string
	// MaxConns is how many connections the client should keep open to
	// the origin: its per-host limit and idle pool size. It is at least
	// the number of concurrent callers.
	MaxConns int
}

type clientCtor func(cfg clientConfig) (client, error)

var clientRegistry = map[string]clientCtor{}

// clientOrder is the order of the benchmark table; clients not named here
// come after, in name order.
var clientOrder = []string{"nethttp", "fasthttp", "hertz", "serverside"}

// registerClient adds a client to the benchmarks under name, which becomes
// the sub-benchmark name. Call it from init.
func registerClient(name string, ctor clientCtor) {
	if _, dup := clientRegistry[name]; dup {
		panic("bench: client " + name + " registered twice")
	}
	clientRegistry[name] = ctor
}

// registeredClients returns the registered client names in table order.
func registeredClients() []string {
	rank := make(map[string]int, len(clientOrder))
	for i, name := range clientOrder {
		rank[name] = i
	}
	names := make([]string, 0, len(clientRegistry))
	for name := range clientRegistry {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, iok := rank[names[i]]
		rj, jok := rank[names[j]]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		default:
			return names[i] < names[j]
		}
	})
	return names
}

// newClient builds a registered client and closes it, if it can be
// closed, when tb ends.
func newClient(tb testing.TB, name string, cfg clientConfig) client {
	tb.Helper()
	c, err := clientRegistry[name](cfg)
	if err != nil {
		tb.Fatalf("client %s: %v", name, err)
	}
	if cl, ok := c.(io.Closer); ok {
		tb.Cleanup(func() {
			if err := cl.Close(); err != nil {
				tb.Errorf("client %s: close: %v", name, err)
			}
		})
	}
	return c
}

// benchConcurrency is the number of concurrent callers of each
// sub-benchmark.
var benchConcurrency = []int{1, 64}

// benchMaxConns is the connection limit every client gets.
const benchMaxConns = 64

func BenchmarkClient(b *testing.B) {
	// keepalive_requests high enough that nginx never closes a connection
	// during a run, so every client is measured on reused connections.
	ngx := StartNginx(b, NginxOptions{KeepaliveTimeout: "75s", KeepaliveRequests: 100_000_000})
	url := ngx.URL("/small")
	for _, name := range registeredClients() {
		b.Run(name, func(b *testing.B) {
			for _, conc := range benchConcurrency {
				b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
					benchmarkClient(b, ngx, name, conc, url)
				})
			}
		})
	}
}

func benchmarkClient(b *testing.B, ngx *Nginx, name string, callers int, url string) {
	c := newClient(b, name, clientConfig{Addr: ngx.Addr(), MaxConns: benchMaxConns})
	logged := len(ngx.Requests())

	// Warm up: every caller makes a few requests, so the connections the
	// client will use are open before the clock starts.
	const warmPerCaller = 2
	if err := runCallers(callers, warmPerCaller, func() error { return checkSmall(c, url) }); err != nil {
		b.Fatalf("warm-up: %v", err)
	}

	var (
		failures atomic.Int64
		firstErr atomic.Value
	)
	fail := func(err error) {
		if failures.Add(1) == 1 {
			firstErr.Store(err)
		}
	}

	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	if callers == 1 {
		for i := 0; i < b.N; i++ {
			if err := checkSmall(c, url); err != nil {
				fail(err)
			}
		}
	} else {
		// RunParallel starts parallelism*GOMAXPROCS goroutines.
		procs := runtime.GOMAXPROCS(0)
		p := (callers + procs - 1) / procs
		if p*procs != callers {
			b.Logf("GOMAXPROCS=%d does not divide %d: running %d callers", procs, callers, p*procs)
		}
		b.SetParallelism(p)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := checkSmall(c, url); err != nil {
					fail(err)
				}
			}
		})
	}
	cpu1 := processCPU()
	b.StopTimer()

	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed; first: %v", n, b.N, firstErr.Load())
	}
	b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")

	want := logged + callers*warmPerCaller + b.N
	reqs := ngx.WaitRequests(want, 5*time.Second)
	if len(reqs) < want {
		b.Logf("nginx logged %d requests, want %d", len(reqs)-logged, want-logged)
	}
	b.ReportMetric(float64(CountConnections(reqs[logged:])), "conns")
}

// checkSmall GETs /small and checks the reply.
func checkSmall(c client, url string) error {
	status, n, err := c.Get(url)
	if err != nil {
		return err
	}
	if status != 200 || n != len(SmallBody) {
		return fmt.Errorf("GET %s: status %d, %d body bytes; want 200, %d", url, status, n, len(SmallBody))
	}
	return nil
}

// runCallers runs f perCaller times in each of callers goroutines and
// returns the first error.
func runCallers(callers, perCaller int, f func() error) error {
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perCaller; j++ {
				if err := f(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// processCPU returns the user plus system CPU time this process has used,
// in nanoseconds, over all its threads.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic("getrusage: " + err.Error())
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestClients checks every registered client against nginx: statuses,
// body lengths, connection reuse and concurrent use.
func TestClients(t *testing.T) {
	ngx := StartNginx(t, NginxOptions{})
	for _, name := range registeredClients() {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, name, clientConfig{Addr: ngx.Addr(), MaxConns: 8})
			logged := len(ngx.Requests())
			for _, tc := range []struct {
				path   string
				status int
				size   int
			}{
				{"/small", 200, len(SmallBody)},
				{"/16k", 200, Size16K},
				{"/1m", 200, Size1M},
				{"/status/204", 204, 0},
				{"/small", 200, len(SmallBody)},
			} {
				status, n, err := c.Get(ngx.URL(tc.path))
				if err != nil {
					t.Fatalf("GET %s: %v", tc.path, err)
				}
				if status != tc.status || n != tc.size {
					t.Errorf("GET %s: status %d, %d bytes; want %d, %d", tc.path, status, n, tc.status, tc.size)
				}
			}
			status, _, err := c.Get(ngx.URL("/status/404"))
			if err != nil || status != 404 {
				t.Errorf("GET /status/404: %d, %v; want 404", status, err)
			}
			reqs := ngx.WaitRequests(logged+6, 5*time.Second)
			if got := CountConnections(reqs[logged:]); got != 1 {
				t.Errorf("6 sequential requests used %d connections, want 1", got)
			}

			if err := runCallers(8, 20, func() error { return checkSmall(c, ngx.URL("/small")) }); err != nil {
				t.Errorf("concurrent: %v", err)
			}
			reqs = ngx.WaitRequests(logged+6+160, 5*time.Second)
			// A client may dial a little more than it keeps (a dial can
			// finish after another connection has come back), but not
			// one connection per request.
			got := CountConnections(reqs[logged:])
			t.Logf("8 concurrent callers, 160 requests: %d connections", got)
			if got > 16 {
				t.Errorf("8 concurrent callers with MaxConns 8 used %d connections", got)
			}
		})
	}
}

func TestRegisteredClientsOrder(t *testing.T) {
	saved := clientRegistry
	defer func() { clientRegistry = saved }()
	clientRegistry = map[string]clientCtor{}
	for _, name := range []string{"zeta", "hertz", "alpha", "serverside", "nethttp", "fasthttp"} {
		registerClient(name, nil)
	}
	got := fmt.Sprint(registeredClients())
	if want := "[nethttp fasthttp hertz serverside alpha zeta]"; got != want {
		t.Errorf("order %s, want %s", got, want)
	}
}
