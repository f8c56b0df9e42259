package main

import (
	"context"

	"github.com/cloudwego/netpoll"
	"github.com/panjf2000/ants/v2"
)

// netpoll runs every OnRequest call through a process-wide runner, by
// default its gopool, which starts a fresh goroutine for most calls: the
// relay's deep call chain then grows each new goroutine's stack again
// (newstack/copystack took 5% of the proxy's CPU under wrk). An ants pool
// keeps its workers, and their grown stacks, for a second between calls.
// Measured on /small at 64 connections, three interleaved 5 s wrk runs
// each: 19.5–31.0 CPU µs per request (median 23.0) against 23.6–33.9
// (median 28.2) with the gopool.
//
// netpoll asks for its configuration at init, before any poller runs a
// task; the pool is created here too, so that it predates every test's
// goroutine baseline.
func init() {
	workers, err := ants.NewPool(-1) // unbounded: netpoll decides how many calls run
	if err != nil {
		return // keep netpoll's gopool
	}
	_ = netpoll.Configure(netpoll.Config{
		LoadBalance: -1, // keep netpoll's default
		Runner: func(_ context.Context, f func()) {
			if workers.Submit(f) != nil {
				go f()
			}
		},
	})
}
