package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// SquidBinary is where StartSquid looks for squid.
const SquidBinary = "/usr/sbin/squid"

// SquidAuthHelper is Debian's Basic authentication helper for htpasswd
// files.
const SquidAuthHelper = "/usr/lib/squid/basic_ncsa_auth"

// SquidOptions configures the squid fixture.
type SquidOptions struct {
	// ConnectPorts are the ports CONNECT may reach (squid's SSL_ports);
	// CONNECT to any other port is denied (403).
	ConnectPorts []int
	// Users, when not empty, requires Basic proxy authentication
	// (basic_ncsa_auth over an htpasswd file of these user/password
	// pairs): a request without valid credentials is answered 407.
	Users map[string]string
	// TLSCert and TLSKey, when both set (paths of PEM files), add a TLS
	// listener (https_port, TLSAddr): a parent proxy spoken to over TLS.
	TLSCert, TLSKey string
}

// Squid is a real squid process on 127.0.0.1 acting as a forward proxy
// (no cache) for clients on 127.0.0.1, started by StartSquid and stopped by
// PID when the test ends.
type Squid struct {
	tb      testing.TB
	dir     string
	addr    string
	tlsAddr string
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
}

// StartSquid starts squid in the foreground (squid -N) with a minimal
// configuration in a fresh tb.TempDir() and waits until it accepts
// connections. It skips the test when squid (or, with Users, the
// authentication helper or openssl to hash the passwords) is missing, and
// fails instead under CI=true.
func StartSquid(tb testing.TB, opts SquidOptions) *Squid {
	tb.Helper()
	need := []string{SquidBinary}
	if len(opts.Users) > 0 {
		need = append(need, SquidAuthHelper)
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				tb.Fatalf("%s not found; under CI=true it is required (scripts/test.sh installs squid)", p)
			}
			tb.Skipf("%s not found: install squid", p)
		}
	}
	if len(opts.ConnectPorts) == 0 {
		opts.ConnectPorts = []int{443}
	}
	dir := tb.TempDir()
	// Run as root, squid drops to its effective user (proxy on Debian):
	// that user must write the logs and read the password file and keys.
	owner := func(string) {}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("proxy"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			_ = os.Chmod(filepath.Dir(dir), 0o755)
			_ = os.Chmod(dir, 0o755)
			owner = func(p string) { _ = os.Chown(p, uid, gid) }
			owner(dir)
		}
	}
	var tlsFiles []string
	if opts.TLSCert != "" && opts.TLSKey != "" {
		for _, src := range []string{opts.TLSCert, opts.TLSKey} {
			data, err := os.ReadFile(src)
			if err != nil {
				tb.Fatal(err)
			}
			dst := filepath.Join(dir, "tls-"+filepath.Base(src))
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				tb.Fatal(err)
			}
			owner(dst)
			tlsFiles = append(tlsFiles, dst)
		}
	}
	passwd := ""
	if len(opts.Users) > 0 {
		passwd = filepath.Join(dir, "htpasswd")
		var b strings.Builder
		for u, p := range opts.Users {
			// MD5-crypt, which basic_ncsa_auth checks through crypt(3).
			out, err := exec.Command("openssl", "passwd", "-1", "-salt", "ssidetst", p).Output()
			if err != nil {
				tb.Skipf("openssl passwd: %v", err)
			}
			fmt.Fprintf(&b, "%s:%s\n", u, strings.TrimSpace(string(out)))
		}
		if err := os.WriteFile(passwd, []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	var lastErr error
	for try := 0; try < startTries; try++ {
		s, err := startSquidOnce(tb, dir, passwd, tlsFiles, opts, try)
		if err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	tb.Fatalf("squid fixture: %v", lastErr)
	return nil
}

func startSquidOnce(tb testing.TB, dir, passwd string, tlsFiles []string, opts SquidOptions, try int) (*Squid, error) {
	port, err := pickPort()
	if err != nil {
		return nil, err
	}
	s := &Squid{tb: tb, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		out: &syncBuffer{}, done: make(chan struct{})}
	data := map[string]any{
		"Addr": s.addr, "Dir": dir, "Ports": opts.ConnectPorts, "Passwd": passwd, "Helper": SquidAuthHelper,
	}
	if len(tlsFiles) == 2 {
		tport, err := pickPort()
		if err != nil {
			return nil, err
		}
		if tport == port {
			return nil, fmt.Errorf("%w: port %d picked twice", errAddrInUse, port)
		}
		s.tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tport))
		data["TLS"], data["Cert"], data["Key"] = s.tlsAddr, tlsFiles[0], tlsFiles[1]
	}
	conf := filepath.Join(dir, fmt.Sprintf("squid-%d.conf", try))
	var b bytes.Buffer
	if err := squidTemplate.Execute(&b, data); err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
		return nil, err
	}
	// A service name of its own (-n) keeps its shared-memory segments
	// apart from any other squid on the machine.
	name := fmt.Sprintf("sst%d%d", os.Getpid(), port)
	s.cmd = exec.Command(SquidBinary, "-N", "-n", name, "-f", conf)
	s.cmd.Dir = dir
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting squid: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("squid exited during startup\n%s\n%s", s.out.String(), s.cacheLog())
		default:
		}
		if s.ready() {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("squid not ready on %s within %v\n%s", s.addr, startTimeout, s.cacheLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready reports that every listener accepts connections.
func (s *Squid) ready() bool {
	for _, a := range []string{s.addr, s.tlsAddr} {
		if a == "" {
			continue
		}
		c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// TLSAddr returns the TLS listener's address, or "" without one.
func (s *Squid) TLSAddr() string { return s.tlsAddr }

// Addr returns squid's listening address, "127.0.0.1:port".
func (s *Squid) Addr() string { return s.addr }

// AccessLog returns squid's access log so far.
func (s *Squid) AccessLog() string {
	data, _ := os.ReadFile(filepath.Join(s.dir, "access.log"))
	return string(data)
}

func (s *Squid) cacheLog() string {
	data, _ := os.ReadFile(filepath.Join(s.dir, "cache.log"))
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}

// Stop stops squid by its PID: SIGTERM (shutdown_lifetime is 0), then
// SIGKILL after a few seconds. It waits for the process to be reaped.
func (s *Squid) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

var squidTemplate = template.Must(template.New("squid.conf").Parse(`# Written by the serverside bench fixture (bench/squid.go).
http_port {{.Addr}}
{{- if .TLS}}
https_port {{.TLS}} tls-cert={{.Cert}} tls-key={{.Key}}
{{- end}}
pid_filename {{.Dir}}/squid.pid
cache_log {{.Dir}}/cache.log
access_log stdio:{{.Dir}}/access.log
coredump_dir {{.Dir}}
cache deny all
cache_mem 8 MB
shutdown_lifetime 0 seconds
pinger_enable off
icp_port 0
htcp_port 0
dns_nameservers 127.0.0.1
acl SSL_ports port{{range .Ports}} {{.}}{{end}}
acl CONNECT method CONNECT
acl fixture_clients src 127.0.0.1/32
{{- if .Passwd}}
auth_param basic program {{.Helper}} {{.Passwd}}
auth_param basic children 2
auth_param basic realm serverside-test
acl fixture_users proxy_auth REQUIRED
{{- end}}
http_access deny CONNECT !SSL_ports
http_access deny !fixture_clients
{{- if .Passwd}}
http_access deny !fixture_users
{{- end}}
http_access allow fixture_clients
http_access deny all
`))
