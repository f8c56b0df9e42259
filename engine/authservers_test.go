package engine_test

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
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
	"time"
)

// Real Apache and Squid servers for the authentication tests: each test
// writes a full minimal config into its own temporary directory, starts
// the server in the foreground as its child on a free 127.0.0.1 port and
// stops it (by PID) at cleanup. They skip when the binaries are missing,
// and fail under CI=true.

const (
	apacheBin   = "/usr/sbin/apache2"
	apacheMods  = "/usr/lib/apache2/modules"
	squidBin    = "/usr/sbin/squid"
	squidLibDir = "/usr/lib/squid"
	htpasswdBin = "/usr/bin/htpasswd"
)

func need(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing: scripts/test.sh installs it", p)
			}
			t.Skipf("%s missing (install apache2 and squid, or run scripts/test.sh)", p)
		}
	}
}

// serverDir returns a temporary directory the servers' unprivileged
// workers (nobody) can read: t.TempDir is private to its owner.
func serverDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// daemon is a server process started by a test.
type daemon struct {
	name string
	logs []string // the server's own log files, shown when it fails to start
	addr string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
}

// startDaemon runs bin with args in the foreground and waits until addr
// accepts connections; cleanup sends SIGTERM to that PID, then SIGKILL.
func startDaemon(t *testing.T, name, addr string, logs []string, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, addr: addr, logs: logs, out: new(bytes.Buffer), done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	w := &lockedWriter{d: d}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("%s exited during startup:\n%s", name, d.output())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s: %v\n%s", name, addr, err, d.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedWriter struct{ d *daemon }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	return w.d.out.Write(p)
}

func (d *daemon) output() string {
	d.mu.Lock()
	out := d.out.String()
	d.mu.Unlock()
	for _, l := range d.logs {
		b, _ := os.ReadFile(l)
		out += "\n--- " + l + ":\n" + string(b)
	}
	return out
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// logLine is one line of the servers' test log format: the client's
// (engine's) source port, the status, the request line's method and
// target, and the authenticated user ("-" for none).
type logLine struct {
	Port   int
	Status int
	Method string
	Target string
	User   string
	Extra  string // the rest of the line (Apache: the Proxy-Authorization received)
}

// readLog parses path, waiting (bounded) for at least n lines: servers
// log a request after answering it.
func readLog(t *testing.T, path string, n int) []logLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []logLine
		f, err := os.Open(path)
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fs := strings.Fields(sc.Text())
				if len(fs) < 5 || fs[2] == "-" {
					continue // the startup probe's connection, logged by squid
				}
				port, _ := strconv.Atoi(fs[0])
				st, _ := strconv.Atoi(fs[1])
				out = append(out, logLine{Port: port, Status: st, Method: fs[2], Target: fs[3], User: fs[4],
					Extra: strings.Join(fs[5:], " ")})
			}
			f.Close()
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Apache is a real Apache httpd origin with three protected locations:
// /basic/ (Basic, realm "basic realm"), /digest/ (Digest MD5, realm
// "digest realm") and /stale/ (the same, with nonces that expire after a
// second), each with the file ok.txt ("ok\n"), for the one user
// apacheUser.
type apache struct {
	*daemon
	log string
}

const (
	apacheUser, apachePass = "alice", "s3cret pass"
	apacheBasicRealm       = "basic realm"
	apacheDigestRealm      = "digest realm"
)

func startApache(t *testing.T) *apache {
	t.Helper()
	need(t, apacheBin, htpasswdBin, apacheMods+"/mod_auth_digest.so")
	dir := serverDir(t)
	addr := freePort(t)
	for _, loc := range []string{"basic", "digest", "stale"} {
		writeFile(t, filepath.Join(dir, "htdocs", loc, "ok.txt"), "ok\n", 0o644)
	}
	writeFile(t, filepath.Join(dir, "htpasswd"), htpasswdLine(t, apacheUser, apachePass), 0o644)
	writeFile(t, filepath.Join(dir, "htdigest"), htdigestLine(apacheUser, apacheDigestRealm, apachePass), 0o644)
	a := &apache{log: filepath.Join(dir, "access.log")}
	var mods strings.Builder
	for _, m := range []string{"mpm_event", "authn_core", "authn_file", "authz_core", "authz_user", "auth_basic", "auth_digest"} {
		fmt.Fprintf(&mods, "LoadModule %s_module %s/mod_%s.so\n", m, apacheMods, m)
	}
	// log_config and unixd are compiled into Debian's apache2. Running as
	// root, the worker drops to nobody, which reads dir (0755) and the
	// files (0644); the parent opens the logs before that.
	conf := fmt.Sprintf(`ServerRoot %[1]s
%[2]sServerName 127.0.0.1
Listen %[3]s
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
LogFormat "%%{remote}p %%>s %%m %%U %%u %%{Proxy-Authorization}i" test
CustomLog %[1]s/access.log test
%[4]s
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
DocumentRoot %[1]s/htdocs
<Location /basic>
  AuthType Basic
  AuthName "%[5]s"
  AuthBasicProvider file
  AuthUserFile %[1]s/htpasswd
  Require valid-user
</Location>
<Location /digest>
  AuthType Digest
  AuthName "%[6]s"
  AuthDigestProvider file
  AuthUserFile %[1]s/htdigest
  Require valid-user
</Location>
<Location /stale>
  AuthType Digest
  AuthName "%[6]s"
  AuthDigestProvider file
  AuthUserFile %[1]s/htdigest
  AuthDigestNonceLifetime 1
  Require valid-user
</Location>
`, dir, mods.String(), addr, userGroup(), apacheBasicRealm, apacheDigestRealm)
	writeFile(t, filepath.Join(dir, "httpd.conf"), conf, 0o644)
	a.daemon = startDaemon(t, "apache2", addr, []string{filepath.Join(dir, "error.log")}, apacheBin, "-X", "-f", filepath.Join(dir, "httpd.conf"))
	return a
}

