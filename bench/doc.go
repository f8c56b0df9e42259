// Package bench is the benchmark harness.
//
// It drives wrk through proxies built on the engine against local nginx and
// HAProxy origins, and runs client benchmarks that compare the engine with
// other HTTP clients. Results are recorded in docs/benchmarks.md.
//
// StartNginx starts a real nginx on 127.0.0.1 for a test or benchmark, with
// a fixed set of locations (/small, /16k, /1m, /delay, /echo, /status/NNN)
// and an access log that tells how many connections and requests it saw.
// Other packages' tests can use it too, with Origin, an in-process upstream
// for fault injection, and CheckLeaks, which fails a test
// that leaves goroutines or file descriptors behind.
//
// The client benchmarks (BenchmarkClient, in client_bench_test.go) GET
// /small from one nginx with net/http, fasthttp and hertz, and report
// wall time, allocations and the process's CPU time per request. A client
// joins them by implementing one small interface in one file; see
// client_bench_test.go.
package bench
