package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// SquidOptions configures the Squid fixture. The zero value is a plain
// forward proxy (a parent, to the engine) that allows every client on
// 127.0.0.0/8, caches nothing, and relays CONNECT to any port.
type SquidOptions struct {
	// Auth is the proxy authentication Squid demands: "" (none), "basic"
	// (basic_ncsa_auth), "digest" (digest_file_auth), "ntlm"
	// (ntlm_fake_auth, which accepts any well-formed NTLM exchange) or
	// "negotiate" (negotiate_kerberos_auth, for KerberosHTTPService, with
	// the keytab that KRB5_KTNAME names: start a Kerberos fixture first).
	// Users without Auth means "basic".
	Auth string
	// Users maps user names to passwords for basic and digest.
	Users map[string]string
	// Realm is the basic and digest realm; default "serverside-test".
	Realm string
	// Origin, when set ("127.0.0.1:port"), makes Squid a reverse proxy
	// (an accelerator) in front of that origin instead of a forward proxy:
	// it takes origin-form requests, and its authentication challenges
	// are 401 with WWW-Authenticate instead of 407.
	Origin string
	// ConnectPorts, when not empty, are the only ports CONNECT may reach
	// (Squid's SSL_ports); CONNECT to another port is denied with 403.
	// Empty allows CONNECT to any port.
	ConnectPorts []int
	// TLSCert and TLSKey, when both set (paths of PEM files), add a TLS
	// listener (https_port, TLSAddr): a parent proxy spoken to over TLS.
	TLSCert, TLSKey string
	// Extra lines appended to squid.conf.
	Extra []string
}

// SquidRealm is the default realm of the Squid and Apache fixtures.
const SquidRealm = "serverside-test"

// Squid is a real Squid process on 127.0.0.1, started by StartSquid and
// stopped, by its PID, when the test ends.
type Squid struct {
	*server
	dir       string
	accessLog string
	tlsAddr   string
}

// SquidBinary returns the path of the squid binary, or "".
func SquidBinary() string { return findBinary("squid", "/usr/sbin/squid") }

// squidHelpers is where Debian installs Squid's authentication helpers.
const squidHelpers = "/usr/lib/squid"

// StartSquid starts Squid in the foreground (squid -N) with a
// configuration written for opts, waits until it accepts connections, and
// registers a cleanup that stops it. It skips the test when Squid is not
// installed (fails under CI=true).
func StartSquid(tb testing.TB, opts SquidOptions) *Squid {
	tb.Helper()
	bin := SquidBinary()
	requireBinary(tb, "squid", bin, "squid")
	if opts.Auth == "negotiate" {
		requireBinary(tb, "negotiate_kerberos_auth", findBinary("negotiate_kerberos_auth", squidHelpers+"/negotiate_kerberos_auth"), "squid")
	}
	if opts.Realm == "" {
		opts.Realm = SquidRealm
	}
	if opts.Auth == "" && len(opts.Users) > 0 {
		opts.Auth = "basic"
	}
	// Squid drops root privileges to its "proxy" user, which must be
	// able to write its logs and read the password files and keys.
	dir := worldDir(tb, "squid-")
	if opts.TLSCert != "" && opts.TLSKey != "" {
		for _, f := range []*string{&opts.TLSCert, &opts.TLSKey} {
			data, err := os.ReadFile(*f)
			if err != nil {
				tb.Fatal(err)
			}
			dst := filepath.Join(dir, "tls-"+filepath.Base(*f))
			if err := os.WriteFile(dst, data, 0o644); err != nil { // a test key
				tb.Fatal(err)
			}
			*f = dst
		}
	}
	tlsAddr := ""
	s := startOnFreePort(tb, "squid", func(port int, addr string) (*server, error) {
		tlsAddr = ""
		if opts.TLSCert != "" && opts.TLSKey != "" {
			tport, err := pickPort()
			if err != nil {
				tb.Fatal(err)
			}
			tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tport))
		}
		conf, err := writeSquidConfig(dir, addr, tlsAddr, opts)
		if err != nil {
			tb.Fatalf("squid fixture: %v", err)
		}
		cacheLog := filepath.Join(dir, "cache.log")
		return startServer(tb, "squid", bin, []string{"-N", "-n", squidService(port), "-f", conf}, dir, addr, syscall.SIGTERM, cacheLog)
	})
	return &Squid{server: s, dir: dir, accessLog: filepath.Join(dir, "access.log"), tlsAddr: tlsAddr}
}

// squidService is the instance's service name (squid -n). Squid names
// its shared memory segments after it ("/squid-cf__metadata.shm" for the
// default "squid"), so two instances under the default name, from two
// test processes at once, collide and the second exits; the port makes it
// unique on this machine.
func squidService(port int) string { return "sstest" + strconv.Itoa(port) }

