package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The tunnel case: one 1 GiB download through a CONNECT tunnel of the
// demo (curl -p -x), through haproxy in TCP mode, and straight from the
// origin, with curl pinned beside the origin. It measures throughput and
// the proxy's CPU seconds per GiB, which is where splice(2) shows.

// tunnelSize is the size of the origin's /1g: a sparse file, so it costs
// no disk and nginx sends it from the page cache.
const tunnelSize = 1 << 30

// tunnelKinds are the targets of the tunnel case.
var tunnelKinds = []proxyKind{kindServerside, kindHAProxyTCP, kindNone}

// tunnelResult is one download.
type tunnelResult struct {
	bytes  int64
	secs   float64 // curl's total time
	cpuSec float64 // proxy CPU seconds; -1 without a proxy
}

func (t tunnelResult) mibps() float64 { return float64(t.bytes) / (1 << 20) / t.secs }

func (t tunnelResult) cpuPerGiB() float64 {
	if t.cpuSec < 0 {
		return -1
	}
	return t.cpuSec / (float64(t.bytes) / (1 << 30))
}

// writeSparse makes path a sparse file of size bytes (zeros).
func writeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// measureTunnel downloads /1g once through proxy k.
func (e *env) measureTunnel(ctx context.Context, o *origin, k proxyKind) (tunnelResult, error) {
	var p *proc
	args := []string{"-sS", "--max-time", "300", "-o", os.DevNull, "-w", "%{size_download} %{time_total} %{http_code}"}
	url := "http://" + o.addr + "/1g"
	if k != kindNone {
		var addr string
		var err error
		// serverside in forward mode: CONNECT to the origin's port.
		p, addr, err = e.startProxy(k, o, k == kindServerside)
		if err != nil {
			return tunnelResult{}, err
		}
		defer e.procs.stop(p)
		if k == kindServerside {
			args = append(args, "-p", "-x", "http://"+addr)
		} else {
			url = "http://" + addr + "/1g"
		}
	}
	var tree []int
	var cpu0 uint64
	if p != nil {
		tree = processTree(p.PID())
		var err error
		if cpu0, err = treeCPU(tree); err != nil {
			return tunnelResult{}, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	argv := append(append(append([]string{}, e.pinLoad...), "curl"), append(args, url)...)
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	out, err := cmd.Output()
	if err != nil {
		return tunnelResult{}, fmt.Errorf("%s: %w (%s)", strings.Join(argv, " "), err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		return tunnelResult{}, fmt.Errorf("curl -w: %q", out)
	}
	n, err1 := strconv.ParseInt(f[0], 10, 64)
	secs, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || f[2] != "200" || n != tunnelSize || secs <= 0 {
		return tunnelResult{}, fmt.Errorf("curl: %q, want %d bytes with status 200", out, tunnelSize)
	}
	res := tunnelResult{bytes: n, secs: secs, cpuSec: -1}
	if p != nil {
		if err := p.alive(); err != nil {
			return tunnelResult{}, err
		}
		cpu1, err := treeCPU(tree)
		if err != nil {
			return tunnelResult{}, err
		}
		res.cpuSec = float64(cpu1-cpu0) * clockTick / 1e6
	}
	return res, nil
}

// tunnelOrigin prepares the origin's /1g.
func tunnelOrigin(dir string) error {
	return writeSparse(filepath.Join(dir, "origin", "html", "1g"), tunnelSize)
}

// warmTunnel downloads /1g once, unmeasured: the first read of the file
// fills the page cache, which would otherwise slow whichever path runs
// first.
func (e *env) warmTunnel(ctx context.Context, o *origin) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(cctx, "curl", "-sS", "-o", os.DevNull, "http://"+o.addr+"/1g").CombinedOutput()
	if err != nil {
		return fmt.Errorf("warm-up download: %w (%s)", err, out)
	}
	return nil
}

// tunnelMarkdown renders the tunnel case's runs.
func (r *report) tunnelMarkdown(b *strings.Builder) {
	if len(r.tunnel) == 0 {
		return
	}
	fmt.Fprintf(b, "\n1 GiB download (`tunnel-1g`): serverside through a CONNECT tunnel (`curl -p -x`), haproxy in TCP mode, and curl straight from the origin; curl pinned with the origin. Medians over the rounds.\n\n")
	b.WriteString("| path | MiB/s | range | vs direct | proxy CPU s/GiB | range |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	direct := 0.0
	if v := r.tunnel[kindNone]; len(v) > 0 {
		direct = median(mapf(v, tunnelResult.mibps))
	}
	for _, k := range tunnelKinds {
		v := r.tunnel[k]
		if len(v) == 0 {
			continue
		}
		rate := mapf(v, tunnelResult.mibps)
		vs := "—"
		if direct > 0 {
			vs = fmt.Sprintf("%.0f%%", 100*median(rate)/direct)
		}
		cpu, cpuRange := "—", "—"
		if c := mapf(v, tunnelResult.cpuPerGiB); c[0] >= 0 {
			cpu, cpuRange = fmt.Sprintf("%.2f", median(c)), fmt.Sprintf("%.2f–%.2f", slices.Min(c), slices.Max(c))
		}
		name := string(k)
		switch k {
		case kindServerside:
			name = "serverside (CONNECT tunnel)"
		case kindNone:
			name = "none (curl → origin)"
		}
		fmt.Fprintf(b, "| %s | %.0f | %.0f–%.0f | %s | %s | %s |\n", name, median(rate), slices.Min(rate), slices.Max(rate), vs, cpu, cpuRange)
	}
}

func mapf(v []tunnelResult, f func(tunnelResult) float64) []float64 {
	out := make([]float64, len(v))
	for i, t := range v {
		out[i] = f(t)
	}
	return out
}
