package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawGet writes one GET for path on c and reads the reply with br.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader, path string) (*http.Response, []byte) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: fixture\r\n\r\n", path); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// noKeepAliveClient opens a new connection for every request.
func noKeepAliveClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp, body
}

func TestNginxSmall(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	if !strings.HasPrefix(n.Addr(), "127.0.0.1:") {
		t.Errorf("Addr() = %q, want 127.0.0.1:port", n.Addr())
	}
	if got, want := n.URL("/small"), "http://"+n.Addr()+"/small"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	resp, body := get(t, noKeepAliveClient(), n.URL("/small"))
	if resp.StatusCode != 200 {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	if string(body) != SmallBody || len(body) != 13 {
		t.Errorf("body %q, want %q", body, SmallBody)
	}
	if resp.ContentLength != 13 {
		t.Errorf("Content-Length %d, want 13", resp.ContentLength)
	}
	reqs := n.WaitRequests(1, 5*time.Second)
	if len(reqs) != 1 {
		t.Fatalf("logged %d requests, want 1: %+v", len(reqs), reqs)
	}
	r := reqs[0]
	if r.Method != "GET" || r.URI != "/small" || r.Status != 200 || r.BodyBytesSent != 13 || r.ConnRequests != 1 {
		t.Errorf("logged %+v", r)
	}
}

func TestNginxStaticFiles(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		path string
		size int
	}{{"/16k", Size16K}, {"/1m", Size1M}} {
		resp, body := get(t, c, n.URL(tc.path))
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", tc.path, resp.StatusCode)
		}
		if !bytes.Equal(body, PatternBody(tc.size)) {
			t.Errorf("%s: got %d bytes, want PatternBody(%d)", tc.path, len(body), tc.size)
		}
	}
	resp, _ := get(t, c, n.URL("/no/such/thing"))
	if resp.StatusCode != 404 {
		t.Errorf("unknown path: status %d, want 404", resp.StatusCode)
	}
}

func TestNginxEcho(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	c := &http.Client{Timeout: 20 * time.Second}
	for _, size := range []int{0, 1, 12345, 3 << 20} { // 3 MiB goes through a temp file
		for _, chunked := range []bool{false, true} {
			payload := PatternBody(size)
			var body io.Reader = bytes.NewReader(payload)
			if chunked {
				body = io.MultiReader(body) // hides the length: chunked
			}
			req, err := http.NewRequest("POST", n.URL("/echo"), body)
			if err != nil {
				t.Fatal(err)
			}
			if chunked {
				req.ContentLength = -1
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST %d bytes (chunked %v): %v", size, chunked, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || string(got) != fmt.Sprintf("%d\n", size) {
				t.Errorf("POST %d bytes (chunked %v): %d %q, want 200 %q", size, chunked, resp.StatusCode, got, fmt.Sprintf("%d\n", size))
			}
		}
	}
	// GET without a body.
	resp, got := get(t, c, n.URL("/echo"))
	if resp.StatusCode != 200 || string(got) != "0\n" {
		t.Errorf("GET /echo: %d %q, want 200 \"0\\n\"", resp.StatusCode, got)
	}
	// Over the limit.
	req, _ := http.NewRequest("POST", n.URL("/echo"), bytes.NewReader(make([]byte, EchoMaxBody+1)))
	resp, err := c.Do(req)
	if err != nil {
		// nginx may reply 413 and close before reading everything.
		t.Logf("POST over the limit: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("POST over the limit: status %d, want 413", resp.StatusCode)
		}
	}
}

func TestNginxStatus(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, code := range []int{200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 407, 500, 502, 503, 504, 599} {
		resp, body := get(t, c, n.URL(fmt.Sprintf("/status/%d", code)))
		if resp.StatusCode != code {
			t.Errorf("/status/%d: got %d", code, resp.StatusCode)
		}
		if (code == 204 || code == 304 || code < 300) && len(body) != 0 {
			t.Errorf("/status/%d: body %q, want none", code, body)
		}
	}
	// 444: nginx closes the connection without replying.
	if _, err := noKeepAliveClient().Get(n.URL("/status/444")); err == nil {
		t.Errorf("/status/444: got a reply, want the connection closed")
	}
}

