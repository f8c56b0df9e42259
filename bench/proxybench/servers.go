package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyTimeout bounds how long a server may take to start answering.
const readyTimeout = 10 * time.Second

// smallBody is the body of the origin's /small.
const smallBody = "Hello, World!"

// env is what every server start needs: the tools, where to put files,
// and the CPU pinning.
type env struct {
	procs      *procs
	dir        string // the run's temporary directory
	nginx      string // binary paths
	haproxy    string
	serverside string
	wrk        string
	pinProxy   []string // "taskset -c 0" or nothing
	pinLoad    []string // "taskset -c 1" or nothing
	// The serverside-b variant (-b-env, -b-args, -b-bin): the same binary
	// (or another, bBin) with other environment variables and extra flags,
	// for A/B comparisons.
	bEnv  []string
	bArgs []string
	bBin  string
	// pipeline is serverside-pipelined's pipeline option.
	pipeline int
}

// origin is the nginx origin every proxy forwards to.
type origin struct {
	proc    *proc
	addr    string
	logPath string
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// patternBody returns n bytes of a repeating pattern, for the static
// files of the origin.
func patternBody(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

// startOrigin starts the nginx origin, trying another port when the one
// picked was taken meanwhile.
func (e *env) startOrigin() (*origin, error) {
	var err error
	for range startTries {
		var o *origin
		if o, err = e.startOriginOnce(); !portTaken(err) {
			return o, err
		}
	}
	return nil, err
}

// startOriginOnce starts the nginx origin: one process (master_process off),
// keep-alive without limits, and an access log of the connection serial
// and the request's number on its connection, from which new connections
// are counted.
func (e *env) startOriginOnce() (*origin, error) {
	dir := filepath.Join(e.dir, "origin")
	for _, d := range []string{"html", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	for name, size := range map[string]int{"16k": 16 << 10, "1m": 1 << 20} {
		if err := os.WriteFile(filepath.Join(dir, "html", name), patternBody(size), 0o644); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	o := &origin{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), logPath: filepath.Join(dir, "logs", "access.log")}
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/logs/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 8192; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    client_body_temp_path %[1]s/tmp/client_body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    log_format conns '$connection $connection_requests $status';
    server {
        listen %[2]s backlog=4096;
        access_log %[3]s conns;
        root %[1]s/html;
        location = /small { default_type text/plain; return 200 %[4]q; }
        location = /16k { }
        location = /1m { }
        location = /1g { }
    }
}
`, dir, o.addr, o.logPath, smallBody)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	argv := append(append([]string{}, e.pinLoad...), e.nginx, "-p", dir+"/", "-c", confPath, "-e", filepath.Join(dir, "logs", "error.log"),
		"-g", "daemon off; master_process off;")
	p, err := e.procs.start("origin nginx", syscall.SIGTERM, dir, nil, argv...)
	if err != nil {
		return nil, err
	}
	o.proc = p
	if err := waitReady(p, o.addr, "/small", "", smallBody); err != nil {
		e.procs.stop(p)
		return nil, fmt.Errorf("origin: %w", err)
	}
	return o, nil
}

// logSize returns the access log's length, the offset from which the next
// run's lines are counted.
func (o *origin) logSize() (int64, error) {
	st, err := os.Stat(o.logPath)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// newConns counts the connections the origin accepted and served a first
// request on since offset.
func (o *origin) newConns(offset int64) (int, error) {
	f, err := os.Open(o.logPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	return countNewConns(f)
}

// countNewConns counts access-log lines ("$connection $connection_requests
// $status") whose request was the first on its connection.
func countNewConns(r io.Reader) (int, error) {
	n := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue // a line still being written
		}
		if f[1] == "1" {
			n++
		}
	}
	return n, sc.Err()
}

// proxyKind names one proxy under test.
type proxyKind string

const (
	kindServerside proxyKind = "serverside"
	// kindServersideB is serverside with -b-env and -b-args.
	kindServersideB proxyKind = "serverside-b"
	// kindServersidePipelined is serverside with "?pipeline=N" on its
	// origin (-pipeline): nginx answers pipelined requests.
	kindServersidePipelined proxyKind = "serverside-pipelined"
	kindNginx               proxyKind = "nginx"
	kindHAProxy             proxyKind = "haproxy"
	kindHAProxyTCP          proxyKind = "haproxy-tcp"
	kindNone                proxyKind = "none (ceiling)"
)

// startTries is how many ports a server start tries: a port found free
// can be taken by another process's outgoing connection before the server
// binds it, which on a shared machine happens.
const startTries = 3

// portTaken reports whether a start failed because its port was taken.
func portTaken(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "address already in use")
}

// startProxy starts one proxy in front of the origin on a fresh port and
// waits until a request through it succeeds. forward selects serverside's
// forward-proxy mode; the others have a fixed server either way.
func (e *env) startProxy(kind proxyKind, o *origin, forward bool) (*proc, string, error) {
	var err error
	for range startTries {
		var p *proc
		var addr string
		p, addr, err = e.startProxyOnce(kind, o, forward)
		if !portTaken(err) {
			return p, addr, err
		}
	}
	return nil, "", err
}

// startProxyOnce is one attempt of startProxy.
func (e *env) startProxyOnce(kind proxyKind, o *origin, forward bool) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := filepath.Join(e.dir, string(kind))
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, "", err
	}
	var argv, envv []string
	var stopSig syscall.Signal
	switch kind {
	case kindServerside, kindServersideB, kindServersidePipelined:
		argv = []string{e.serverside, "-listen", addr, "-access-log=false", "-shards", "1"}
		switch {
		case forward:
			// CONNECT is for forward mode: with -origin the flag is
			// refused.
			argv = append(argv, "-connect-ports", "any")
		case kind == kindServersidePipelined:
			argv = append(argv, "-origin", "http://"+o.addr+"?pipeline="+strconv.Itoa(e.pipeline))
		default:
			argv = append(argv, "-origin", "http://"+o.addr)
		}
		// netpoll stalls at GOMAXPROCS=1; taskset still keeps the
		// process on one CPU.
		envv = []string{"GOMAXPROCS=2"}
		if kind == kindServersideB {
			if e.bBin != "" {
				argv[0] = e.bBin
			}
			argv = append(argv, e.bArgs...)
			envv = append(envv, e.bEnv...)
		}
		stopSig = syscall.SIGTERM
	case kindNginx:
		conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    client_body_temp_path %[1]s/tmp/client_body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    upstream origin {
        server %[2]s;
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }
    server {
        listen %[3]s backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Relay at the client's pace, as the others do, instead of
            # spilling large responses to a temporary file.
            proxy_max_temp_file_size 0;
        }
    }
}
`, dir, o.addr, addr)
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return nil, "", err
		}
		argv = []string{e.nginx, "-p", dir + "/", "-c", confPath, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}
		stopSig = syscall.SIGTERM
	case kindHAProxy, kindHAProxyTCP:
		mode, reuse := "http", "    http-reuse safe\n"
		if kind == kindHAProxyTCP {
			mode, reuse = "tcp", ""
		}
		conf := fmt.Sprintf(`global
    nbthread 1
    maxconn 8000
defaults
    mode %s
%s    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fe
    bind %s backlog 4096
    default_backend be
backend be
    server origin %s
`, mode, reuse, addr, o.addr)
		confPath := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return nil, "", err
		}
		argv = []string{e.haproxy, "-db", "-f", confPath}
		stopSig = syscall.SIGTERM // immediate stop; nothing is in flight by then
	default:
		return nil, "", fmt.Errorf("unknown proxy %q", kind)
	}
	argv = append(append([]string{}, e.pinProxy...), argv...)
	p, err := e.procs.start(string(kind), stopSig, dir, envv, argv...)
	if err != nil {
		return nil, "", err
	}
	target, host := "/small", ""
	if forward {
		target, host = "http://"+o.addr+"/small", o.addr
	}
	if err := waitReady(p, addr, target, host, smallBody); err != nil {
		e.procs.stop(p)
		return nil, "", fmt.Errorf("%s: %w", kind, err)
	}
	return p, addr, nil
}

