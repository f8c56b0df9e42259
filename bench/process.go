package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is a real server process (Squid, Apache) started by a fixture: a
// child of the test binary, in the foreground, stopped by its PID when the
// test ends.
type server struct {
	tb      testing.TB
	name    string
	addr    string
	cmd     *exec.Cmd
	output  *syncBuffer
	logs    []string // files whose tails go into failure messages
	stopSig syscall.Signal

	done    chan struct{}
	waitErr error

	stopOnce sync.Once
	stopping chan struct{}
}

// startServer runs bin with args, waits until addr accepts a TCP
// connection (or the process exits, or startTimeout passes), and registers
// a cleanup that stops it. stopSig is the graceful-stop signal.
func startServer(tb testing.TB, name, bin string, args []string, dir, addr string, stopSig syscall.Signal, logs ...string) (*server, error) {
	s := &server{
		tb: tb, name: name, addr: addr, output: &syncBuffer{}, logs: logs, stopSig: stopSig,
		done: make(chan struct{}), stopping: make(chan struct{}),
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout = s.output
	s.cmd.Stderr = s.output
	// The kernel kills the server if the test binary dies without running
	// its cleanups.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(); err != nil {
		s.kill()
		return nil, fmt.Errorf("%w\n%s", err, s.diagnostics())
	}
	tb.Cleanup(s.cleanup)
	return s, nil
}

func (s *server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during startup: %v", s.name, s.waitErr)
		default:
		}
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s within %v: %v", s.name, s.addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server now: the graceful signal, then SIGKILL after
// stopTimeout. It waits until the process has been reaped.
func (s *server) Stop() {
	s.stopOnce.Do(func() {
		close(s.stopping)
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(s.stopSig)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			s.tb.Logf("%s (pid %d) still running %v after %v; sending SIGKILL", s.name, s.PID(), stopTimeout, s.stopSig)
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// PID is the server's process ID.
func (s *server) PID() int { return s.cmd.Process.Pid }

// Addr is the server's listening address, "127.0.0.1:port".
func (s *server) Addr() string { return s.addr }

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *server) cleanup() {
	early := s.exited()
	select {
	case <-s.stopping:
		early = false
	default:
	}
	s.Stop()
	if early {
		s.tb.Errorf("%s (pid %d) exited before the test ended: %v\n%s", s.name, s.PID(), s.waitErr, s.diagnostics())
	}
}

func (s *server) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// diagnostics returns the server's output and the tails of its logs.
func (s *server) diagnostics() string {
	var b strings.Builder
	if out := strings.TrimSpace(s.output.String()); out != "" {
		fmt.Fprintf(&b, "%s output:\n%s\n", s.name, out)
	}
	for _, p := range s.logs {
		data, err := os.ReadFile(p)
		if err != nil || len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		const max = 4096
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "%s log %s:\n%s\n", s.name, p, data)
	}
	return b.String()
}

// findBinary returns the first of paths that is an executable file, after
// looking name up on PATH; "" when there is none.
func findBinary(name string, paths ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// requireBinary skips the test when a server binary is missing, or fails
// it under CI=true, where scripts/test.sh installs it.
func requireBinary(tb testing.TB, what, bin, pkg string) {
	tb.Helper()
	if bin != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s not found; under CI=true it is required: scripts/test.sh installs %s", what, pkg)
	}
	tb.Skipf("%s not found; install it (apt-get install %s) or run scripts/test.sh", what, pkg)
}

// worldDir makes a temporary directory that servers which drop root
// privileges (Squid runs as "proxy", Apache as "www-data") can read and
// write, unlike tb.TempDir's 0700 tree. It is removed when tb ends.
func worldDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Port returns the port of a "host:port" address, failing tb if there is
// none.
func Port(tb testing.TB, addr string) int {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// startOnFreePort calls start with a free 127.0.0.1 port and its address
// until a server comes up, trying again (startTries in all) when the port
// was taken in between; it fails tb otherwise.
func startOnFreePort(tb testing.TB, name string, start func(port int, addr string) (*server, error)) *server {
	tb.Helper()
	var lastErr error
	for try := 0; try < startTries; try++ {
		port, err := pickPort()
		if err != nil {
			tb.Fatal(err)
		}
		s, err := start(port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	tb.Fatalf("%s fixture: %v", name, lastErr)
	return nil
}