func TestNginxDelay(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	start := time.Now()
	resp, err := noKeepAliveClient().Get(n.URL("/delay"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := time.Since(start)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	t.Logf("/delay: head after %v, last byte after %v", head, total)
	if !bytes.Equal(body, PatternBody(DelayBodySize)) {
		t.Errorf("body: %d bytes, want PatternBody(%d)", len(body), DelayBodySize)
	}
	if head > 500*time.Millisecond {
		t.Errorf("head took %v, want it at once", head)
	}
	if total < DelayTime-300*time.Millisecond || total > DelayTime+2*time.Second {
		t.Errorf("last byte after %v, want about %v", total, DelayTime)
	}
}

// TestNginxKeepaliveRequests checks that keepalive_requests 3 makes nginx
// close a connection after its third request, and that ConnectionCount
// and Requests see it.
func TestNginxKeepaliveRequests(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{KeepaliveRequests: 3})

	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 1; i <= 3; i++ {
		resp, body := rawGet(t, c, br, "/small")
		if resp.StatusCode != 200 || string(body) != SmallBody {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if last := i == 3; resp.Close != last {
			t.Errorf("request %d: Connection: close is %v, want %v", i, resp.Close, last)
		}
	}
	// nginx has closed its end: the next read sees EOF, not a reply.
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /small HTTP/1.1\r\nHost: fixture\r\n\r\n") // may fail; the read decides
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("read %q after the third reply, want EOF", b)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the third reply: %v, want EOF or reset", err)
	}

	reqs := n.WaitRequests(3, 5*time.Second)
	if len(reqs) != 3 {
		t.Fatalf("logged %d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.ConnRequests != i+1 || r.Connection != reqs[0].Connection {
			t.Errorf("request %d logged as %+v", i+1, r)
		}
	}
	if got := n.ConnectionCount(); got != 1 {
		t.Errorf("ConnectionCount = %d, want 1", got)
	}

	// A second connection.
	c2, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rawGet(t, c2, bufio.NewReader(c2), "/small")
	n.WaitRequests(4, 5*time.Second)
	if got := n.ConnectionCount(); got != 2 {
		t.Errorf("ConnectionCount = %d after a second connection, want 2", got)
	}
}

func TestNginxKeepaliveTimeout(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{KeepaliveTimeout: "1s"})
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	resp, _ := rawGet(t, c, br, "/small")
	if resp.Close {
		t.Fatal("reply says Connection: close, want keep-alive")
	}
	start := time.Now()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle read: %v, want EOF", err)
	}
	if idle := time.Since(start); idle < 700*time.Millisecond || idle > 3*time.Second {
		t.Errorf("nginx closed the idle connection after %v, want about 1s", idle)
	}
}

// TestNginxConnectionCount checks ConnectionCount against a client that
// reuses one connection and one that opens a connection per request.
func TestNginxConnectionCount(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	reuse := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := 0; i < 10; i++ {
		get(t, reuse, n.URL("/small"))
	}
	n.WaitRequests(10, 5*time.Second)
	if got := n.ConnectionCount(); got != 1 {
		t.Errorf("after 10 requests on one connection: ConnectionCount = %d, want 1", got)
	}

	fresh := noKeepAliveClient()
	for i := 0; i < 5; i++ {
		get(t, fresh, n.URL("/16k"))
	}
	reqs := n.WaitRequests(15, 5*time.Second)
	if len(reqs) != 15 {
		t.Errorf("len(Requests()) = %d, want 15", len(reqs))
	}
	if got := n.ConnectionCount(); got != 6 {
		t.Errorf("after 5 more requests without keep-alive: ConnectionCount = %d, want 6", got)
	}
	// Connections opened without a request are not counted.
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := n.ConnectionCount(); got != 6 {
		t.Errorf("after an empty connection: ConnectionCount = %d, want 6", got)
	}
}

