package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// benchCase is one wrk workload.
type benchCase struct {
	name    string
	path    string
	conns   int
	forward bool // absolute-form targets, as to a forward proxy
	tunnel  bool // the 1 GiB download of tunnel.go instead of wrk
	kinds   []proxyKind
	note    string
}

// reverseKinds are the targets of the reverse-proxy cases.
var reverseKinds = []proxyKind{kindServerside, kindServersidePipelined, kindNginx, kindHAProxy, kindHAProxyTCP, kindNone}

// dropPipelined leaves serverside-pipelined out of the cases (-pipeline 0).
func dropPipelined() {
	out := reverseKinds[:0:0]
	for _, k := range reverseKinds {
		if k != kindServersidePipelined {
			out = append(out, k)
		}
	}
	reverseKinds = out
}

// idleKinds are the processes whose memory per idle client connection is
// measured.
var idleKinds = []proxyKind{kindServerside, kindNginx, kindHAProxy, kindHAProxyTCP}

// addServersideB adds the serverside-b variant after serverside to every
// HTTP case and to the idle-memory measurement.
func addServersideB() {
	withB := func(ks []proxyKind) []proxyKind {
		out := make([]proxyKind, 0, len(ks)+1)
		for _, k := range ks {
			out = append(out, k)
			if k == kindServerside {
				out = append(out, kindServersideB)
			}
		}
		return out
	}
	reverseKinds, idleKinds, forwardKinds = withB(reverseKinds), withB(idleKinds), withB(forwardKinds)
}

// isServerside reports serverside or one of its variants.
func isServerside(k proxyKind) bool {
	return k == kindServerside || k == kindServersideB || k == kindServersidePipelined
}

// forwardKinds are the targets of the forward-proxy case.
var forwardKinds = []proxyKind{kindServerside, kindNginx, kindHAProxy, kindNone}

func allCases() []benchCase {
	return []benchCase{
		{name: "small-c64", path: "/small", conns: 64, kinds: reverseKinds, note: "GET /small (13-byte body), 64 connections"},
		{name: "16k-c64", path: "/16k", conns: 64, kinds: reverseKinds, note: "GET /16k (16 KiB body), 64 connections"},
		{name: "1m-c8", path: "/1m", conns: 8, kinds: reverseKinds, note: "GET /1m (1 MiB body), 8 connections"},
		{name: "small-c1000", path: "/small", conns: 1000, kinds: reverseKinds, note: "GET /small, 1,000 connections"},
		// nginx and haproxy are not forward proxies; they get the same
		// absolute-form requests and send them to their fixed server.
		{name: "forward-c64", path: "/small", conns: 64, forward: true,
			kinds: forwardKinds,
			note:  "GET http://origin/small (absolute form), 64 connections; serverside in forward mode, nginx and haproxy with their fixed server"},
		{name: "tunnel-1g", path: "/1g", conns: 1, tunnel: true, kinds: tunnelKinds,
			note: "one 1 GiB download with curl: through a CONNECT tunnel of serverside, through haproxy in TCP mode, and direct (table below)"},
	}
}

func caseNames() []string {
	var names []string
	for _, c := range allCases() {
		names = append(names, c.name)
	}
	return names
}

// runResult is one wrk run against one proxy.
type runResult struct {
	wrk      wrkResult
	cpuUS    float64 // proxy CPU per request in microseconds; -1 without a proxy
	newConns int     // connections the origin accepted during the run
}

// report collects the runs and prints their medians.
type report struct {
	cfg       config
	started   time.Time
	machine   string
	loadStart string
	runs      map[string]map[proxyKind][]runResult
	idle      map[proxyKind][]float64
	tunnel    map[proxyKind][]tunnelResult
	failures  []string
}

func newReport(cfg config, machine string) *report {
	return &report{
		cfg:       cfg,
		started:   time.Now().UTC(),
		machine:   machine,
		loadStart: loadAverage(),
		runs:      make(map[string]map[proxyKind][]runResult),
		idle:      make(map[proxyKind][]float64),
		tunnel:    make(map[proxyKind][]tunnelResult),
	}
}

func (r *report) add(c benchCase, k proxyKind, res runResult) {
	if r.runs[c.name] == nil {
		r.runs[c.name] = make(map[proxyKind][]runResult)
	}
	r.runs[c.name][k] = append(r.runs[c.name][k], res)
}

func (r *report) addIdle(k proxyKind, kib float64) { r.idle[k] = append(r.idle[k], kib) }

func (r *report) fail(msg string) { r.failures = append(r.failures, msg) }

// median returns the median of v (the mean of the middle two for an even
// count); NaN-free input assumed.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// summary is the per-column medians of one case and proxy.
type summary struct {
	n                                                     int
	rps, p50ms, p99ms, cpu                                float64
	conns                                                 float64
	errors                                                int64
	non2xx, sockConnect, sockRead, sockWrite, sockTimeout int64
	rpsMin, rpsMax                                        float64
	cpuMin, cpuMax                                        float64
	hasCPU                                                bool
}

func summarize(runs []runResult) summary {
	var s summary
	var rps, p50, p99, cpu, conns []float64
	for _, r := range runs {
		rps = append(rps, r.wrk.RPS)
		p50 = append(p50, float64(r.wrk.P50)/float64(time.Millisecond))
		p99 = append(p99, float64(r.wrk.P99)/float64(time.Millisecond))
		conns = append(conns, float64(r.newConns))
		if r.cpuUS >= 0 {
			cpu = append(cpu, r.cpuUS)
		}
		s.errors += r.wrk.Errors()
		s.non2xx += r.wrk.Non2xx
		s.sockConnect += r.wrk.SockConnect
		s.sockRead += r.wrk.SockRead
		s.sockWrite += r.wrk.SockWrite
		s.sockTimeout += r.wrk.SockTimeout
	}
	s.n = len(runs)
	s.rps, s.p50ms, s.p99ms, s.conns = median(rps), median(p50), median(p99), median(conns)
	s.rpsMin, s.rpsMax = slices.Min(rps), slices.Max(rps)
	if len(cpu) > 0 {
		s.hasCPU = true
		s.cpu = median(cpu)
		s.cpuMin, s.cpuMax = slices.Min(cpu), slices.Max(cpu)
	}
	return s
}

