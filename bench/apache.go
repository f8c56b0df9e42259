package bench

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// ApacheOptions configures the Apache fixture. The zero value serves its
// files to anyone.
type ApacheOptions struct {
	// Auth protects every path: "" (none), "basic" (mod_auth_basic),
	// "digest" (mod_auth_digest, MD5, qop=auth) or "gssapi"
	// (mod_auth_gssapi: Negotiate, with Keytab; a login is bound to its
	// connection, GssapiConnectionBound, so later requests on that
	// connection need no credentials).
	Auth string
	// Keytab is the path of the keytab for "gssapi" (Kerberos.Keytab).
	Keytab string
	// Users maps user names to passwords.
	Users map[string]string
	// Realm is the authentication realm; default SquidRealm.
	Realm string
	// AlsoOffer is a scheme (such as "NTLM") that Apache's challenges
	// offer before their own, as a server that takes Windows logins
	// besides passwords does: mod_headers adds a WWW-Authenticate field
	// with it to every response that has one. Nothing answers it.
	AlsoOffer string
	// Extra lines appended to httpd.conf.
	Extra []string
}

// Apache is a real Apache httpd (Debian's apache2) on 127.0.0.1, started by
// StartApache and stopped, by its PID, when the test ends. It serves
// /small, whose body is SmallBody, and /16k, PatternBody(Size16K).
//
// The access log has one line per request: status, request line, user,
// and the client's port, which tells connections apart.
type Apache struct {
	*server
	dir string
}

// ApacheBinary returns the path of the apache2 binary, or "".
func ApacheBinary() string { return findBinary("apache2", "/usr/sbin/apache2") }

const apacheModules = "/usr/lib/apache2/modules"

// StartApache starts apache2 in the foreground with a configuration
// written for opts, waits until it accepts connections, and registers a
// cleanup that stops it. It skips the test when Apache is not installed
// (fails under CI=true).
func StartApache(tb testing.TB, opts ApacheOptions) *Apache {
	tb.Helper()
	bin := ApacheBinary()
	requireBinary(tb, "apache2", bin, "apache2")
	if opts.Auth == "gssapi" {
		mod := apacheModules + "/mod_auth_gssapi.so"
		if _, err := os.Stat(mod); err != nil {
			mod = ""
		}
		requireBinary(tb, "mod_auth_gssapi", mod, "libapache2-mod-auth-gssapi")
	}
	if opts.Realm == "" {
		opts.Realm = SquidRealm
	}
	// Apache's children run as www-data and must read the documents and
	// the password file.
	dir := worldDir(tb, "apache-")
	docs := filepath.Join(dir, "htdocs")
	if err := os.MkdirAll(docs, 0o755); err != nil {
		tb.Fatal(err)
	}
	files := map[string][]byte{"small": []byte(SmallBody), "16k": PatternBody(Size16K)}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(docs, name), body, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	s := startOnFreePort(tb, "apache", func(_ int, addr string) (*server, error) {
		conf, err := writeApacheConfig(dir, addr, opts)
		if err != nil {
			tb.Fatalf("apache fixture: %v", err)
		}
		errLog := filepath.Join(dir, "error.log")
		return startServer(tb, "apache2", bin, []string{"-f", conf, "-DFOREGROUND"}, dir, addr, syscall.SIGTERM, errLog)
	})
	return &Apache{server: s, dir: dir}
}

func writeApacheConfig(dir, addr string, opts ApacheOptions) (string, error) {
	var c strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	line("ServerRoot %s", dir)
	line("DefaultRuntimeDir %s", dir)
	line("PidFile %s", filepath.Join(dir, "httpd.pid"))
	line("Listen %s", addr)
	line("ServerName 127.0.0.1")
	mods := []string{"mpm_event", "authn_core", "authn_file", "authz_core", "authz_user", "auth_basic", "auth_digest", "mime"}
	if opts.Auth == "gssapi" {
		mods = append(mods, "auth_gssapi")
	}
	if opts.AlsoOffer != "" {
		mods = append(mods, "headers")
	}
	for _, m := range mods {
		line("LoadModule %s_module %s/mod_%s.so", m, apacheModules, m)
	}
	if os.Geteuid() == 0 {
		line("User www-data")
		line("Group www-data")
	}
	line("ErrorLog %s", filepath.Join(dir, "error.log"))
	line("LogLevel warn")
	line(`LogFormat "%%>s \"%%r\" %%u %%{remote}p" fixture`)
	line("CustomLog %s fixture", filepath.Join(dir, "access.log"))
	line("TypesConfig /etc/mime.types")
	line("KeepAlive On")
	line("MaxKeepAliveRequests 1000")
	line("KeepAliveTimeout 15")
	line("StartServers 1")
	line("ServerLimit 1")
	line("ThreadsPerChild 25")
	line("MaxRequestWorkers 25")
	docs := filepath.Join(dir, "htdocs")
	line("DocumentRoot %s", docs)
	line("<Directory %s>", docs)
	switch opts.Auth {
	case "":
		line("  Require all granted")
	case "gssapi":
		if opts.Keytab == "" {
			return "", fmt.Errorf("ApacheOptions.Auth gssapi: no Keytab")
		}
		line("  AuthType GSSAPI")
		line("  AuthName %q", opts.Realm)
		line("  GssapiCredStore keytab:%s", opts.Keytab)
		line("  GssapiConnectionBound On")
		line("  GssapiBasicAuth Off")
		line("  Require valid-user")
	case "basic", "digest":
		users, err := writeApacheUsers(dir, opts)
		if err != nil {
			return "", err
		}
		if opts.Auth == "basic" {
			line("  AuthType Basic")
		} else {
			line("  AuthType Digest")
			line("  AuthDigestProvider file")
			line("  AuthDigestDomain /")
		}
		line("  AuthName %q", opts.Realm)
		line("  AuthUserFile %s", users)
		line("  Require valid-user")
	default:
		return "", fmt.Errorf("ApacheOptions.Auth %q: want basic, digest or gssapi", opts.Auth)
	}
	line("</Directory>")
	if opts.AlsoOffer != "" {
		line(`Header always add WWW-Authenticate %q "expr=-n %%{resp:WWW-Authenticate}"`, opts.AlsoOffer)
	}
	for _, l := range opts.Extra {
		line("%s", l)
	}
	path := filepath.Join(dir, "httpd.conf")
	return path, os.WriteFile(path, []byte(c.String()), 0o644)
}

// writeApacheUsers writes htpasswd lines for basic and htdigest lines
// ("user:realm:MD5(user:realm:password)") for digest.
func writeApacheUsers(dir string, opts ApacheOptions) (string, error) {
	var b strings.Builder
	for _, u := range sortedUsers(opts.Users) {
		pass := opts.Users[u]
		if opts.Auth == "digest" {
			sum := md5.Sum([]byte(u + ":" + opts.Realm + ":" + pass))
			fmt.Fprintf(&b, "%s:%s:%s\n", u, opts.Realm, hex.EncodeToString(sum[:]))
			continue
		}
		l, err := htpasswdLine(u, pass)
		if err != nil {
			return "", err
		}
		b.WriteString(l)
	}
	path := filepath.Join(dir, "users")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// AccessLog returns Apache's access log so far, one line per request:
// status, "request line", user ("-" for none), client port.
func (a *Apache) AccessLog() []string {
	data, err := os.ReadFile(filepath.Join(a.dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		a.tb.Errorf("apache fixture: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// URL returns "http://127.0.0.1:port" followed by path.
func (a *Apache) URL(path string) string { return "http://" + a.addr + path }