// processGone reports whether no process with this PID exists any more.
func processGone(pid int) bool {
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

func TestNginxCleanupStopsProcess(t *testing.T) {
	t.Parallel()
	var pid int
	var addr string
	t.Run("inner", func(t *testing.T) {
		n := StartNginx(t, NginxOptions{})
		pid, addr = n.PID(), n.Addr()
		if processGone(pid) {
			t.Fatalf("nginx pid %d not running", pid)
		}
		// An idle keep-alive connection must not hold up the stop.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		rawGet(t, c, bufio.NewReader(c), "/small")
	})
	if pid == 0 {
		t.Fatal("inner test did not start nginx")
	}
	// Cleanup waited for the process, so it is reaped: no such PID, not
	// even a zombie.
	if !processGone(pid) {
		t.Errorf("nginx pid %d still exists after cleanup", pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); runtime.GOOS == "linux" && err == nil {
		t.Errorf("/proc/%d still exists after cleanup", pid)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after cleanup", addr)
	}
}

func TestNginxStop(t *testing.T) {
	t.Parallel()
	n := StartNginx(t, NginxOptions{})
	get(t, noKeepAliveClient(), n.URL("/small"))
	start := time.Now()
	n.Stop()
	if !n.Exited() {
		t.Fatal("Exited() = false after Stop")
	}
	if !processGone(n.PID()) {
		t.Errorf("pid %d still exists after Stop", n.PID())
	}
	if d := time.Since(start); d > stopTimeout {
		t.Errorf("Stop took %v; SIGQUIT should be enough", d)
	}
	n.Stop() // again: no effect
}

// fakeTB records Skip and Fatal instead of ending the test, so the
// missing-nginx paths can be checked. Skip and Fatal end the calling
// goroutine, like the real ones.
type fakeTB struct {
	testing.TB
	mu              sync.Mutex
	skipped, failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }

func TestNginxMissing(t *testing.T) {
	// Not parallel: it changes PATH, CI and nginxPaths.
	t.Setenv("PATH", t.TempDir())
	saved := nginxPaths
	nginxPaths = []string{"/nonexistent/sbin/nginx"}
	defer func() { nginxPaths = saved }()

	for _, ci := range []string{"", "false", "true"} {
		t.Setenv("CI", ci)
		f := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			StartNginx(f, NginxOptions{})
			t.Errorf("CI=%q: StartNginx returned without nginx", ci)
		}()
		<-done
		if ci == "true" {
			if f.failed == "" || f.skipped != "" {
				t.Errorf("CI=true: failed=%q skipped=%q, want a failure", f.failed, f.skipped)
			}
		} else if f.skipped == "" || f.failed != "" {
			t.Errorf("CI=%q: failed=%q skipped=%q, want a skip", ci, f.failed, f.skipped)
		}
		if msg := f.failed + f.skipped; !strings.Contains(msg, "nginx not found") {
			t.Errorf("CI=%q: message %q does not say nginx is missing", ci, msg)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	r, err := parseLogLine("17 2 200 13 83 GET /small?a=b c")
	if err != nil {
		t.Fatal(err)
	}
	want := LoggedRequest{Connection: 17, ConnRequests: 2, Status: 200, BodyBytesSent: 13, RequestLength: 83, Method: "GET", URI: "/small?a=b c"}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{"", "1 2 3", "x 1 200 13 83 GET /", "1 1 200 -x 83 GET /"} {
		if _, err := parseLogLine(bad); err == nil {
			t.Errorf("parseLogLine(%q): no error", bad)
		}
	}
}

// TestNginxPortTaken checks that StartNginx starts again on other ports
// when a port it picked is taken before nginx binds it, even by a
// listener that accepts connections.
func TestNginxPortTaken(t *testing.T) {
	// Not parallel: it replaces pickPort.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	taken := l.Addr().(*net.TCPAddr).Port

	saved := pickPort
	defer func() { pickPort = saved }()
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return taken, nil
		}
		return freePort()
	}

	n := StartNginx(t, NginxOptions{})
	if n.Addr() == l.Addr().String() {
		t.Fatalf("nginx reports the taken address %s", n.Addr())
	}
	resp, body := get(t, noKeepAliveClient(), n.URL("/small"))
	if resp.StatusCode != 200 || string(body) != SmallBody {
		t.Errorf("GET /small: %d %q", resp.StatusCode, body)
	}
	if calls < 3 {
		t.Errorf("pickPort called %d times, want a second start", calls)
	}
}

func TestReadAccessLogPartialLine(t *testing.T) {
	path := t.TempDir() + "/access.log"
	if err := os.WriteFile(path, []byte("1 1 200 13 70 GET /small\n2 1 200 13 70 GET /small\n3 1 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	reqs, err := readAccessLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 2 || reqs[1].Connection != 2 {
		t.Errorf("got %+v, want the two complete lines", reqs)
	}
}
