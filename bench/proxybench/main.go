// Command proxybench measures the demo proxy (cmd/serverside) against nginx
// and haproxy with wrk, on this machine, side by side.
//
// Run it from the repository root:
//
//	go run ./bench/proxybench               # 3 rounds of 5 s runs, about 8 minutes
//	go run ./bench/proxybench -rounds 1 -duration 2s -out /tmp/proxy.md
//
// It installs wrk, nginx and haproxy with scripts/test.sh when one is
// missing, builds cmd/serverside into a temporary directory, starts one
// nginx origin and then, for every case and in every round, each proxy in
// turn on a fresh process: serverside, nginx, haproxy (HTTP mode) and
// haproxy in TCP mode, plus wrk straight to the origin as the ceiling.
// Proxies run on CPU 0, wrk and the origin on CPU 1 (taskset). The
// report is a Markdown table of medians over the rounds, printed to
// stdout. docs/benchmarks.md describes the method.
//
// Every process it starts is stopped by its PID when it exits, also on
// SIGINT or SIGTERM, and its temporary directory is removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// config is the parsed command line.
type config struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	idle     int
	out      string
	cases    map[string]bool // nil: all
	pin      bool
	install  bool
	timeout  time.Duration
	args     []string
	bEnv     []string
	bArgs    []string
	bBin     string
	pipeline int
	kinds    map[proxyKind]bool // nil: all
}

func run(args []string) int {
	fs := flag.NewFlagSet("proxybench", flag.ExitOnError)
	var cfg config
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds; each runs every case against every proxy once, and the report gives medians")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each wrk run (whole seconds)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "an unmeasured wrk run of this length (whole seconds; 0: none) before each measured one, on the same fresh proxy process")
	fs.IntVar(&cfg.idle, "idle", 1000, "idle keep-alive client connections for the memory measurement; 0 skips it")
	fs.StringVar(&cfg.out, "out", "", "also write the report to this file")
	casesFlag := fs.String("cases", "", "comma-separated subset of cases to run, e.g. -cases small-c64,forward-c64 (default all: "+strings.Join(caseNames(), ",")+")")
	fs.BoolVar(&cfg.pin, "pin", true, "pin proxies to CPU 0 and wrk and the origin to CPU 1 with taskset (needs 2 CPUs)")
	fs.BoolVar(&cfg.install, "install", true, "install wrk, nginx and haproxy with scripts/test.sh install when missing")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Minute, "give up after this long")
	bEnv := fs.String("b-env", "", "adds the proxy serverside-b: serverside with these space-separated VAR=value environment variables (an A/B comparison), e.g. -b-env GOGC=200")
	bArgs := fs.String("b-args", "", "adds the proxy serverside-b: serverside with these extra space-separated flags, e.g. -b-args -upstream-gonet")
	fs.StringVar(&cfg.bBin, "b-bin", "", "adds the proxy serverside-b: this serverside binary instead of the one built from the tree (another commit's), e.g. -b-bin /tmp/serverside-old")
	fs.IntVar(&cfg.pipeline, "pipeline", 8, "the pipeline option of the proxy serverside-pipelined (serverside with -origin 'http://origin?pipeline=N'); 0 leaves that proxy out")
	kindsFlag := fs.String("proxies", "", "comma-separated subset of proxies to run, e.g. -proxies serverside,serverside-b,nginx (default all)")
	_ = fs.Parse(args)
	cfg.bEnv, cfg.bArgs = strings.Fields(*bEnv), strings.Fields(*bArgs)
	if len(cfg.bEnv)+len(cfg.bArgs) > 0 || cfg.bBin != "" {
		addServersideB()
	}
	if cfg.pipeline < 2 {
		dropPipelined()
	}
	if *kindsFlag != "" {
		cfg.kinds = make(map[proxyKind]bool)
		for _, k := range strings.Split(*kindsFlag, ",") {
			cfg.kinds[proxyKind(k)] = true
		}
	}
	cfg.args = args
	if cfg.rounds < 1 || cfg.duration < time.Second || cfg.warmup != 0 && cfg.warmup < time.Second {
		fmt.Fprintln(os.Stderr, "proxybench: -rounds must be at least 1, -duration at least 1s, -warmup 0 or at least 1s")
		return 2
	}
	if *casesFlag != "" {
		cfg.cases = make(map[string]bool)
		for _, c := range strings.Split(*casesFlag, ",") {
			if !contains(caseNames(), c) {
				fmt.Fprintf(os.Stderr, "proxybench: unknown case %q (have %s)\n", c, strings.Join(caseNames(), ", "))
				return 2
			}
			cfg.cases[c] = true
		}
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	ps := newProcs()
	// Whatever happens below, stop every server started, by PID.
	defer ps.stopAll()
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		log.Error("temp dir", "err", err)
		return 1
	}
	defer os.RemoveAll(dir)

	rep, err := bench(ctx, log, cfg, ps, dir)
	if rep != nil {
		text := rep.markdown()
		fmt.Print(text)
		if cfg.out != "" {
			if werr := os.WriteFile(cfg.out, []byte(text), 0o644); werr != nil {
				log.Error("write report", "err", werr)
				return 1
			}
		}
	}
	if err != nil {
		log.Error("proxybench", "err", err)
		return 1
	}
	if rep != nil && len(rep.failures) > 0 {
		return 1
	}
	return 0
}

