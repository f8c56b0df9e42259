package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Sizes and contents of the built-in locations of the nginx fixture.
const (
	// SmallBody is the exact body of /small.
	SmallBody = "Hello, World!"
	// Size16K is the size of the static file served at /16k.
	Size16K = 16 << 10
	// Size1M is the size of the static file served at /1m.
	Size1M = 1 << 20
	// DelayBodySize is the size of the body served at /delay.
	DelayBodySize = 2048
	// DelayRate is the limit_rate, in bytes per second, of /delay.
	DelayRate = 1024
	// DelayTime is about how long /delay takes from request to last byte.
	DelayTime = 2 * time.Second
	// EchoMaxBody is client_max_body_size for /echo.
	EchoMaxBody = 64 << 20
)

const (
	startTimeout = 10 * time.Second // nginx must accept connections within this
	stopTimeout  = 3 * time.Second  // SIGQUIT, then SIGKILL after this
	startTries   = 3                // attempts when a picked port was taken meanwhile
)

// NginxOptions configures the nginx fixture. The zero value is nginx's
// defaults (keepalive_timeout 75s, keepalive_requests 1000).
type NginxOptions struct {
	// KeepaliveTimeout is the keepalive_timeout value, e.g. "1s" or "0"
	// (no keep-alive). Empty means nginx's default, 75s.
	KeepaliveTimeout string
	// KeepaliveRequests is keepalive_requests: how many requests nginx
	// serves on one connection before closing it. Zero means nginx's
	// default, 1000.
	KeepaliveRequests int
	// Port is the main port; zero picks a free one. A test restarting an
	// origin "on the same address" passes the port of the one it stopped.
	Port int
	// Locations is raw nginx configuration added to the main server
	// block, ahead of the fixture's own locations: extra locations a test
	// needs, such as one that is slow on one origin and fast on another.
	Locations string
	// TLSCert and TLSKey, when both set (paths of PEM files), add a TLS
	// listener (TLSAddr) to the main server with that certificate, a
	// shared session cache and session tickets (so clients can resume),
	// serving the same locations. Its requests are also logged to a second
	// log read with TLSRequests (SNI, resumption, client certificate).
	TLSCert, TLSKey string
	// TLSClientCA, when set (the path of a PEM file), makes the TLS
	// listener ask for a client certificate signed by it
	// (ssl_verify_client on): a request without one is answered 400.
	TLSClientCA string
	// HTTP2 makes the main listener speak HTTP/2 only, with prior
	// knowledge (listen ... http2, no TLS): an origin that does not speak
	// HTTP/1.1 and answers a request with its SETTINGS frame.
	HTTP2 bool
}

// Nginx is a real nginx process serving the fixture locations on
// 127.0.0.1. It is started by StartNginx and stopped when the test or
// benchmark that started it ends.
//
// Locations:
//
//	/small       200, the 13 bytes "Hello, World!" (return 200 "...").
//	/16k, /1m    static files of Size16K and Size1M bytes whose content is
//	             PatternBody(size), served from disk (sendfile).
//	/delay       a static file of DelayBodySize bytes sent with
//	             limit_rate DelayRate and sendfile off (with sendfile, nginx
//	             rounds each send up to a whole page and the limit does not
//	             bite on a small file). nginx has no sleep, so this is a slow
//	             body, not a slow head: nginx writes DelayRate bytes, then
//	             waits a second, and so on. The status line, headers and
//	             the first ~750 body bytes arrive at once, the next 1024
//	             bytes a second later, and the last bytes two seconds after
//	             the start (DelayTime).
//	/echo        accepts any method with a body of up to EchoMaxBody bytes
//	             (Content-Length or chunked). nginx reads the whole body,
//	             then proxies the request, with the body, to a second server
//	             block in the same process, which replies 200 with the body
//	             "<n>\n", where n is the number of body bytes nginx read
//	             (the Content-Length nginx forwarded; 0 without a body).
//	/files/NAME  a static file the test wrote to Dir()/html/files/NAME after
//	             StartNginx (a large download, say), served with sendfile.
//	/status/NNN  for NNN in 200..599, `return NNN;`: an empty body for 2xx,
//	             none for 304, nginx's small HTML page for other 3xx, 4xx
//	             and 5xx. Codes nginx treats specially keep their nginx
//	             meaning: /status/444 and /status/499 close the connection
//	             without any reply, 494..497 reply 400.
//	anything else 404.
//
// The access log records, for each request on the main server, nginx's
// connection serial number and the request's number on that connection, so
// tests can count upstream connections (ConnectionCount) and requests
// (Requests). A request is logged once nginx has finished it, which can be
// a moment after the client has read the reply: use WaitRequests to
// synchronise.
type Nginx struct {
	tb      testing.TB
	dir     string
	addr    string
	tlsAddr string // "" without a TLS listener
	tlsLog  string
	logPath string
	errPath string
	pidPath string
	cmd     *exec.Cmd
	output  *syncBuffer // nginx's stdout and stderr

	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done

	stopOnce sync.Once
	stopping chan struct{} // closed when Stop begins
}