// errorText is the error count with its kinds, e.g. "12 (timeout 12)".
func (s summary) errorText() string {
	if s.errors == 0 {
		return "0"
	}
	var kinds []string
	for _, k := range []struct {
		name string
		n    int64
	}{{"non-2xx/3xx", s.non2xx}, {"connect", s.sockConnect}, {"read", s.sockRead}, {"write", s.sockWrite}, {"timeout", s.sockTimeout}} {
		if k.n > 0 {
			kinds = append(kinds, k.name+" "+thousands(float64(k.n)))
		}
	}
	return thousands(float64(s.errors)) + " (" + strings.Join(kinds, ", ") + ")"
}

// label names a proxy in a case's rows.
func label(c benchCase, k proxyKind) string {
	switch {
	case k == kindNone:
		return "none (wrk → origin)"
	case c.forward && isServerside(k):
		return string(k) + " (forward mode)"
	case c.forward:
		return string(k) + " (fixed server)"
	}
	return string(k)
}

// command is how this run was invoked.
func (r *report) command() string {
	cmd := "go run ./bench/proxybench"
	if len(r.cfg.args) > 0 {
		cmd += " " + strings.Join(r.cfg.args, " ")
	}
	return cmd
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Proxy benchmark, %s\n\n", r.started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- **Command:** `%s` (rounds: %d; each wrk run: %s after an unmeasured warm-up of %s on the same proxy process)\n", r.command(), r.cfg.rounds, r.cfg.duration, r.cfg.warmup)
	fmt.Fprintf(&b, "- **Machine:** %s\n", r.machine)
	fmt.Fprintf(&b, "- **Load average** (1, 5, 15 min) at the start: %s; at the end: %s (a load above the CPU count means other work shared the CPUs).\n", r.loadStart, loadAverage())
	pin := "proxies on CPU 0, wrk and the origin on CPU 1 (taskset)"
	if !r.cfg.pin {
		pin = "nothing pinned"
	}
	fmt.Fprintf(&b, "- **Pinning:** %s. serverside runs with GOMAXPROCS=2 and -shards 1.\n", pin)
	fmt.Fprintf(&b, "- **Values:** medians over the rounds, column by column; errors are summed over the rounds; the req/s and CPU ranges are min–max over the rounds.\n\n")

	if len(r.runs) > 0 {
		fmt.Fprintf(&b, "| case | proxy | req/s | req/s range | p50 ms | p99 ms | errors | proxy CPU µs/req | CPU range | CPU vs nginx | new upstream conns |\n")
		fmt.Fprintf(&b, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	}
	for _, c := range allCases() {
		byKind := r.runs[c.name]
		if byKind == nil {
			continue
		}
		var nginxCPU float64
		if runs := byKind[kindNginx]; len(runs) > 0 {
			if s := summarize(runs); s.hasCPU {
				nginxCPU = s.cpu
			}
		}
		for _, k := range c.kinds {
			runs := byKind[k]
			if len(runs) == 0 {
				continue
			}
			s := summarize(runs)
			cpu, cpuRange, vs := "—", "—", "—"
			if s.hasCPU {
				cpu = fmt.Sprintf("%.1f", s.cpu)
				cpuRange = fmt.Sprintf("%.1f–%.1f", s.cpuMin, s.cpuMax)
				if nginxCPU > 0 {
					vs = fmt.Sprintf("%.2f", s.cpu/nginxCPU)
				}
			}
			n := ""
			if s.n != r.cfg.rounds {
				n = fmt.Sprintf(" (%d of %d runs)", s.n, r.cfg.rounds)
			}
			fmt.Fprintf(&b, "| %s | %s%s | %s | %s–%s | %.2f | %.2f | %s | %s | %s | %s | %s |\n",
				c.name, label(c, k), n, thousands(s.rps), thousands(s.rpsMin), thousands(s.rpsMax),
				s.p50ms, s.p99ms, s.errorText(), cpu, cpuRange, vs, strconv.FormatFloat(s.conns, 'f', -1, 64))
		}
	}
	r.tunnelMarkdown(&b)
	b.WriteString("\nCases:\n\n")
	for _, c := range allCases() {
		if r.runs[c.name] != nil || c.tunnel && len(r.tunnel) > 0 {
			fmt.Fprintf(&b, "- `%s`: %s.\n", c.name, c.note)
		}
	}

	if len(r.idle) > 0 {
		fmt.Fprintf(&b, "\nMemory per idle client connection (%d keep-alive connections, one request each; VmRSS summed over the proxy's processes; median over the rounds):\n\n", r.cfg.idle)
		b.WriteString("| proxy | KiB per connection | range |\n| --- | ---: | ---: |\n")
		for _, k := range idleKinds {
			v := r.idle[k]
			if len(v) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s | %.1f | %.1f–%.1f |\n", k, median(v), slices.Min(v), slices.Max(v))
		}
	}
	if len(r.failures) > 0 {
		b.WriteString("\nFailed runs (left out of the medians):\n\n")
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	return b.String()
}

// thousands formats a rate as an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
