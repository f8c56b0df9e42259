package engine_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// The authentication tests run against the bench package's real Apache
// and Squid fixtures. Each server also writes a log of its own here, in a
// format that names the client's (the engine's) source port, so that the
// tests can tell connections apart.

// logDir returns a directory the servers' unprivileged workers may write
// their log into (t.TempDir's tree is private to its owner).
func logDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d, mode := range map[string]os.FileMode{dir: 0o777, filepath.Dir(dir): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// logLine is one line of the test log: the client's source port, the
// status, the request line's method and target, the authenticated user
// ("-" for none), and for Apache the Proxy-Authorization received.
type logLine struct {
	Port   int
	Status int
	Method string
	Target string
	User   string
	Extra  string
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
					continue // the fixture's startup probe, logged by squid
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

const (
	apacheUser, apachePass = "alice", "s3cret pass"
	apacheBasicRealm       = "basic realm"
	apacheDigestRealm      = "digest realm"
)

// apache is bench's Apache protecting everything with scheme ("basic" or
// "digest", realm apacheBasicRealm or apacheDigestRealm) for apacheUser.
type apache struct {
	addr string
	log  string
}

func startApache(t *testing.T, scheme string, extra ...string) *apache {
	t.Helper()
	log := filepath.Join(logDir(t), "ports.log")
	realm := map[string]string{"basic": apacheBasicRealm, "digest": apacheDigestRealm}[scheme]
	a := bench.StartApache(t, bench.ApacheOptions{
		Auth: scheme, Users: map[string]string{apacheUser: apachePass}, Realm: realm,
		Extra: append([]string{
			`LogFormat "%{remote}p %>s %m %U %u %{Proxy-Authorization}i" authtest`,
			"CustomLog " + log + " authtest",
		}, extra...),
	})
	return &apache{addr: a.Addr(), log: log}
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

// squid is bench's Squid as a forward parent demanding one scheme.
type squid struct {
	addr string
	log  string
}

func startSquid(t *testing.T, opts squidOptions) *squid {
	t.Helper()
	log := filepath.Join(logDir(t), "ports.log")
	extra := []string{
		"logformat authtest %>p %>Hs %rm %ru %un",
		"access_log stdio:" + log + " authtest",
		"strip_query_terms off",
	}
	if opts.idleTimeout > 0 {
		extra = append(extra, fmt.Sprintf("client_idle_pconn_timeout %d seconds", int(opts.idleTimeout/time.Second)))
	}
	realm := map[string]string{"basic": squidBasicRealm, "digest": squidDigestRealm}[opts.scheme]
	s := bench.StartSquid(t, bench.SquidOptions{
		Auth: opts.scheme, Users: map[string]string{squidUser: squidPass}, Realm: realm, Extra: extra,
	})
	return &squid{addr: s.Addr(), log: log}
}