// bench prepares the tools and the origin, then runs the rounds.
func bench(ctx context.Context, log *slog.Logger, cfg config, ps *procs, dir string) (*report, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	e := &env{procs: ps, dir: dir, bEnv: cfg.bEnv, bArgs: cfg.bArgs, bBin: cfg.bBin, pipeline: cfg.pipeline}
	if err := e.findTools(ctx, log, root, cfg.install); err != nil {
		return nil, err
	}
	raiseFileLimit(log)
	if cfg.pin {
		if runtime.NumCPU() < 2 {
			log.Warn("fewer than 2 CPUs: running unpinned")
			cfg.pin = false
		} else {
			e.pinProxy = []string{"taskset", "-c", "0"}
			e.pinLoad = []string{"taskset", "-c", "1"}
		}
	}
	log.Info("building cmd/serverside")
	e.serverside = filepath.Join(dir, "bin", "serverside")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.serverside, "./cmd/serverside")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/serverside: %w\n%s", err, out)
	}

	if cfg.cases == nil || cfg.cases["tunnel-1g"] {
		if err := os.MkdirAll(filepath.Join(dir, "origin", "html"), 0o755); err != nil {
			return nil, err
		}
		if err := tunnelOrigin(dir); err != nil {
			return nil, err
		}
	}
	o, err := e.startOrigin()
	if err != nil {
		return nil, err
	}
	defer ps.stop(o.proc)
	if cfg.cases == nil || cfg.cases["tunnel-1g"] {
		log.Info("warming the origin's page cache for tunnel-1g")
		if err := e.warmTunnel(ctx, o); err != nil {
			return nil, err
		}
	}
	script, err := e.forwardScript(o)
	if err != nil {
		return nil, err
	}

	rep := newReport(cfg, machineInfo(ctx, e))
	for r := 0; r < cfg.rounds; r++ {
		for _, c := range allCases() {
			if cfg.cases != nil && !cfg.cases[c.name] {
				continue
			}
			// Rotate the order of the proxies every round so that none
			// always runs right after the same neighbour.
			kinds := rotate(c.kinds, r)
			for _, k := range kinds {
				if cfg.kinds != nil && !cfg.kinds[k] {
					continue
				}
				if err := ctx.Err(); err != nil {
					return rep, fmt.Errorf("stopped in round %d: %w", r+1, context.Cause(ctx))
				}
				log.Info("run", "round", r+1, "case", c.name, "proxy", string(k))
				if c.tunnel {
					res, err := e.measureTunnel(ctx, o, k)
					if err != nil {
						if ctx.Err() != nil {
							return rep, err
						}
						log.Error("run failed", "case", c.name, "proxy", string(k), "err", err)
						rep.fail(fmt.Sprintf("round %d, %s, %s: %v", r+1, c.name, k, firstLine(err.Error())))
						continue
					}
					rep.tunnel[k] = append(rep.tunnel[k], res)
					continue
				}
				res, err := e.measure(ctx, o, c, k, cfg.duration, cfg.warmup, script)
				if err != nil {
					if ctx.Err() != nil {
						return rep, err
					}
					log.Error("run failed", "case", c.name, "proxy", string(k), "err", err)
					rep.fail(fmt.Sprintf("round %d, %s, %s: %v", r+1, c.name, k, firstLine(err.Error())))
					continue
				}
				rep.add(c, k, res)
			}
		}
		if cfg.idle > 0 {
			for _, k := range rotate(idleKinds, r) {
				if cfg.kinds != nil && !cfg.kinds[k] {
					continue
				}
				if err := ctx.Err(); err != nil {
					return rep, fmt.Errorf("stopped in round %d: %w", r+1, context.Cause(ctx))
				}
				log.Info("idle memory", "round", r+1, "proxy", string(k), "conns", cfg.idle)
				kib, err := e.idleMemory(ctx, o, k, cfg.idle)
				if err != nil {
					if ctx.Err() != nil {
						return rep, err
					}
					log.Error("idle memory failed", "proxy", string(k), "err", err)
					rep.fail(fmt.Sprintf("round %d, idle memory, %s: %v", r+1, k, firstLine(err.Error())))
					continue
				}
				rep.addIdle(k, kib)
			}
		}
	}
	if err := o.proc.alive(); err != nil {
		return rep, err
	}
	return rep, nil
}

