package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// KerberosRealm is the realm of the Kerberos fixture.
const KerberosRealm = "SERVERSIDE.TEST"

// KerberosHTTPService is the service principal that the Kerberos fixture
// always creates, without its realm: the one curl asks a ticket for when
// it speaks Negotiate to http://127.0.0.1:port, to an origin or to a
// proxy (the fixture's configuration turns off the canonicalization of
// host names, so the address is the host name).
const KerberosHTTPService = "HTTP/127.0.0.1"

// KerberosOptions configures the Kerberos fixture.
type KerberosOptions struct {
	// Users maps user principals (without the realm) to passwords.
	Users map[string]string
	// Services are more service principals ("HTTP/localhost") whose keys
	// go into the keytab, besides KerberosHTTPService.
	Services []string
}

// Kerberos is a throwaway MIT Kerberos realm: a KDC (Debian's krb5-kdc)
// on 127.0.0.1, started by StartKerberos and stopped, by its PID, when the
// test ends, with a keytab holding the keys of its service principals.
//
// Nothing on the system changes: the realm's files are in a temporary
// directory, and the test process's environment names them (KRB5_CONFIG,
// KRB5_KDC_PROFILE, KRB5_KTNAME, KRB5CCNAME, for the test's duration), so
// that the servers and clients a test starts after StartKerberos (Apache,
// Squid and its helpers, curl) use this realm.
type Kerberos struct {
	*server
	dir    string
	keytab string
	ccache string
}

// KerberosBinary returns the path of the krb5kdc binary, or "".
func KerberosBinary() string { return findBinary("krb5kdc", "/usr/sbin/krb5kdc") }

// StartKerberos creates a realm for opts, starts its KDC in the
// foreground (krb5kdc -n), waits until it accepts connections, and
// registers a cleanup that stops it. It skips the test when the Kerberos
// tools are missing (fails under CI=true). It sets environment variables
// with tb.Setenv, so the test must not be parallel.
func StartKerberos(tb testing.TB, opts KerberosOptions) *Kerberos {
	tb.Helper()
	bin := KerberosBinary()
	requireBinary(tb, "krb5kdc", bin, "krb5-kdc")
	kdbUtil := findBinary("kdb5_util", "/usr/sbin/kdb5_util")
	requireBinary(tb, "kdb5_util", kdbUtil, "krb5-kdc")
	kadmin := findBinary("kadmin.local", "/usr/sbin/kadmin.local")
	requireBinary(tb, "kadmin.local", kadmin, "krb5-admin-server")
	requireBinary(tb, "kinit", findBinary("kinit", "/usr/bin/kinit"), "krb5-user")

	// Apache's and Squid's unprivileged processes read the configuration
	// and the keytab.
	dir := worldDir(tb, "kerberos-")
	k := &Kerberos{dir: dir, keytab: filepath.Join(dir, "http.keytab"), ccache: "FILE:" + filepath.Join(dir, "ccache")}
	tb.Setenv("KRB5_CONFIG", filepath.Join(dir, "krb5.conf"))
	tb.Setenv("KRB5_KDC_PROFILE", filepath.Join(dir, "kdc.conf"))
	tb.Setenv("KRB5_KTNAME", "FILE:"+k.keytab)
	tb.Setenv("KRB5CCNAME", k.ccache)
	// No replay cache: its default place is /var/tmp, outside the test.
	tb.Setenv("KRB5RCACHETYPE", "none")

	// The database first, under a configuration whose port is a
	// placeholder: the port is chosen when the KDC starts.
	if err := k.writeConfig("127.0.0.1:1"); err != nil {
		tb.Fatalf("kerberos fixture: %v", err)
	}
	if err := runTool(kdbUtil, "create", "-s", "-r", KerberosRealm, "-P", "fixture-master-key"); err != nil {
		tb.Fatalf("kerberos fixture: %v", err)
	}
	for _, u := range sortedUsers(opts.Users) {
		if err := runTool(kadmin, "-r", KerberosRealm, "-q", fmt.Sprintf("addprinc -pw %s %s", opts.Users[u], u)); err != nil {
			tb.Fatalf("kerberos fixture: %v", err)
		}
	}
	for _, s := range append([]string{KerberosHTTPService}, opts.Services...) {
		for _, q := range []string{"addprinc -randkey " + s, "ktadd -k " + k.keytab + " " + s} {
			if err := runTool(kadmin, "-r", KerberosRealm, "-q", q); err != nil {
				tb.Fatalf("kerberos fixture: %v", err)
			}
		}
	}
	if err := os.Chmod(k.keytab, 0o644); err != nil { // a test key, for the servers' users
		tb.Fatal(err)
	}
	k.server = startOnFreePort(tb, "krb5kdc", func(_ int, addr string) (*server, error) {
		if err := k.writeConfig(addr); err != nil {
			tb.Fatalf("kerberos fixture: %v", err)
		}
		return startServer(tb, "krb5kdc", bin, []string{"-n"}, dir, addr, syscall.SIGTERM, filepath.Join(dir, "kdc.log"))
	})
	return k
}