// userGroup drops a root-started server to nobody; an unprivileged run
// keeps its own user.
func userGroup() string {
	if os.Geteuid() == 0 {
		return "User nobody\nGroup nogroup"
	}
	return ""
}

// htpasswdLine is an htpasswd entry made by Apache's own htpasswd (MD5
// "$apr1$", which Apache and Squid's basic_ncsa_auth both accept).
func htpasswdLine(t *testing.T, user, pass string) string {
	t.Helper()
	out, err := exec.Command(htpasswdBin, "-nbm", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	return strings.TrimSpace(string(out)) + "\n"
}

// htdigestLine is the htdigest entry user:realm:md5(user:realm:pass).
func htdigestLine(user, realm, pass string) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + pass))
	return user + ":" + realm + ":" + hex.EncodeToString(sum[:]) + "\n"
}

// squid is a real Squid parent proxy demanding one authentication scheme.
type squid struct {
	*daemon
	log string
}

const (
	squidUser, squidPass = "bob", "hunter 2"
	squidBasicRealm      = "squid basic"
	squidDigestRealm     = "squid digest"
)

// squidOptions picks the scheme squid demands ("basic", "digest" or
// "ntlm") and its idle client-connection timeout (squid's default when
// zero).
type squidOptions struct {
	scheme      string
	idleTimeout time.Duration
}

func startSquid(t *testing.T, opts squidOptions) *squid {
	t.Helper()
	need(t, squidBin, htpasswdBin, squidLibDir+"/basic_ncsa_auth", squidLibDir+"/digest_file_auth", squidLibDir+"/ntlm_fake_auth")
	dir := serverDir(t)
	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(logs, 0o777); err != nil { // squid writes as nobody
		t.Fatal(err)
	}
	addr := freePort(t)
	var authConf string
	switch opts.scheme {
	case "basic":
		writeFile(t, filepath.Join(dir, "passwd"), htpasswdLine(t, squidUser, squidPass), 0o644)
		authConf = fmt.Sprintf("auth_param basic program %s/basic_ncsa_auth %s/passwd\nauth_param basic realm %s\nauth_param basic children 2 startup=1\n",
			squidLibDir, dir, squidBasicRealm)
	case "digest":
		// -c: the file holds user:realm:HA1, not the password.
		writeFile(t, filepath.Join(dir, "digest"), htdigestLine(squidUser, squidDigestRealm, squidPass), 0o644)
		authConf = fmt.Sprintf("auth_param digest program %s/digest_file_auth -c %s/digest\nauth_param digest realm %s\nauth_param digest children 2 startup=1\nauth_param digest nonce_garbage_interval 5 minutes\n",
			squidLibDir, dir, squidDigestRealm)
	case "ntlm":
		authConf = fmt.Sprintf("auth_param ntlm program %s/ntlm_fake_auth\nauth_param ntlm children 2 startup=1\nauth_param ntlm keep_alive on\n", squidLibDir)
	default:
		t.Fatalf("squid scheme %q", opts.scheme)
	}
	idle := ""
	if opts.idleTimeout > 0 {
		idle = fmt.Sprintf("client_idle_pconn_timeout %d seconds\n", int(opts.idleTimeout/time.Second))
	}
	conf := fmt.Sprintf(`http_port %[2]s
pid_filename %[1]s/squid.pid
cache_log %[1]s/logs/cache.log
logformat test %%>p %%>Hs %%rm %%ru %%un
access_log stdio:%[1]s/logs/access.log test
cache deny all
cache_mem 8 MB
coredump_dir %[1]s
netdb_filename none
shutdown_lifetime 0 seconds
strip_query_terms off
client_persistent_connections on
server_persistent_connections on
%[3]s%[4]s%[5]sacl authed proxy_auth REQUIRED
acl local src 127.0.0.1
http_access allow local authed
http_access deny all
`, dir, addr, squidUserConf(), authConf, idle)
	writeFile(t, filepath.Join(dir, "squid.conf"), conf, 0o644)
	s := &squid{log: filepath.Join(logs, "access.log")}
	// A service name of its own (-n): squid names its shared memory
	// segments after it, and two instances under the default name (from
	// two test processes at once) collide.
	_, port, _ := net.SplitHostPort(addr)
	s.daemon = startDaemon(t, "squid", addr, []string{filepath.Join(logs, "cache.log")}, squidBin,
		"-N", "-n", "authtest"+port, "-f", filepath.Join(dir, "squid.conf"))
	return s
}

func squidUserConf() string {
	if os.Geteuid() == 0 {
		return "cache_effective_user nobody\n"
	}
	return ""
}
