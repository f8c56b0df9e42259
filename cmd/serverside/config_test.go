package main

import (
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// The example in docs/demo.md is a valid config and means what the doc
// says.
func TestDocExampleConfig(t *testing.T) {
	doc, err := os.ReadFile("../../docs/demo.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```json\n")
	if !ok {
		t.Fatal("docs/demo.md has no ```json block")
	}
	example, _, _ := strings.Cut(rest, "```")
	fc, err := parseConfig("docs/demo.md", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	shards, access, fails := 2, false, 3
	dur := func(d time.Duration) *duration { v := duration(d); return &v }
	want := &fileConfig{
		Listen: "127.0.0.1:8080", Admin: "127.0.0.1:9090", Shards: &shards, AccessLog: &access,
		Origins: []peerSpec{
			{URL: "http://127.0.0.1:8081", Name: "web-a", Weight: 3, MaxConns: 64},
			{URL: "http://127.0.0.1:8082", Name: "127.0.0.1:8082", Weight: 1},
		},
		LB:         "leastconn",
		ClientAuth: "none",
		Timeouts: timeouts{
			Connect: dur(3 * time.Second), Idle: dur(90 * time.Second), ResponseHeader: dur(30 * time.Second),
			TunnelIdle: dur(10 * time.Minute),
		},
		Health:  healthSpec{Path: "/healthz", Interval: dur(2 * time.Second), Timeout: dur(time.Second), Status: 200, MaxFails: &fails},
		ViaName: "proxy1.example.com:8080",
	}
	if !reflect.DeepEqual(fc, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", fc, want)
	}
	// It passes every check of a start too: with its listen address
	// taken, the start ends in the listen error's exit code 1, not in a
	// config error's 2.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := writeConfig(t, example)
	if rc := run([]string{"-config", file, "-listen", busy.Addr().String(), "-admin", ""}); rc != 1 {
		t.Fatalf("starting with the example: exit code %d, want 1 (the listen address is taken)", rc)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		in, field, msg string
		unknown        bool
	}{
		{`{"lsiten": "127.0.0.1:1"}`, "lsiten", "known fields here: listen, admin,", true},
		{`{"origins": [{"url": "http://a:1"}, {"url": "http://b:1", "weigth": 2}]}`, "origins[1].weigth", "known fields here: url, name, weight, max_conns, max_pending, pending_timeout, pipeline, sni, preemptive", true},
		{`{"timeouts": {"connect": "1s", "read": "1s"}}`, "timeouts.read", "known fields here: connect, idle, response_header", true},
		{`{"listen": 8080}`, "listen", "want a string, got a JSON number", false},
		{`{"shards": -1}`, "shards", "must be 0 (GOMAXPROCS) to 1024", false},
		{`{"shards": 100000000000}`, "shards", "must be 0 (GOMAXPROCS) to 1024, got 100000000000", false},
		{`{"admin": "9090"}`, "admin", "want host:port", false},
		{`{"listen": "127.0.0.1:99999"}`, "listen", `want host:port, e.g. 127.0.0.1:9090: port "99999" out of range`, false},
		{`{"lb": "random"}`, "lb", `unknown policy "random"; want one of roundrobin, leastconn, p2c, hash`, false},
		{`{"origins": [{"name": "x"}]}`, "origins[0].url", "missing", false},
		{`{"origins": [{"url": "ftp://a:443"}]}`, "origins[0].url", "want http:// or https://", false},
		{`{"parents": [{"url": "socks5://a:1080"}]}`, "parents[0].url", "want http:// or https://", false},
		{`{"origins": [{"url": "http://a:80", "sni": "a"}]}`, "origins[0].sni", "only for https:// peers", false},
		{`{"connect_ports": "443,x"}`, "connect_ports", `want "any" or ports`, false},
		{`{"client_cert": "c.pem"}`, "client_cert", "client_cert and client_key go together", false},
		{`{"origins": [{"url": "ftp://u:pw@a:80"}]}`, "origins[0].url", `"ftp://u:xxxxx@a:80": want http://`, false},
		{`{"client_auth": "maybe"}`, "client_auth", `unknown mode "maybe"; want none or pass`, false},
		{`{"parents": [{"url": "http://a:80", "preemptive": "no"}]}`, "", "preemptive: want a bool", false},
		{`{"origins": [{"url": "http://a:80/path"}]}`, "origins[0].url", "want only scheme, host and port", false},
		{`{"origins": [{"url": "http://a:99999"}]}`, "origins[0].url", `"http://a:99999": want a port from 1 to 65535`, false},
		{`{"parents": [{"url": "http://a:0"}]}`, "parents[0].url", `"http://a:0": want a port from 1 to 65535`, false},
		{`{"origins": [{"url": "http://a:80", "weight": -1}]}`, "origins[0].weight", "want 1 to 1000", false},
		{`{"parents": [{"url": "http://a:80", "weight": 1001}]}`, "parents[0].weight", "want 1 to 1000", false},
		{`{"parents": [{"url": "http://a:80", "max_conns": -5}]}`, "parents[0].max_conns", "want 0 (no cap) or more", false},
		{`{"origins": [{"url": "http://a:80", "max_pending": -1}]}`, "origins[0].max_pending", "want 0 (the default) or more", false},
		{`{"origins": [{"url": "http://a:80", "pipeline": 65}]}`, "origins[0].pipeline", "want 0 to 64, got 65", false},
		{`{"origins": [{"url": "https://a:443", "pipeline": 8}]}`, "origins[0].pipeline", "only for http:// peers", false},
		{`{"origins": [{"url": "http://a:80", "pending_timeout": "-1s"}]}`, "origins[0].pending_timeout", "negative duration", false},
		{`{"origins": [{"url": "http://a:80", "pending_timeout": "0s"}]}`, "origins[0].pending_timeout", "want a duration above 0 (leave it out for the default)", false},
		{`{"origins": [{"url": "http://a:80"}, {"url": "http://a"}]}`, "origins[1].name", `"a:80" is also the name of origins[0]`, false},
		{`{"timeouts": {"idle": 30}}`, "timeouts.idle", `want a duration string such as "10s"`, false},
		{`{"timeouts": {"idle": "-3s"}}`, "timeouts.idle", `negative duration`, false},
		{`{"timeouts": {"idle": "soon"}}`, "timeouts.idle", `invalid duration`, false},
		{"{\n  \"listen\": \"a:1\",\n  \"shards\": 2,,\n}", "", "line 3 column 15: invalid character ','", false},
		{`{"listen": "a:1"} {}`, "", "invalid character '{' after top-level value", false},
		{`[1]`, "", "want a JSON object at the top", false},
		{"{\n  \"lb\": \"p2c\",\n  \"lb\": \"hash\"\n}", "lb", "line 3: repeated key", false},
		{`{"origins": [{"url": "http://a:1"}, {"url": "http://b:1", "name": "b", "name": "c"}]}`, "origins[1].name", "line 1: repeated key", false},
		{`{"origins": [{"url": "http://a:1"}, {"url": "http://b:1", "weight": 1.5}]}`, "origins[1].weight", "want an integer, got a JSON number 1.5", false},
		{`{"parents": [{"url": "http://a:1", "max_conns": "10"}]}`, "parents[0].max_conns", `want an integer, got a JSON string "10"`, false},
		{`{"shards": 1e3}`, "shards", "want an integer, got a JSON number 1e3", false},
		{`{"origins": [{"url": "http://a:1"}, {"url": "http://b:1", "preemptive": 1}]}`, "origins[1].preemptive", "want a bool, got a JSON number 1", false},
		{`{"origins": [{"url": "http://a:1", "name": ["x"]}]}`, "origins[0].name", "want a string, got a JSON array", false},
		{`{"origins": {"url": "http://a:1"}}`, "origins", "want a list, got a JSON object", false},
		{`{"health": "/healthz"}`, "health", `want an object, got a JSON string "/healthz"`, false},
		{`{"origins": [{"url": "http://a:1"}], "parents": [{"url": "http://b:1"}]}`, "parents", "origins and parents do not mix", false},
		{`{"origins": [{"url": "http://:80"}]}`, "origins[0].url", `"http://:80": no host`, false},
		{`{"health": {"path": "/h", "status": 99}}`, "health.status", "want 0 (any 2xx or 3xx) or 100 to 599, got 99", false},
		{`{"health": {"path": "healthz"}}`, "health.path", `want a path such as "/healthz", got "healthz"`, false},
		{`{"health": {"path": "/h\r\nX: 1"}}`, "health.path", `want a path such as "/healthz"`, false},
		{`{"health": {"path": "/h", "host": "a\r\nX: 1"}}`, "health.host", `want a host name, got "a\r\nX: 1"`, false},
		{`{"health": {"max_fails": -7}}`, "health.max_fails", "want -1 (off) or 1 or more, got -7", false},
		// 0 is nginx's max_fails=0, accounting off; the engine would take
		// it for its default, 3.
		{`{"health": {"max_fails": 0}}`, "health.max_fails", "want -1 (off) or 1 or more, got 0", false},
		{`{"health": {"interval": "2s", "max_fails": 2}}`, "health.interval", "only with health.path (active checks)", false},
		{`{"health": {"status": 204}}`, "health.status", "only with health.path (active checks)", false},
		// A timeout of 0 would silently be its default: refused, as the
		// flag's is.
		{`{"timeouts": {"connect": "0s"}}`, "timeouts.connect", "want a duration above 0 (leave it out for the default)", false},
		{`{"timeouts": {"response_header": "0s"}}`, "timeouts.response_header", "want a duration above 0", false},
		{`{"timeouts": {"client_header": "0s"}}`, "timeouts.client_header", "want a duration above 0", false},
		{`{"health": {"path": "/h", "interval": "0s"}}`, "health.interval", "want a duration above 0", false},
	} {
		_, err := parseConfig("c.json", []byte(c.in))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %v is not a *ConfigError", c.in, err)
			continue
		}
		// The decoder names the path of a type error its own way; the
		// message must still carry the field.
		if ce.File != "c.json" || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s:\n got %v\nwant field %q and %q", c.in, err, c.field, c.msg)
		}
		if c.field != "" && ce.Field != c.field {
			t.Errorf("%s: field %q, want %q", c.in, ce.Field, c.field)
		}
		if errors.Is(err, ErrUnknownField) != c.unknown {
			t.Errorf("%s: errors.Is(err, ErrUnknownField) = %v", c.in, !c.unknown)
		}
	}
}

