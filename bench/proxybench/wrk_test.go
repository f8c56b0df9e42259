package main

import (
	"errors"
	"testing"
	"time"
)

// wrkClean is wrk 4.1.0's output for a run without errors.
const wrkClean = `Running 5s test @ http://127.0.0.1:41234/small
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   651.03us  201.44us   5.72ms   83.79%
    Req/Sec    98.31k     4.07k  102.54k    86.00%
  Latency Distribution
     50%  620.00us
     75%  730.00us
     90%  850.00us
     99%    1.35ms
  489093 requests in 5.00s, 71.37MB read
Requests/sec:  97818.32
Transfer/sec:     14.27MB
`

// wrkErrors has socket errors, bad statuses and latencies in seconds and
// minutes.
const wrkErrors = `Running 5s test @ http://127.0.0.1:41234/small
  1 threads and 1000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21s   402.11ms   4.99s    71.00%
    Req/Sec     1.02k   310.00     2.00k    60.00%
  Latency Distribution
     50%    1.10s 
     75%    1.50s 
     90%    2.00s 
     99%    1.02m 
  5012 requests in 5.10s, 740.55KB read
  Socket errors: connect 3, read 17, write 2, timeout 120
  Non-2xx or 3xx responses: 45
Requests/sec:    982.74
Transfer/sec:    145.20KB
`

func TestParseWrkClean(t *testing.T) {
	r, err := parseWrk(wrkClean)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{
		Requests: 489093,
		Elapsed:  5 * time.Second,
		RPS:      97818.32,
		P50:      620 * time.Microsecond,
		P99:      1350 * time.Microsecond,
	}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	if r.Errors() != 0 {
		t.Errorf("Errors() = %d, want 0", r.Errors())
	}
}

func TestParseWrkErrors(t *testing.T) {
	r, err := parseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{
		Requests:    5012,
		Elapsed:     5100 * time.Millisecond,
		RPS:         982.74,
		P50:         1100 * time.Millisecond,
		P99:         61200 * time.Millisecond,
		Non2xx:      45,
		SockConnect: 3,
		SockRead:    17,
		SockWrite:   2,
		SockTimeout: 120,
	}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	if got := r.Errors(); got != 45+3+17+2+120 {
		t.Errorf("Errors() = %d, want %d", got, 45+3+17+2+120)
	}
}

func TestParseWrkRejects(t *testing.T) {
	for name, out := range map[string]string{
		"empty": "",
		"no --latency": `Running 5s test @ http://127.0.0.1:1/small
  1 threads and 64 connections
  489093 requests in 5.00s, 71.37MB read
Requests/sec:  97818.32
`,
		"connect failure": "unable to connect to 127.0.0.1:1 Connection refused\n",
		"bad rate": `  Latency Distribution
     50%  620.00us
     99%    1.35ms
  10 requests in 5.00s, 1KB read
Requests/sec:  lots
`,
		"bad duration unit": `  Latency Distribution
     50%  620.00xs
     99%    1.35ms
  10 requests in 5.00s, 1KB read
Requests/sec:  2.00
`,
		"unknown socket error": `  Latency Distribution
     50%  620.00us
     99%    1.35ms
  10 requests in 5.00s, 1KB read
  Socket errors: connect 0, reset 1
Requests/sec:  2.00
`,
	} {
		t.Run(name, func(t *testing.T) {
			if r, err := parseWrk(out); !errors.Is(err, errWrkOutput) {
				t.Errorf("parseWrk = %+v, %v; want an error wrapping errWrkOutput", r, err)
			}
		})
	}
}