// waitReady retries one GET through addr until it answers 200 with want,
// the process exits, or readyTimeout passes.
func waitReady(p *proc, addr, target, host, want string) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if err := p.alive(); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			br := bufio.NewReader(c)
			err = fetch(c, br, target, host, want)
			c.Close()
			if err == nil {
				return nil
			}
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready on %s within %v: %v\n%s", addr, readyTimeout, lastErr, p.output())
}

// errBadResponse reports a response other than the expected 200.
var errBadResponse = errors.New("unexpected response")

// fetch sends one keep-alive GET for target on c and reads the response;
// the connection stays usable. An empty host means c's address. An
// empty want skips the body check.
func fetch(c net.Conn, br *bufio.Reader, target, host, want string) error {
	if host == "" {
		host = c.RemoteAddr().String()
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || (want != "" && !bytes.Equal(body, []byte(want))) {
		return fmt.Errorf("%w: %s, %d-byte body", errBadResponse, resp.Status, len(body))
	}
	return nil
}

// wrkArgs builds the wrk command for one run: one thread (wrk shares CPU 1
// with the origin), --latency for the percentiles.
func (e *env) wrkArgs(conns int, d time.Duration, script, url string) []string {
	argv := append(append([]string{}, e.pinLoad...), e.wrk, "-t1", "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(int(d.Round(time.Second)/time.Second))+"s", "--timeout", "5s", "--latency")
	if script != "" {
		argv = append(argv, "-s", script)
	}
	return append(argv, url)
}

// forwardScript writes the wrk script that sends absolute-form targets, as
// a client of a forward proxy does.
func (e *env) forwardScript(o *origin) (string, error) {
	path := filepath.Join(e.dir, "forward.lua")
	script := fmt.Sprintf("wrk.path = %q\nwrk.headers[\"Host\"] = %q\n", "http://"+o.addr+"/small", o.addr)
	return path, os.WriteFile(path, []byte(script), 0o644)
}

// measureCtx bounds one wrk run: its duration plus slack for start-up
// and the last requests' timeouts.
func measureCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d+30*time.Second)
}
