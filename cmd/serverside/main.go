// Command serverside is the demo HTTP proxy built on the serverside engine.
//
// With no flags it is a forward HTTP proxy on 127.0.0.1:3128: clients send
// absolute-form requests ("GET http://host:port/path HTTP/1.1"), the proxy
// resolves the host and forwards the request in origin-form over the
// engine's pooled upstream connections. With -parent it forwards through
// parent proxies instead. With -origin it is a reverse proxy that sends
// every request to the given origins. Origins and parents form an engine
// peer group, balanced by -lb (round-robin by default); see peers.go for
// the per-peer URL options. In forward mode CONNECT opens a tunnel (to
// the ports of -connect-ports, 443 by default; directly or through a
// parent) and https:// targets are fetched over TLS; -origin may name
// https origins (-ca-file, -insecure, -client-cert/-client-key, ?sni=).
//
// Credentials in -origin or -parent URLs answer the peers' 401 or 407
// challenges; -client-auth pass relays the client's Proxy-Authorization to
// parents; each client connection pins the upstream connection of its
// NTLM or Negotiate handshake (auth.go, docs/demo.md).
//
// -config FILE reads the flags and per-peer options from a JSON file
// (flags on the command line win); -admin ADDR serves /metrics, /status
// and /debug/pprof/. docs/demo.md describes both.
//
// Client connections are served on netpoll, spread over shards at accept;
// a client connection idle for -client-idle-timeout is closed, one idle
// for -client-park-after leaves netpoll (and its buffers) until its client
// sends again, and a request head must arrive within
// -client-header-timeout of its first byte.
//
// SIGTERM or SIGINT stops accepting connections, lets requests in flight
// finish for up to -shutdown-timeout (10 seconds), and exits 0; a second
// signal ends the wait at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// DefaultShutdownTimeout is -shutdown-timeout's default: how long a
// shutdown waits for requests in flight.
const DefaultShutdownTimeout = 10 * time.Second

type originList []string

// String lists the URLs without their passwords: it is what logs show.
func (o *originList) String() string {
	out := make([]string, len(*o))
	for i, u := range *o {
		out[i] = redactURL(u)
	}
	return strings.Join(out, ",")
}