// measure runs one wrk run against one freshly started proxy (or the
// origin itself) and returns what was measured. A warm-up run of length
// warm comes first, unmeasured except for the origin's new connections:
// every proxy then runs warm (grown buffers and stacks, a sized heap, open
// upstream connections), as in service.
func (e *env) measure(ctx context.Context, o *origin, c benchCase, k proxyKind, d, warm time.Duration, script string) (runResult, error) {
	var p *proc
	addr := o.addr
	if k != kindNone {
		var err error
		p, addr, err = e.startProxy(k, o, c.forward && isServerside(k))
		if err != nil {
			return runResult{}, err
		}
		defer e.procs.stop(p)
	}
	url := "http://" + addr + c.path
	sc := ""
	if c.forward {
		sc = script
	}
	off, err := o.logSize()
	if err != nil {
		return runResult{}, err
	}
	if warm > 0 {
		wctx, cancel := measureCtx(ctx, warm)
		_, err := runWrk(wctx, e.wrkArgs(c.conns, warm, sc, url))
		cancel()
		if err != nil {
			return runResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var tree []int
	var cpu0 uint64
	if p != nil {
		tree = processTree(p.PID())
		var err error
		if cpu0, err = treeCPU(tree); err != nil {
			return runResult{}, err
		}
	}
	wctx, cancel := measureCtx(ctx, d)
	defer cancel()
	out, err := runWrk(wctx, e.wrkArgs(c.conns, d, sc, url))
	if err != nil {
		return runResult{}, err
	}
	var cpu1 uint64
	if p != nil {
		if err := p.alive(); err != nil {
			return runResult{}, err
		}
		if cpu1, err = treeCPU(tree); err != nil {
			return runResult{}, err
		}
	}
	w, err := parseWrk(out)
	if err != nil {
		return runResult{}, err
	}
	if w.Requests == 0 {
		return runResult{}, fmt.Errorf("wrk completed no requests:\n%s", out)
	}
	// nginx writes a log line when it has finished a request, which can
	// be just after wrk has its response.
	time.Sleep(200 * time.Millisecond)
	conns, err := o.newConns(off)
	if err != nil {
		return runResult{}, err
	}
	res := runResult{wrk: w, newConns: conns, cpuUS: -1}
	if p != nil {
		res.cpuUS = float64(cpu1-cpu0) * clockTick / float64(w.Requests)
	}
	return res, nil
}

// moduleRoot finds the repository root (the go.mod directory).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the serverside module: run from the repository root")
	}
	return filepath.Dir(mod), nil
}

// findTools locates wrk, nginx, haproxy and taskset, installing the
// packages through scripts/test.sh when one is missing.
func (e *env) findTools(ctx context.Context, log *slog.Logger, root string, install bool) error {
	find := func() []string {
		var missing []string
		for _, t := range []struct {
			name string
			dst  *string
		}{{"wrk", &e.wrk}, {"nginx", &e.nginx}, {"haproxy", &e.haproxy}} {
			p, err := lookPath(t.name)
			if err != nil {
				missing = append(missing, t.name)
				continue
			}
			*t.dst = p
		}
		return missing
	}
	if missing := find(); len(missing) > 0 {
		if !install {
			return fmt.Errorf("missing %s (run bash scripts/test.sh install, or drop -install=false)", strings.Join(missing, ", "))
		}
		log.Info("installing missing tools with scripts/test.sh install", "missing", missing)
		cmd := exec.CommandContext(ctx, "bash", "scripts/test.sh", "install")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/test.sh install: %w", err)
		}
		if missing := find(); len(missing) > 0 {
			return fmt.Errorf("still missing after install: %s", strings.Join(missing, ", "))
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return fmt.Errorf("taskset (util-linux) not found: %w", err)
	}
	return nil
}

// lookPath finds a binary on PATH or in the sbin directories, which a
// non-root PATH may lack.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// raiseFileLimit lifts the soft open-file limit to the hard one, for this
// process and the servers it starts: 1,000 client connections need about
// 2,000 descriptors in a proxy. Setting it explicitly also stops Go from
// restoring the old soft limit in child processes.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("getrlimit", "err", err)
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("setrlimit", "err", err)
	}
	if lim.Cur < 8192 {
		log.Warn("open-file limit is low; the 1,000-connection cases may fail", "limit", lim.Cur)
	}
}

// machineInfo describes the machine and the tools' versions.
func machineInfo(ctx context.Context, e *env) string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	version := func(argv ...string) string {
		out, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput() // wrk -v exits 1
		v := strings.TrimSpace(firstLine(string(out)))
		v, _, _ = strings.Cut(v, " Copyright") // wrk
		v, _, _ = strings.Cut(v, " - http")    // haproxy
		return v
	}
	return fmt.Sprintf("nproc %d, %s, Linux %s; %s; %s; %s; %s",
		runtime.NumCPU(), cpu, kernel,
		version(e.nginx, "-v"), version(e.haproxy, "-v"), version(e.wrk, "-v"), runtime.Version())
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func rotate[T any](s []T, n int) []T {
	if len(s) == 0 {
		return s
	}
	n %= len(s)
	return append(append([]T{}, s[n:]...), s[:n]...)
}
