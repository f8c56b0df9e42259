package main

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the harness takes from one wrk run's output.
type wrkResult struct {
	Requests    int64         // "N requests in D, S read"
	Elapsed     time.Duration // D in that line
	RPS         float64       // "Requests/sec:"
	P50, P99    time.Duration // "Latency Distribution" (wrk --latency)
	Non2xx      int64         // "Non-2xx or 3xx responses:" (absent when 0)
	SockConnect int64         // "Socket errors: connect C, read R, write W, timeout T"
	SockRead    int64
	SockWrite   int64
	SockTimeout int64
}

// Errors is every failed request wrk counted: bad statuses plus socket
// errors.
func (r wrkResult) Errors() int64 {
	return r.Non2xx + r.SockConnect + r.SockRead + r.SockWrite + r.SockTimeout
}

// errWrkOutput reports wrk output without the lines every run prints.
var errWrkOutput = errors.New("unrecognised wrk output")

// parseWrk parses the text wrk 4 prints with --latency. It relies only on
// line prefixes, not on column positions, and accepts every duration unit
// wrk prints (us, ms, s, m, h).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveReqs, haveP50, haveP99 bool
	inDist := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
			}
			r.RPS, haveRPS = v, true
		case strings.Contains(line, " requests in "):
			// "489093 requests in 5.00s, 71.37MB read"
			f := strings.Fields(line)
			if len(f) < 4 || f[1] != "requests" || f[2] != "in" {
				return r, fmt.Errorf("%w: %q", errWrkOutput, line)
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
			}
			d, err := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
			}
			r.Requests, r.Elapsed, haveReqs = n, d, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
			}
			r.Non2xx = n
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for _, part := range strings.Split(strings.TrimPrefix(line, "Socket errors:"), ",") {
				f := strings.Fields(part)
				if len(f) != 2 {
					return r, fmt.Errorf("%w: %q", errWrkOutput, line)
				}
				n, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
				}
				switch f[0] {
				case "connect":
					r.SockConnect = n
				case "read":
					r.SockRead = n
				case "write":
					r.SockWrite = n
				case "timeout":
					r.SockTimeout = n
				default:
					return r, fmt.Errorf("%w: unknown socket error kind %q", errWrkOutput, f[0])
				}
			}
		case inDist:
			// "50%  620.00us"; the block ends at the first other line.
			f := strings.Fields(line)
			if len(f) != 2 || !strings.HasSuffix(f[0], "%") {
				inDist = false
				continue
			}
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("%w: %q: %v", errWrkOutput, line, err)
			}
			switch f[0] {
			case "50%":
				r.P50, haveP50 = d, true
			case "99%":
				r.P99, haveP99 = d, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	var missing []string
	if !haveReqs {
		missing = append(missing, `"requests in"`)
	}
	if !haveRPS {
		missing = append(missing, `"Requests/sec:"`)
	}
	if !haveP50 || !haveP99 {
		missing = append(missing, "latency distribution (50%, 99%; was --latency given?)")
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("%w: missing %s", errWrkOutput, strings.Join(missing, ", "))
	}
	return r, nil
}