func (o *originList) Set(v string) error {
	*o = append(*o, v)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("serverside", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:3128", "`address` to listen on, e.g. -listen 127.0.0.1:8080")
	var origins originList
	fs.Var(&origins, "origin", "origin `URL` for reverse-proxy mode, repeatable; requests are spread by -lb,\ne.g. -origin http://127.0.0.1:8081 -origin 'http://127.0.0.1:8082?weight=2&name=b&max_conns=100';\ncredentials in userinfo (http://user:pass@host:port) answer the origin's 401s;\n?pipeline=8 pipelines GETs to an origin that answers pipelined requests (nginx, Apache)")
	var parents originList
	fs.Var(&parents, "parent", "parent proxy `URL` for forward mode, repeatable, credentials in userinfo, https:// for TLS to the parent,\ne.g. -parent http://user:pass@127.0.0.1:3129 (same options as -origin, plus preemptive=0)")
	lb := fs.String("lb", "roundrobin", "`policy` spreading requests over origins or parents: roundrobin, leastconn, p2c or hash (on the request host),\ne.g. -lb leastconn")
	shards := fs.Int("shards", 0, fmt.Sprintf("number of engine shards (event loops), 0 for GOMAXPROCS, at most %d, e.g. -shards 2", engine.MaxShards))
	access := fs.Bool("access-log", true, "log one line per request (method, target, status, bytes, duration);\noff with e.g. -access-log=false")
	var x cliExtras
	x.register(fs)
	var health healthFlags
	health.register(fs)
	idle := fs.Duration("client-idle-timeout", DefaultClientIdleTimeout, "close a client connection on which no request starts for this long,\nand bound each wait for request body bytes, e.g. -client-idle-timeout 30s")
	header := fs.Duration("client-header-timeout", DefaultClientHeaderTimeout, "bound the time from the first byte of a request head to its end\n(408 after it), e.g. -client-header-timeout 10s")
	park := fs.Duration("client-park-after", DefaultClientParkAfter, "take a client connection on which no request started for this long off the event loop,\nfreeing its buffers until its client sends again; 0 never does, e.g. -client-park-after 5s")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: serverside [flags]\n\n")
		fmt.Fprintf(out, "Demo HTTP proxy on the serverside engine. Without -origin it is a forward\n")
		fmt.Fprintf(out, "proxy (curl -x http://127.0.0.1:3128 http://example.com/); with -origin a\n")
		fmt.Fprintf(out, "reverse proxy (serverside -listen 127.0.0.1:8080 -origin http://127.0.0.1:8081).\n")
		fmt.Fprintf(out, "-config FILE reads these settings from JSON (serverside -config demo.json -shards 4:\n")
		fmt.Fprintf(out, "the command line wins); -admin ADDR serves /metrics, /status and /debug/pprof/.\n\n")
		fs.PrintDefaults()
	}
	// ExitOnError: -h and -help print the usage and exit 0; bad flags exit 2.
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		// Parsing stops at the first argument that is not a flag: the
		// flags after it would go unread.
		hint := "a URL needs its -origin or -parent"
		if i := len(args) - fs.NArg() - 1; i >= 0 && isBoolFlag(fs, args[i]) {
			if _, err := strconv.ParseBool(fs.Arg(0)); err == nil {
				// "-access-log false": the flag package reads a boolean
				// flag alone as true, and its value as an argument.
				hint = fmt.Sprintf("a boolean flag takes its value after \"=\": %s=%s", args[i], fs.Arg(0))
			}
		}
		fmt.Fprintf(fs.Output(), "serverside takes flags only, not %q (%s)\n", fs.Arg(0), hint)
		fs.Usage()
		return 2
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	peersOnCmdLine := len(origins) > 0 || len(parents) > 0 // before apply adds the file's
	fc, err := x.apply(fs)
	if err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	// The engine refuses its own negative timeouts; these are the
	// client side's, which it never sees.
	// What the file's checks refuse, the command line's values too
	// (apply has merged the file's into the flags).
	for _, a := range []struct{ flag, addr string }{{"listen", *listen}, {"admin", x.admin}} {
		if a.addr == "" && a.flag == "admin" {
			continue
		}
		if err := checkListenAddr(a.addr); err != nil {
			logger.Error("config", "err", fmt.Errorf("-%s %q: %w", a.flag, a.addr, err))
			return 2
		}
	}
	if x.admin != "" && sameListenAddr(x.admin, *listen) {
		logger.Error("config", "err", fmt.Errorf("-admin %q is the -listen address: the admin server needs an address of its own", x.admin))
		return 2
	}
	if x.viaName != "" {
		if err := checkViaName(x.viaName); err != nil {
			logger.Error("config", "err", fmt.Errorf("-via-name: %w", err))
			return 2
		}
	}
	if err := health.check(fs); err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	if len(origins) > 0 && flagSet(fs, "connect-ports") {
		// A reverse proxy answers every CONNECT 501: the ports would be
		// ignored.
		logger.Error("config", "err", fmt.Errorf("-connect-ports %s: only in forward mode; a reverse proxy (-origin) answers CONNECT 501", x.connectPorts))
		return 2
	}
	if err := checkDurations(fs,
		[]string{"client-park-after", "tunnel-idle-timeout", "shutdown-timeout", "upstream-max-lifetime"},
		[]string{"connect-timeout", "tls-handshake-timeout", "idle-timeout", "response-header-timeout",
			"client-idle-timeout", "client-header-timeout", "health-interval", "health-timeout"}); err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	// The engine refuses these too, but by its own field names.
	if *shards < 0 || *shards > engine.MaxShards {
		logger.Error("config", "err", fmt.Errorf("-shards %d: want 0 (GOMAXPROCS) to %d", *shards, engine.MaxShards))
		return 2
	}
	if x.maxRequests < 0 {
		logger.Error("config", "err", fmt.Errorf("-upstream-max-requests %d: want 0 (no limit) or more", x.maxRequests))
		return 2
	}
	cfg := x.engineConfig(engine.Config{Shards: *shards, Logger: logger})
	ports, err := parsePorts(x.connectPorts)
	if err != nil {
		logger.Error("config", "err", fmt.Errorf("-connect-ports: %w", err))
		return 2
	}
	ts, err := x.tlsSettings()
	if err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	if ts.insecure {
		logger.Warn("-insecure: TLS certificates of https origins, https parents and https:// targets are NOT verified; " +
			"anyone on the path can impersonate them. Use -ca-file instead outside of tests.")
	}
	err = withPeersTLS(&cfg, origins, parents, *lb, ts)
	if err == nil {
		err = withClientAuth(&cfg, x.clientAuth)
	}
	if err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	if _, ok := cfg.Groups[peerGroup]; !ok && health.path != "" {
		// Direct forwarding has no peers: the checks would be ignored.
		logger.Error("config", "err", fmt.Errorf("-health-check %s: no peer to check; health checks are for -origin or -parent peers", health.path))
		return 2
	}
	if err := selfPeer(cfg, *listen); err != nil {
		logger.Error("config", "err", err)
		return 2
	}
	withFilePeers(&cfg, fc, !peersOnCmdLine)
	health.apply(&cfg)
	p, err := newProxy(logger, nil, cfg,
		clientConfig{IdleTimeout: *idle, HeaderTimeout: *header, ParkAfter: zeroNever(*park), AccessLog: *access,
			ConnectPorts: ports, TunnelIdleTimeout: zeroNever(x.tunnelIdle), ConnectTimeout: x.connectTimeout, TLSHandshakeTimeout: x.tlsHandshake,
			ForwardTLS: ts.forward(), ViaName: x.viaName})
	if err != nil {
		if errors.Is(err, engine.ErrBadConfig) {
			// Values the engine refuses (a negative timeout, the same
			// peer twice) are the user's to fix, like the ones above.
			logger.Error("config", "err", err)
			return 2
		}
		logger.Error("start", "err", err)
		return 1
	}
	// Signals are caught before the listener opens: once a client can
	// connect, SIGTERM drains instead of killing the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("listen", "err", err)
		_ = p.eng.Close()
		return 1
	}
	p.nameVia(ln.Addr())
	mode := "forward"
	if len(origins) > 0 {
		mode = "reverse"
	}
	// The admin server opens before the proxy says it listens: a start
	// that fails is not logged as a start.
	var adm *adminServer
	if x.admin != "" {
		info := adminInfo{Listen: ln.Addr().String(), Mode: mode, Shards: *shards, LB: *lb, Peers: peerSpecs(cfg)}
		if adm, err = startAdmin(x.admin, p, info, logger); err != nil {
			logger.Error("admin", "err", err)
			ln.Close()
			_ = p.eng.Close()
			return 1
		}
	}
	logger.Info("serverside listening", "addr", ln.Addr().String(), "mode", mode, "origins", origins.String(),
		"parents", len(parents), "lb", *lb, "via", string(p.viaName))
	if adm != nil {
		logger.Info("admin listening", "addr", adm.Addr())
	}

	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	code := 0
	select {
	case sig := <-sigs:
		logger.Info("shutting down", "signal", sig.String())
	case err := <-served:
		if err != nil {
			logger.Error("serve", "err", err)
			code = 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), x.shutdown)
	defer cancel()
	// A second SIGTERM or SIGINT ends the drain at once, as the deadline
	// does: an operator who presses Ctrl-C again does not want to wait
	// for the downloads and tunnels still open.
	forced := make(chan struct{})
	go func() {
		defer close(forced)
		select {
		case sig := <-sigs:
			logger.Warn("second signal: stopping now, cutting the requests in flight", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := p.Shutdown(ctx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	cancel()
	<-forced
	if adm != nil {
		// The admin server outlives the drain, so /status shows it.
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		defer acancel()
		if err := adm.Shutdown(actx); err != nil {
			logger.Warn("admin shutdown", "err", err)
		}
	}
	return code
}

// isBoolFlag reports whether arg is a boolean flag of fs given alone
// ("-insecure" or "--insecure", not "-insecure=true").
func isBoolFlag(fs *flag.FlagSet, arg string) bool {
	name, ok := strings.CutPrefix(arg, "-")
	if !ok {
		return false
	}
	name = strings.TrimPrefix(name, "-")
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// checkDurations refuses a negative value of the named duration flags of
// fs, and 0 for those in positive. Their 0 has no meaning of its own: the
// engine and newProxy would take it for the default, so that
// "-response-header-timeout 0", meant as "no timeout", would silently be
// 60s. A negative value would be the default too (or, for
// -client-park-after and -tunnel-idle-timeout, 0: never).
func checkDurations(fs *flag.FlagSet, nonNegative, positive []string) error {
	for _, name := range append(nonNegative, positive...) {
		f := fs.Lookup(name)
		d, _ := f.Value.(flag.Getter).Get().(time.Duration)
		if d < 0 {
			return fmt.Errorf("-%s %v: negative duration", name, d)
		}
		if d == 0 && slices.Contains(positive, name) {
			return fmt.Errorf("-%s 0s: want a duration above 0 (the default is %s)", name, f.DefValue)
		}
	}
	return nil
}

// zeroNever is the clientConfig value of a duration flag for which 0
// means never (-client-park-after, -tunnel-idle-timeout): negative, since
// newProxy takes 0 for the default.
func zeroNever(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// flagSet reports whether the flag name was set, on the command line or
// from the config file.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