// writeConfig writes krb5.conf (the clients' and servers' view of the
// realm: no DNS, host names as they are) and kdc.conf (the KDC's
// database and listener) for a KDC on addr.
func (k *Kerberos) writeConfig(addr string) error {
	krb5 := strings.Join([]string{
		"[libdefaults]",
		"  default_realm = " + KerberosRealm,
		"  dns_lookup_kdc = false",
		"  dns_lookup_realm = false",
		"  rdns = false",
		"  dns_canonicalize_hostname = false",
		"  udp_preference_limit = 1",
		"[realms]",
		"  " + KerberosRealm + " = {",
		"    kdc = " + addr,
		"  }",
		"",
	}, "\n")
	kdc := strings.Join([]string{
		"[kdcdefaults]",
		"  kdc_listen = " + addr,
		"  kdc_tcp_listen = " + addr,
		"[realms]",
		"  " + KerberosRealm + " = {",
		"    database_name = " + filepath.Join(k.dir, "principal"),
		"    key_stash_file = " + filepath.Join(k.dir, "stash"),
		"    acl_file = " + filepath.Join(k.dir, "kadm5.acl"),
		"  }",
		"[logging]",
		"  kdc = FILE:" + filepath.Join(k.dir, "kdc.log"),
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(k.dir, "krb5.conf"), []byte(krb5), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(k.dir, "kdc.conf"), []byte(kdc), 0o644)
}

// runTool runs a Kerberos tool, its output going into the error on failure.
func runTool(bin string, args ...string) error {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return nil
}

// Kinit logs user in (kinit with its password) into the credential cache
// that KRB5CCNAME names, the one curl then uses for Negotiate.
func (k *Kerberos) Kinit(tb testing.TB, user, password string) {
	tb.Helper()
	cmd := exec.Command(findBinary("kinit", "/usr/bin/kinit"), user)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("kinit %s: %v\n%s\n%s", user, err, out, k.diagnostics())
	}
}

// NegotiateToken returns the Authorization field value ("Negotiate
// <base64>") that curl sends, for the user logged in with Kinit, to an
// origin on 127.0.0.1 that asks for Negotiate: an SPNEGO token with a
// ticket for KerberosHTTPService, which any server with the fixture's
// keytab accepts (the fixture keeps no replay cache). Tests send it
// themselves, to drive a handshake one message at a time.
func (k *Kerberos) NegotiateToken(tb testing.TB) string {
	tb.Helper()
	got := make(chan string, 1)
	o := NewOrigin(tb, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			head, err := ReadHead(br)
			if err != nil {
				return
			}
			for _, l := range head {
				if name, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(name, "Authorization") {
					select {
					case got <- strings.TrimSpace(v):
					default:
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
					return
				}
			}
			if _, err := io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	defer o.Close()
	// curl fails the mutual authentication that the origin does not
	// answer; the token is what counts.
	out, _ := exec.Command("curl", "-sS", "--max-time", "10", "--negotiate", "-u", ":", "http://"+o.Addr()+"/").CombinedOutput()
	select {
	case v := <-got:
		if !strings.HasPrefix(v, "Negotiate ") {
			tb.Fatalf("curl sent Authorization %q, want Negotiate", v)
		}
		return v
	default:
		tb.Fatalf("curl sent no Negotiate token (is there a ticket? Kinit first):\n%s", out)
		return ""
	}
}

// Keytab is the path of the keytab with the service principals' keys
// (also named by KRB5_KTNAME).
func (k *Kerberos) Keytab() string { return k.keytab }

// Principal returns name@KerberosRealm.
func Principal(name string) string { return name + "@" + KerberosRealm }