// stringsFlag stands for a repeatable flag another file may define
// (-parent); it has no Get, so apply falls back to its String form.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// testFlags builds a flag set like run's.
func testFlags(withParentLB bool) (*flag.FlagSet, *cliExtras, map[string]any) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := map[string]any{
		"listen": fs.String("listen", "127.0.0.1:3128", ""),
		"shards": fs.Int("shards", 0, ""),
		"access": fs.Bool("access-log", true, ""),
	}
	var origins originList
	fs.Var(&origins, "origin", "")
	v["origin"] = &origins
	if withParentLB {
		var parents stringsFlag
		fs.Var(&parents, "parent", "")
		v["parent"] = &parents
		v["lb"] = fs.String("lb", "roundrobin", "")
	}
	x := &cliExtras{}
	x.register(fs)
	return fs, x, v
}

func writeConfig(t *testing.T, s string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

const applyConfig = `{"listen": "127.0.0.1:8080", "admin": "127.0.0.1:9090", "shards": 4, "access_log": false,
	"origins": [{"url": "http://127.0.0.1:81", "name": "a", "weight": 2}, {"url": "http://127.0.0.1:82"}],
	"lb": "p2c", "client_auth": "pass",
	"timeouts": {"connect": "2s", "response_header": "5s", "tls_handshake": "3s"},
	"upstream_max_requests": 100, "upstream_max_lifetime": "10m", "strict_resend": true}`

// The file fills in what the command line left out; what the command line
// gave wins, a peer list included.
func TestApplyConfig(t *testing.T) {
	file := writeConfig(t, applyConfig)
	fs, x, v := testFlags(true)
	if err := fs.Parse([]string{"-config", file, "-shards", "1", "-idle-timeout", "7s", "-lb", "hash"}); err != nil {
		t.Fatal(err)
	}
	fc, err := x.apply(fs)
	if err != nil {
		t.Fatal(err)
	}
	if *v["listen"].(*string) != "127.0.0.1:8080" || x.admin != "127.0.0.1:9090" || *v["shards"].(*int) != 1 ||
		*v["access"].(*bool) || *v["lb"].(*string) != "hash" {
		t.Fatalf("listen %v admin %v shards %v access %v lb %v", *v["listen"].(*string), x.admin, *v["shards"].(*int), *v["access"].(*bool), *v["lb"].(*string))
	}
	if got := []string(*v["origin"].(*originList)); !reflect.DeepEqual(got, []string{"http://127.0.0.1:81", "http://127.0.0.1:82"}) {
		t.Fatalf("origins %v", got)
	}
	if got := []string(*v["parent"].(*stringsFlag)); len(got) != 0 {
		t.Fatalf("parents %v", got)
	}
	if x.clientAuth != clientAuthPass {
		t.Fatalf("client auth %q", x.clientAuth)
	}
	ec := x.engineConfig(engine.Config{})
	if ec.ConnectTimeout != 2*time.Second || ec.IdleTimeout != 7*time.Second || ec.ResponseHeaderTimeout != 5*time.Second || ec.TLSHandshakeTimeout != 3*time.Second {
		t.Fatalf("timeouts %v %v %v %v", ec.ConnectTimeout, ec.IdleTimeout, ec.ResponseHeaderTimeout, ec.TLSHandshakeTimeout)
	}
	if ec.MaxConnRequests != 100 || ec.MaxConnLifetime != 10*time.Minute || !ec.StrictResend {
		t.Fatalf("upstream max requests %d, lifetime %v, strict resend %v", ec.MaxConnRequests, ec.MaxConnLifetime, ec.StrictResend)
	}
	if len(fc.Origins) != 2 || fc.Origins[0].Name != "a" || fc.Origins[0].Weight != 2 || fc.Origins[1].Name != "127.0.0.1:82" {
		t.Fatalf("file origins %+v", fc.Origins)
	}

	// A parent's preemptive option becomes the URL option.
	fs, x, v = testFlags(true)
	if err := fs.Parse([]string{"-config", writeConfig(t, `{"parents": [{"url": "http://u:p@127.0.0.1:3129", "preemptive": false}]}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if got := []string(*v["parent"].(*stringsFlag)); !reflect.DeepEqual(got, []string{"http://u:p@127.0.0.1:3129?preemptive=false"}) {
		t.Fatalf("parents %v", got)
	}

	// -origin and -parent on the command line replace the file's lists.
	fs, x, v = testFlags(true)
	if err := fs.Parse([]string{"-config", file, "-origin", "http://127.0.0.1:99", "-parent", "http://127.0.0.1:98", "-parent", "http://127.0.0.1:97"}); err != nil {
		t.Fatal(err)
	}
	if fc, err = x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if got := []string(*v["origin"].(*originList)); !reflect.DeepEqual(got, []string{"http://127.0.0.1:99"}) {
		t.Fatalf("origins %v", got)
	}
	wantPeers := func(urls ...string) []peerSpec {
		var out []peerSpec
		for _, u := range urls {
			out = append(out, peerSpec{URL: u, Name: strings.TrimPrefix(u, "http://"), Weight: 1})
		}
		return out
	}
	if !reflect.DeepEqual(fc.Origins, wantPeers("http://127.0.0.1:99")) ||
		!reflect.DeepEqual(fc.Parents, wantPeers("http://127.0.0.1:98", "http://127.0.0.1:97")) {
		t.Fatalf("peers %+v %+v", fc.Origins, fc.Parents)
	}
}

// The file holds the client side's settings and -upstream-gonet too, and
// the command line wins over them as over the others; client_park_after
// "0s" is -client-park-after 0 (never), not an absent field.
func TestApplyConfigClientSide(t *testing.T) {
	file := writeConfig(t, `{"timeouts": {"client_idle": "7s", "client_header": "3s"},
		"client_park_after": "0s", "upstream_gonet": true}`)
	for _, c := range []struct {
		args               []string
		idle, header, park time.Duration
		goNet              bool
	}{
		{nil, 7 * time.Second, 3 * time.Second, 0, true},
		{[]string{"-client-idle-timeout", "9s", "-client-park-after", "2s", "-upstream-gonet=false"}, 9 * time.Second, 3 * time.Second, 2 * time.Second, false},
	} {
		fs, x, _ := testFlags(false)
		idle := fs.Duration("client-idle-timeout", DefaultClientIdleTimeout, "")
		header := fs.Duration("client-header-timeout", DefaultClientHeaderTimeout, "")
		park := fs.Duration("client-park-after", DefaultClientParkAfter, "")
		if err := fs.Parse(append([]string{"-config", file}, c.args...)); err != nil {
			t.Fatal(err)
		}
		if _, err := x.apply(fs); err != nil {
			t.Fatal(err)
		}
		if *idle != c.idle || *header != c.header || *park != c.park || x.goNetIO != c.goNet {
			t.Errorf("%v: idle %v header %v park %v gonet %v, want %v %v %v %v", c.args, *idle, *header, *park, x.goNetIO, c.idle, c.header, c.park, c.goNet)
		}
	}
}

// A timeout of "0s" in the file is set, not taken for an absent field:
// timeouts.shutdown 0 cuts the requests in flight at once and
// timeouts.tunnel_idle 0 never idles a tunnel out, as the flags' 0 does.
func TestApplyConfigZeroTimeouts(t *testing.T) {
	fs, x, _ := testFlags(false)
	file := writeConfig(t, `{"timeouts": {"shutdown": "0s", "tunnel_idle": "0s"}}`)
	if err := fs.Parse([]string{"-config", file}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if x.shutdown != 0 || x.tunnelIdle != 0 {
		t.Fatalf("shutdown %v, tunnel idle %v; want 0s and 0s", x.shutdown, x.tunnelIdle)
	}
}

// A peer list on the command line replaces the file's peers, whichever
// list the file has: -parent with a file of origins makes a forward proxy
// through the parent, not an error that -origin and -parent do not mix.
func TestApplyConfigCmdLinePeersReplaceFile(t *testing.T) {
	for _, c := range []struct {
		file, flag, url string
	}{
		{`{"origins": [{"url": "http://127.0.0.1:81", "name": "a"}]}`, "-parent", "http://127.0.0.1:3129"},
		{`{"parents": [{"url": "http://127.0.0.1:3129"}]}`, "-origin", "http://127.0.0.1:81"},
	} {
		fs, x, v := testFlags(true)
		if err := fs.Parse([]string{"-config", writeConfig(t, c.file), c.flag, c.url}); err != nil {
			t.Fatal(err)
		}
		fc, err := x.apply(fs)
		if err != nil {
			t.Fatal(err)
		}
		origins, parents := []string(*v["origin"].(*originList)), []string(*v["parent"].(*stringsFlag))
		want := peerSpec{URL: c.url, Name: strings.TrimPrefix(c.url, "http://"), Weight: 1}
		if c.flag == "-parent" {
			if len(origins) != 0 || !reflect.DeepEqual(parents, []string{c.url}) || len(fc.Origins) != 0 ||
				!reflect.DeepEqual(fc.Parents, []peerSpec{want}) {
				t.Errorf("%s %s: origins %v %+v, parents %v %+v", c.flag, c.url, origins, fc.Origins, parents, fc.Parents)
			}
		} else if len(parents) != 0 || !reflect.DeepEqual(origins, []string{c.url}) || len(fc.Parents) != 0 ||
			!reflect.DeepEqual(fc.Origins, []peerSpec{want}) {
			t.Errorf("%s %s: origins %v %+v, parents %v %+v", c.flag, c.url, origins, fc.Origins, parents, fc.Parents)
		}
	}
}

// The file's peer options (names, weights, connection caps) and policy
// become the engine peer group's; peers given on the command line keep
// their own URL options instead.
func TestFilePeerOptionsReachGroup(t *testing.T) {
	file := writeConfig(t, `{"lb": "p2c", "origins": [
		{"url": "http://127.0.0.1:81", "name": "a", "weight": 2, "max_conns": 5, "max_pending": 7, "pending_timeout": "3s", "pipeline": 8},
		{"url": "http://127.0.0.1:82"}]}`)
	group := func(args ...string) engine.GroupConfig {
		t.Helper()
		fs, x, v := testFlags(true)
		if err := fs.Parse(append([]string{"-config", file}, args...)); err != nil {
			t.Fatal(err)
		}
		fromFile := len(*v["origin"].(*originList)) == 0
		fc, err := x.apply(fs)
		if err != nil {
			t.Fatal(err)
		}
		var cfg engine.Config
		if err := withPeers(&cfg, *v["origin"].(*originList), nil, *v["lb"].(*string)); err != nil {
			t.Fatal(err)
		}
		withFilePeers(&cfg, fc, fromFile)
		return cfg.Groups[peerGroup]
	}
	g := group()
	want := []engine.Peer{
		{Name: "a", Addr: "127.0.0.1:81", Weight: 2, MaxConns: 5, MaxPending: 7, PendingTimeout: 3 * time.Second, Pipeline: 8},
		{Name: "127.0.0.1:82", Addr: "127.0.0.1:82", Weight: 1},
	}
	if g.Balancer != "p2c" || !reflect.DeepEqual(g.Peers, want) {
		t.Fatalf("group %+v, want p2c over %+v", g, want)
	}
	g = group("-origin", "http://127.0.0.1:83?name=c")
	if len(g.Peers) != 1 || g.Peers[0] != (engine.Peer{Name: "c", Addr: "127.0.0.1:83"}) {
		t.Fatalf("command-line peers %+v", g.Peers)
	}
}

// A missing file is an error naming it.
func TestApplyConfigMissingFile(t *testing.T) {
	fs, x, _ := testFlags(false)
	if err := fs.Parse([]string{"-config", filepath.Join(t.TempDir(), "none.json")}); err != nil {
		t.Fatal(err)
	}
	_, err := x.apply(fs)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "none.json") {
		t.Fatalf("err %v", err)
	}
}

// The tunnel and TLS settings of the file reach their flags; the command
// line still wins.
func TestApplyConfigTunnelTLS(t *testing.T) {
	file := writeConfig(t, `{"connect_ports": "443,8443", "ca_file": "/etc/ca.pem", "insecure": true,
		"client_cert": "/c.pem", "client_key": "/c.key", "timeouts": {"tunnel_idle": "2m", "shutdown": "30s"}}`)
	fs, x, _ := testFlags(false)
	if err := fs.Parse([]string{"-config", file, "-client-key", "/other.key"}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.apply(fs); err != nil {
		t.Fatal(err)
	}
	if x.connectPorts != "443,8443" || x.caFile != "/etc/ca.pem" || !x.insecure || x.clientCert != "/c.pem" ||
		x.clientKey != "/other.key" || x.tunnelIdle != 2*time.Minute || x.shutdown != 30*time.Second {
		t.Fatalf("%+v", x)
	}
}

// A value the user must fix exits 2 before anything listens, whether the
// flags, the peers or the engine refuse it; other start failures exit 1.
// The listen address is taken, so that a value let through ends in the
// listen error's 1 instead of a proxy that serves.
func TestRunConfigErrorsExit2(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, args := range [][]string{
		{"-origin", "http://127.0.0.1:1", "-parent", "http://127.0.0.1:2"},
		{"-lb", "random"},
		{"-origin", "http://127.0.0.1:1", "-lb", "random"},
		{"-client-auth", "maybe"},
		{"-connect-timeout", "-1s"},
		{"-tls-handshake-timeout", "-1s"},
		{"-upstream-max-requests", "-1"},
		{"-upstream-max-lifetime", "-1m"},
		{"-origin", "http://127.0.0.1:1", "-origin", "http://127.0.0.1:1"},
		{"-shards", "-3"},
		{"-shards", "1025"},
		{"-client-idle-timeout", "-1s"},
		{"-client-header-timeout", "-5s"},
		{"-client-park-after", "-1s"},
		{"-tunnel-idle-timeout", "-1m"},
		{"-shutdown-timeout", "-1s"},
		// 0 is no timeout's "off": it would silently be the default.
		{"-connect-timeout", "0"},
		{"-tls-handshake-timeout", "0s"},
		{"-idle-timeout", "0s"},
		{"-response-header-timeout", "0s"},
		{"-client-idle-timeout", "0s"},
		{"-client-header-timeout", "0s"},
		{"-origin", "http://127.0.0.1:1", "-health-check", "/h", "-health-interval", "0s"},
		{"-origin", "http://127.0.0.1:1", "-health-check", "/h", "-health-timeout", "0s"},
		{"-origin", "http://127.0.0.1:1", "-health-interval", "-1s"},
		// Health checks with no peer to check would be ignored.
		{"-health-check", "/h"},
		// Their settings without them would be ignored too.
		{"-origin", "http://127.0.0.1:1", "-health-host", "example.com"},
		{"-origin", "http://127.0.0.1:1", "-health-status", "204"},
		{"-origin", "http://127.0.0.1:1", "-health-interval", "2s"},
		{"-origin", "http://127.0.0.1:1", "-health-timeout", "1s"},
		// A reverse proxy answers CONNECT 501, whatever the port.
		{"-origin", "http://127.0.0.1:1", "-connect-ports", "443,8443"},
		{"-origin", "http://127.0.0.1:1", "-connect-ports", "any"},
		// As the config file's health and address checks.
		{"-origin", "http://127.0.0.1:1", "-max-fails", "-5"},
		{"-origin", "http://127.0.0.1:1", "-max-fails", "0"},
		{"-origin", "http://127.0.0.1:1", "-health-check", "healthz"},
		{"-origin", "http://127.0.0.1:1", "-health-check", "/h x"},
		{"-origin", "http://127.0.0.1:1", "-health-host", "a\r\nX: 1"},
		{"-admin", "9090"},
		{"-admin", "127.0.0.1:99999"},
		// The admin server at the proxy's own address, as written or as
		// another spelling of it.
		{"-admin", busy.Addr().String()},
		{"-admin", "[::ffff:127.0.0.1]:" + strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)},
		// The proxy takes no arguments: one is a mistake (a second
		// origin without its -origin), and flags after it went unread.
		{"-origin", "http://127.0.0.1:1", "http://127.0.0.1:2"},
		{"stray", "-shards", "-1"},
		// A peer that is the proxy itself: every request would loop
		// through it until its head grew too large.
		{"-parent", "http://" + busy.Addr().String()},
		{"-origin", "http://" + busy.Addr().String()},
	} {
		if rc := run(append([]string{"-listen", busy.Addr().String()}, args...)); rc != 2 {
			t.Errorf("%v: exit code %d, want 2", args, rc)
		}
	}
	// A listen host given by name is each of its addresses: localhost is
	// 127.0.0.1 (a bind would fail with exit code 1, the address is busy).
	_, busyPort, _ := net.SplitHostPort(busy.Addr().String())
	for _, args := range [][]string{
		{"-listen", "localhost:" + busyPort, "-origin", "http://" + busy.Addr().String()},
		{"-listen", "localhost:" + busyPort, "-parent", "http://" + busy.Addr().String()},
	} {
		if rc := run(args); rc != 2 {
			t.Errorf("%v: exit code %d, want 2", args, rc)
		}
	}
	for _, addr := range []string{"3128", "127.0.0.1", "127.0.0.1:70000"} {
		if rc := run([]string{"-listen", addr}); rc != 2 {
			t.Errorf("-listen %s: exit code %d, want 2", addr, rc)
		}
	}
	// Listening on every address, the proxy is any local address.
	busyAll, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyAll.Close()
	_, port, _ := net.SplitHostPort(busyAll.Addr().String())
	if rc := run([]string{"-listen", ":" + port, "-parent", "http://127.0.0.1:" + port}); rc != 2 {
		t.Errorf("-listen :%s -parent http://127.0.0.1:%s: exit code %d, want 2", port, port, rc)
	}
}

// TestUsage: serverside -h exits 0 and explains every flag with an
// example of its use ("e.g. -flag value").
func TestUsage(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SERVERSIDE_RUN_MAIN=-h")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("serverside -h: %v\n%s", err, out)
	}
	flags := 0
	for _, block := range strings.Split(string(out), "\n  -")[1:] {
		name, _, _ := strings.Cut(block, " ")
		name, _, _ = strings.Cut(name, "\n")
		flags++
		if !strings.Contains(block, "e.g. -"+name) {
			t.Errorf("-%s has no example (e.g. -%s ...):\n  -%s", name, name, block)
		}
	}
	if flags < 30 {
		t.Fatalf("%d flags in the usage:\n%s", flags, out)
	}
}

// A refused flag value is reported by the flag's name and what it wants,
// not by the engine field it would have become ("Shards is negative").
func TestRunErrorNamesFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-shards", "-1"}, "-shards -1: want 0 (GOMAXPROCS) to 1024"},
		{[]string{"-shards", "2000"}, "-shards 2000: want 0 (GOMAXPROCS) to 1024"},
		{[]string{"-upstream-max-requests", "-1"}, "-upstream-max-requests -1: want 0 (no limit) or more"},
		{[]string{"-upstream-max-lifetime", "-1s"}, "-upstream-max-lifetime -1s: negative duration"},
		{[]string{"-connect-timeout", "-1s"}, "-connect-timeout -1s: negative duration"},
		{[]string{"-response-header-timeout", "0"}, "-response-header-timeout 0s: want a duration above 0 (the default is 1m0s)"},
		// A boolean flag's value goes after "=": "-access-log false" is
		// -access-log and an argument.
		{[]string{"-access-log", "false"}, `a boolean flag takes its value after "=": -access-log=false`},
		{[]string{"-shards", "2", "-insecure", "true"}, `a boolean flag takes its value after "=": -insecure=true`},
	} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SERVERSIDE_RUN_MAIN="+strings.Join(append([]string{"-listen", "127.0.0.1:0"}, c.args...), "\n"))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		// As written, or quoted within a log line's err="...".
		quoted := strconv.Quote(c.want)
		if !errors.As(err, &ee) || ee.ExitCode() != 2 ||
			!strings.Contains(string(out), c.want) && !strings.Contains(string(out), quoted[1:len(quoted)-1]) {
			t.Errorf("%v: %v\n%s\nwant exit status 2 and %q", c.args, err, out, c.want)
		}
	}
}
