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
	netpoll.LinkBufferCap = linkBufferCap
	cfg := netpoll.Config{
		BufferSize:  bufferSize,
		LoadBalance: -1, // keep netpoll's default
	}
	// unbounded: netpoll decides how many calls run; on failure netpoll
	// keeps its gopool.
	if workers, err := ants.NewPool(-1); err == nil {
		cfg.Runner = func(_ context.Context, f func()) {
			if workers.Submit(f) != nil {
				go f()
			}
		}
	}
	_ = netpoll.Configure(cfg)
}

// netpoll's per-connection buffers. By default a connection keeps an 8 KiB
// input node and, once it has written, a 4 KiB output node for its whole
// life: 12 of the 15.7 KiB an idle client connection cost. Smaller first
// nodes cost nothing measurable on the way (netpoll doubles a connection's
// read size whenever a read fills it, and sizes a write's node to the
// write): proxybench, 3 interleaved rounds, same binary, 1024/512 against
// the defaults: /small 29.2 against 28.9 CPU µs per request, /16k 40.0
// against 41.7, /1m 634 against 631; idle client connection 8.5 KiB
// against 15.7.
const (
	bufferSize    = 1024 // the input buffer's first node and read size
	linkBufferCap = 512  // the smallest node netpoll allocates
)