// LoggedRequest is one line of the fixture's access log.
type LoggedRequest struct {
	Connection    uint64 // $connection: nginx's connection serial number
	ConnRequests  int    // $connection_requests: this request's number on that connection (1-based)
	Status        int    // $status
	BodyBytesSent int64  // $body_bytes_sent
	RequestLength int64  // $request_length: request line, headers and body, as received
	Method        string // $request_method
	URI           string // $request_uri
}

// NginxBinary returns the path of the nginx binary, looking first on PATH
// and then in the usual sbin directories (which a non-root PATH often
// lacks). It returns "" when there is none.
func NginxBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range nginxPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// StartNginx starts nginx with the fixture configuration in a fresh
// tb.TempDir(), waits until it accepts connections on 127.0.0.1, and
// registers a cleanup that stops it.
//
// If nginx is not installed, the test is skipped; but when the environment
// variable CI is "true" it fails instead, because scripts/test.sh installs
// nginx there.
//
// nginx runs in the foreground as a single process (daemon off,
// master_process off), so the child's PID is the only nginx process to
// stop.
func StartNginx(tb testing.TB, opts NginxOptions) *Nginx {
	tb.Helper()
	bin := NginxBinary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("nginx not found (looked on PATH and in /usr/sbin, /usr/local/sbin, /usr/local/nginx/sbin); under CI=true it is required: scripts/test.sh installs it")
		}
		tb.Skip("nginx not found (looked on PATH and in /usr/sbin, /usr/local/sbin, /usr/local/nginx/sbin); install it (apt-get install nginx) or run scripts/test.sh")
	}
	if opts.KeepaliveRequests < 0 {
		tb.Fatalf("NginxOptions.KeepaliveRequests = %d, want >= 0", opts.KeepaliveRequests)
	}

	dir := tb.TempDir()
	if err := writeStaticFiles(dir); err != nil {
		tb.Fatalf("nginx fixture: %v", err)
	}

	var lastErr error
	for try := 0; try < startTries; try++ {
		n, err := startNginxOnce(tb, bin, dir, opts, try)
		if err == nil {
			tb.Cleanup(n.cleanup)
			return n
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	tb.Fatalf("nginx fixture: %v", lastErr)
	return nil
}

// nginxPaths are where NginxBinary looks when nginx is not on PATH.
var nginxPaths = []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"}

var errAddrInUse = errors.New("address already in use")

func startNginxOnce(tb testing.TB, bin, dir string, opts NginxOptions, try int) (*Nginx, error) {
	mainPort := opts.Port
	if mainPort == 0 {
		var err error
		if mainPort, err = pickPort(); err != nil {
			return nil, err
		}
	}
	sinkPort, err := pickPort()
	if err != nil {
		return nil, err
	}
	if sinkPort == mainPort {
		if sinkPort, err = pickPort(); err != nil {
			return nil, err
		}
	}
	tlsAddr := ""
	if opts.TLSCert != "" && opts.TLSKey != "" {
		tlsPort, err := pickPort()
		if err != nil {
			return nil, err
		}
		if tlsPort == mainPort || tlsPort == sinkPort {
			return nil, fmt.Errorf("%w: TLS port %d picked twice", errAddrInUse, tlsPort)
		}
		tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	}

	n := &Nginx{
		tb:       tb,
		dir:      dir,
		addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(mainPort)),
		tlsAddr:  tlsAddr,
		tlsLog:   filepath.Join(dir, "logs", "tls.log"),
		logPath:  filepath.Join(dir, "logs", "access.log"),
		errPath:  filepath.Join(dir, "logs", fmt.Sprintf("error-%d.log", try)),
		pidPath:  filepath.Join(dir, "logs", "nginx.pid"),
		output:   &syncBuffer{},
		done:     make(chan struct{}),
		stopping: make(chan struct{}),
	}
	// A fresh access log per attempt: a failed attempt logs nothing, but
	// start from empty all the same.
	if err := os.WriteFile(n.logPath, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.tlsLog, nil, 0o644); err != nil {
		return nil, err
	}

	conf := filepath.Join(dir, "conf", "nginx.conf")
	if err := writeConfig(conf, configData{
		Dir:               dir,
		PID:               n.pidPath,
		ErrorLog:          n.errPath,
		AccessLog:         n.logPath,
		Main:              n.addr,
		Sink:              net.JoinHostPort("127.0.0.1", strconv.Itoa(sinkPort)),
		KeepaliveTimeout:  opts.KeepaliveTimeout,
		KeepaliveRequests: opts.KeepaliveRequests,
		Locations:         opts.Locations,
		DelayRate:         DelayRate,
		EchoMaxBody:       EchoMaxBody,
		Statuses:          statusCodes(),
		TLS:               tlsAddr,
		TLSLog:            n.tlsLog,
		TLSCert:           opts.TLSCert,
		TLSKey:            opts.TLSKey,
		TLSClientCA:       opts.TLSClientCA,
		HTTP2:             opts.HTTP2,
	}); err != nil {
		return nil, err
	}

	n.cmd = exec.Command(bin,
		"-p", dir+"/",
		"-c", conf,
		"-e", n.errPath,
		"-g", "daemon off; master_process off;")
	n.cmd.Dir = dir
	n.cmd.Stdout = n.output
	n.cmd.Stderr = n.output
	// If the test binary dies without running its cleanups (a -timeout
	// panic, a kill), the kernel kills nginx too instead of leaving it
	// listening. (Linux sends this when the OS thread that started nginx
	// exits; Go ends a thread only when a goroutine locked to it returns
	// still locked, which this module's tests do not do.)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.done)
	}()

	if err := n.waitReady(); err != nil {
		n.kill()
		msg := n.diagnostics()
		if strings.Contains(msg, "Address already in use") {
			return nil, fmt.Errorf("%w: %v\n%s", errAddrInUse, err, msg)
		}
		return nil, fmt.Errorf("%v\n%s", err, msg)
	}
	return n, nil
}

