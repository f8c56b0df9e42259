// Package bench is the benchmark harness.
//
// It drives wrk through proxies built on the engine against local nginx and
// HAProxy origins, and runs client benchmarks that compare the engine with
// other HTTP clients. Results are recorded in docs/benchmarks.md.
package bench