func writeSquidConfig(dir, addr, tlsAddr string, opts SquidOptions) (string, error) {
	var c strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	if opts.Origin != "" {
		host, port, err := net.SplitHostPort(opts.Origin)
		if err != nil {
			return "", fmt.Errorf("SquidOptions.Origin: %w", err)
		}
		line("http_port %s accel defaultsite=%s no-vhost", addr, opts.Origin)
		line("cache_peer %s parent %s 0 no-query originserver name=origin", host, port)
		line("cache_peer_access origin allow all")
	} else {
		line("http_port %s", addr)
	}
	if tlsAddr != "" {
		line("https_port %s tls-cert=%s tls-key=%s", tlsAddr, opts.TLSCert, opts.TLSKey)
	}
	line("pid_filename %s", filepath.Join(dir, "squid.pid"))
	line("cache_log %s", filepath.Join(dir, "cache.log"))
	line("access_log stdio:%s", filepath.Join(dir, "access.log"))
	line("coredump_dir %s", dir)
	line("cache deny all")
	line("cache_mem 8 MB")
	line("shutdown_lifetime 0 seconds")
	line("visible_hostname serverside-test")
	// Nothing outside the machine: no pinger, ICP, HTCP or outside DNS.
	line("pinger_enable off")
	line("icp_port 0")
	line("htcp_port 0")
	line("dns_nameservers 127.0.0.1")
	line("acl loopback src 127.0.0.0/8")
	if len(opts.ConnectPorts) > 0 {
		var ports strings.Builder
		for _, p := range opts.ConnectPorts {
			fmt.Fprintf(&ports, " %d", p)
		}
		line("acl SSL_ports port%s", ports.String())
		line("acl CONNECT method CONNECT")
		line("http_access deny CONNECT !SSL_ports")
	}
	switch opts.Auth {
	case "":
		line("http_access allow loopback")
	case "basic", "digest":
		users, err := writeSquidUsers(dir, opts)
		if err != nil {
			return "", err
		}
		if opts.Auth == "basic" {
			line("auth_param basic program %s/basic_ncsa_auth %s", squidHelpers, users)
			line("auth_param basic realm %s", opts.Realm)
		} else {
			line("auth_param digest program %s/digest_file_auth %s", squidHelpers, users)
			line("auth_param digest realm %s", opts.Realm)
		}
		line("auth_param %s children 2", opts.Auth)
		line("acl authed proxy_auth REQUIRED")
		line("http_access allow loopback authed")
	case "ntlm":
		line("auth_param ntlm program %s/ntlm_fake_auth", squidHelpers)
		line("auth_param ntlm children 2")
		line("acl authed proxy_auth REQUIRED")
		line("http_access allow loopback authed")
	case "negotiate":
		line("auth_param negotiate program %s/negotiate_kerberos_auth -s %s", squidHelpers, Principal(KerberosHTTPService))
		line("auth_param negotiate children 2")
		line("auth_param negotiate keep_alive on")
		line("acl authed proxy_auth REQUIRED")
		line("http_access allow loopback authed")
	default:
		return "", fmt.Errorf("SquidOptions.Auth %q: want basic, digest, ntlm or negotiate", opts.Auth)
	}
	line("http_access deny all")
	for _, l := range opts.Extra {
		line("%s", l)
	}
	path := filepath.Join(dir, "squid.conf")
	return path, os.WriteFile(path, []byte(c.String()), 0o644)
}

// writeSquidUsers writes the password file: htpasswd's MD5 format for
// basic_ncsa_auth, plain "user:password" lines for digest_file_auth.
func writeSquidUsers(dir string, opts SquidOptions) (string, error) {
	var b strings.Builder
	for _, u := range sortedUsers(opts.Users) {
		if opts.Auth == "digest" {
			fmt.Fprintf(&b, "%s:%s\n", u, opts.Users[u])
			continue
		}
		l, err := htpasswdLine(u, opts.Users[u])
		if err != nil {
			return "", err
		}
		b.WriteString(l)
	}
	path := filepath.Join(dir, "users")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// htpasswdLine returns "user:$apr1$...\n" from htpasswd (apache2-utils),
// a format both Squid's basic_ncsa_auth and Apache read.
func htpasswdLine(user, pass string) (string, error) {
	bin := findBinary("htpasswd", "/usr/bin/htpasswd")
	if bin == "" {
		return "", fmt.Errorf("htpasswd not found: install apache2-utils")
	}
	out, err := exec.Command(bin, "-nbm", user, pass).Output()
	if err != nil {
		return "", fmt.Errorf("htpasswd: %w", err)
	}
	return strings.TrimSpace(string(out)) + "\n", nil
}

func sortedUsers(m map[string]string) []string {
	us := make([]string, 0, len(m))
	for u := range m {
		us = append(us, u)
	}
	sort.Strings(us)
	return us
}

// AccessLog returns Squid's access log so far, one line per finished
// request (Squid's native format: time, elapsed, client, code/status,
// bytes, method, URL, user, hierarchy/peer, type). Connections that sent
// no request (the fixture's readiness probe among them) are left out.
func (s *Squid) AccessLog() []string {
	data, err := os.ReadFile(s.accessLog)
	if err != nil && !os.IsNotExist(err) {
		s.tb.Errorf("squid fixture: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" && !strings.Contains(l, "error:transaction-end-before-headers") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TLSAddr is the TLS listener's address ("127.0.0.1:port"), or "" without
// SquidOptions.TLSCert.
func (s *Squid) TLSAddr() string { return s.tlsAddr }

// URL returns "http://127.0.0.1:port".
func (s *Squid) URL() string { return "http://" + s.addr }