// waitReady waits until nginx has written its PID file, which it does
// only after binding and listening on all its addresses, and then accepts a
// TCP connection on its main address; or until it exits, or startTimeout
// passes. Waiting for the PID file first means a probe cannot be answered
// by some other process that took the port meanwhile.
func (n *Nginx) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	want := strconv.Itoa(n.cmd.Process.Pid)
	pidWritten := false
	var lastErr error
	for {
		select {
		case <-n.done:
			return fmt.Errorf("nginx exited during startup: %v", n.waitErr)
		default:
		}
		if !pidWritten {
			data, err := os.ReadFile(n.pidPath)
			pidWritten = err == nil && strings.TrimSpace(string(data)) == want
			lastErr = fmt.Errorf("no PID file %s with PID %s yet", n.pidPath, want)
		}
		if pidWritten {
			c, err := net.DialTimeout("tcp", n.addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				return nil
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx not ready on %s within %v: %v", n.addr, startTimeout, lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Addr returns nginx's listening address, "127.0.0.1:port".
func (n *Nginx) Addr() string { return n.addr }

// TLSAddr returns the TLS listener's address, "127.0.0.1:port", or ""
// when NginxOptions asked for none.
func (n *Nginx) TLSAddr() string { return n.tlsAddr }

// TLSLoggedRequest is one line of the TLS listener's log.
type TLSLoggedRequest struct {
	Connection uint64 // $connection
	ServerName string // $ssl_server_name: the SNI the client sent, "" for none
	Reused     bool   // $ssl_session_reused: the handshake resumed a session
	Protocol   string // $ssl_protocol, e.g. "TLSv1.3"
	ClientDN   string // $ssl_client_s_dn: the client certificate's subject, "" for none
	Status     int    // $status
	URI        string // $request_uri
}

// TLSRequests returns the TLS listener's log so far, one entry per
// finished request on it.
func (n *Nginx) TLSRequests() []TLSLoggedRequest {
	n.tb.Helper()
	data, err := os.ReadFile(n.tlsLog)
	if err != nil {
		n.tb.Errorf("nginx fixture: %v", err)
		return nil
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	var out []TLSLoggedRequest
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 7 {
			n.tb.Errorf("nginx fixture: TLS log line %q: want 7 fields", line)
			continue
		}
		dash := func(s string) string {
			if s == "-" {
				return ""
			}
			return s
		}
		var r TLSLoggedRequest
		r.Connection, _ = strconv.ParseUint(f[0], 10, 64)
		r.ServerName = dash(f[1])
		r.Reused = f[2] == "r"
		r.Protocol = dash(f[3])
		r.ClientDN = dash(f[4])
		r.Status, _ = strconv.Atoi(f[5])
		r.URI = f[6]
		out = append(out, r)
	}
	return out
}

// WaitTLSRequests waits until at least want requests are in the TLS log or
// timeout passes, and returns the log as it then is.
func (n *Nginx) WaitTLSRequests(want int, timeout time.Duration) []TLSLoggedRequest {
	n.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		reqs := n.TLSRequests()
		if len(reqs) >= want || time.Now().After(deadline) {
			return reqs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// URL returns "http://127.0.0.1:port" followed by path, which should start
// with "/".
func (n *Nginx) URL(path string) string { return "http://" + n.addr + path }

// PID returns the nginx process's ID.
func (n *Nginx) PID() int { return n.cmd.Process.Pid }

// Dir returns the prefix directory holding the configuration, logs and
// static files.
func (n *Nginx) Dir() string { return n.dir }

// Requests returns the access log so far, one entry per finished request,
// in the order nginx finished them. It may be called from any goroutine; if
// the log cannot be read it reports an error on the test and returns what
// it could parse.
func (n *Nginx) Requests() []LoggedRequest {
	n.tb.Helper()
	reqs, err := readAccessLog(n.logPath)
	if err != nil {
		n.tb.Errorf("nginx fixture: %v", err)
	}
	return reqs
}

// ConnectionCount returns how many distinct connections the logged
// requests arrived on, which is how many TCP connections nginx accepted
// that carried at least one finished request. Connections that were
// opened but sent no complete request are not counted.
func (n *Nginx) ConnectionCount() int {
	n.tb.Helper()
	return CountConnections(n.Requests())
}

// CountConnections returns the number of distinct connection serial
// numbers among reqs.
func CountConnections(reqs []LoggedRequest) int {
	seen := make(map[uint64]struct{}, 64)
	for _, r := range reqs {
		seen[r.Connection] = struct{}{}
	}
	return len(seen)
}

// WaitRequests waits until at least want requests are in the access log or
// timeout passes, and returns the log as it then is.
func (n *Nginx) WaitRequests(want int, timeout time.Duration) []LoggedRequest {
	n.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		reqs := n.Requests()
		if len(reqs) >= want || time.Now().After(deadline) {
			return reqs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop stops nginx now instead of at cleanup: SIGQUIT (graceful shutdown:
// idle keep-alive connections are closed, requests in progress finish),
// then SIGKILL if it has not exited within a few seconds. It waits until
// the process has been reaped. Calling it again does nothing.
func (n *Nginx) Stop() {
	n.stopOnce.Do(func() {
		close(n.stopping)
		select {
		case <-n.done:
			return
		default:
		}
		_ = n.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-n.done:
		case <-time.After(stopTimeout):
			n.tb.Logf("nginx (pid %d) still running %v after SIGQUIT; sending SIGKILL", n.PID(), stopTimeout)
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	})
}

// Exited reports whether the nginx process has exited.
func (n *Nginx) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *Nginx) cleanup() {
	exitedEarly := n.Exited()
	select {
	case <-n.stopping:
		exitedEarly = false // Stop was called; exit is expected
	default:
	}
	n.Stop()
	if exitedEarly {
		n.tb.Errorf("nginx (pid %d) exited before the test ended: %v\n%s", n.PID(), n.waitErr, n.diagnostics())
	}
}

// kill stops a process that failed to start properly, by its PID.
func (n *Nginx) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

// diagnostics returns nginx's output and error log, for failure messages.
func (n *Nginx) diagnostics() string {
	var b strings.Builder
	if out := strings.TrimSpace(n.output.String()); out != "" {
		fmt.Fprintf(&b, "nginx output:\n%s\n", out)
	}
	if data, err := os.ReadFile(n.errPath); err == nil && len(bytes.TrimSpace(data)) > 0 {
		const max = 4096
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "nginx error log (%s):\n%s", n.errPath, data)
	}
	return b.String()
}

// PatternBody returns the content of the fixture's static files of size n:
// the 36 characters a-z0-9 repeated.
func PatternBody(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

func writeStaticFiles(dir string) error {
	for _, d := range []string{"conf", "logs", "html", "html/files", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]int{"16k": Size16K, "1m": Size1M, "delay": DelayBodySize}
	for name, size := range files {
		if err := os.WriteFile(filepath.Join(dir, "html", name), PatternBody(size), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pickPort picks a port for nginx to listen on; tests replace it.
var pickPort = freePort

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func statusCodes() []int {
	codes := make([]int, 0, 400)
	for c := 200; c <= 599; c++ {
		codes = append(codes, c)
	}
	return codes
}

func readAccessLog(path string) ([]LoggedRequest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// A line being written as we read has no newline yet: leave it for the
	// next read. (nginx writes each line with one write, so this is rare.)
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	reqs := make([]LoggedRequest, 0, bytes.Count(data, []byte{'\n'}))
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		r, err := parseLogLine(line)
		if err != nil {
			return reqs, fmt.Errorf("access log %s: %v: %q", path, err, line)
		}
		reqs = append(reqs, r)
	}
	return reqs, sc.Err()
}

// parseLogLine parses one line of the "fixture" log_format:
// $connection $connection_requests $status $body_bytes_sent
// $request_length $request_method $request_uri
func parseLogLine(line string) (LoggedRequest, error) {
	f := strings.SplitN(line, " ", 7)
	if len(f) != 7 {
		return LoggedRequest{}, errors.New("want 7 fields")
	}
	var r LoggedRequest
	var err error
	if r.Connection, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return r, err
	}
	if r.ConnRequests, err = strconv.Atoi(f[1]); err != nil {
		return r, err
	}
	if r.Status, err = strconv.Atoi(f[2]); err != nil {
		return r, err
	}
	if r.BodyBytesSent, err = strconv.ParseInt(f[3], 10, 64); err != nil {
		return r, err
	}
	if r.RequestLength, err = strconv.ParseInt(f[4], 10, 64); err != nil {
		return r, err
	}
	r.Method, r.URI = f[5], f[6]
	return r, nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a
// child's stdout and stderr copiers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	const max = 64 << 10
	if b.buf.Len() > max {
		return len(p), nil // keep the start; nginx says what matters first
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type configData struct {
	Dir, PID, ErrorLog, AccessLog string
	Main, Sink                    string
	KeepaliveTimeout              string
	KeepaliveRequests             int
	Locations                     string
	DelayRate                     int
	EchoMaxBody                   int
	Statuses                      []int
	TLS, TLSLog                   string
	TLSCert, TLSKey, TLSClientCA  string
	HTTP2                         bool
}

func writeConfig(path string, d configData) error {
	var b bytes.Buffer
	if err := confTemplate.Execute(&b, d); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// The configuration. daemon and master_process are given with -g.
var confTemplate = template.Must(template.New("nginx.conf").Parse(`# Written by the serverside bench fixture (bench/nginx.go).
worker_processes 1;
pid {{.PID}};
error_log {{.ErrorLog}} warn;

events {
    worker_connections 4096;
}

http {
    default_type application/octet-stream;
    sendfile on;
    server_tokens off;

    client_body_temp_path {{.Dir}}/tmp/client_body;
    proxy_temp_path       {{.Dir}}/tmp/proxy;
    fastcgi_temp_path     {{.Dir}}/tmp/fastcgi;
    uwsgi_temp_path       {{.Dir}}/tmp/uwsgi;
    scgi_temp_path        {{.Dir}}/tmp/scgi;

    log_format fixture '$connection $connection_requests $status $body_bytes_sent $request_length $request_method $request_uri';
    log_format fixture_tls '$connection|$ssl_server_name|$ssl_session_reused|$ssl_protocol|$ssl_client_s_dn|$status|$request_uri';

{{- if .KeepaliveTimeout}}
    keepalive_timeout {{.KeepaliveTimeout}};
{{- end}}
{{- if .KeepaliveRequests}}
    keepalive_requests {{.KeepaliveRequests}};
{{- end}}

    # The main server: the one tests and benchmarks talk to.
    server {
        listen {{.Main}}{{if .HTTP2}} http2{{end}};
        access_log {{.AccessLog}} fixture;
        root {{.Dir}}/html;
{{- if .Locations}}
{{.Locations}}
{{- end}}
{{- if .TLS}}
        listen {{.TLS}} ssl;
        ssl_certificate     {{.TLSCert}};
        ssl_certificate_key {{.TLSKey}};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:fixture:1m;
        ssl_session_tickets on;
        access_log {{.TLSLog}} fixture_tls if=$https;
{{- if .TLSClientCA}}
        ssl_client_certificate {{.TLSClientCA}};
        ssl_verify_client on;
{{- end}}
{{- end}}

        location = /small {
            default_type text/plain;
            return 200 "Hello, World!";
        }
        location = /16k {
        }
        location = /1m {
        }
        location = /delay {
            sendfile off;
            limit_rate {{.DelayRate}};
        }
        location /files/ {
        }
        location = /echo {
            client_max_body_size {{.EchoMaxBody}};
            client_body_buffer_size 1m;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://{{.Sink}}/echo;
        }
{{- range .Statuses}}
        location = /status/{{.}} { return {{.}}; }
{{- end}}
        location / {
            return 404;
        }
    }

    # The sink behind /echo: it receives the body nginx read and replies
    # with its length. Not logged, so only the main server's connections
    # are counted.
    map $content_length $echo_length {
        ""      0;
        default $content_length;
    }
    server {
        listen {{.Sink}};
        access_log off;
        location = /echo {
            default_type text/plain;
            client_max_body_size {{.EchoMaxBody}};
            return 200 "$echo_length\n";
        }
        location / {
            return 404;
        }
    }
}
`))
