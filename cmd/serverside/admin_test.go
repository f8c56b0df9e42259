package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// startProxyAdmin runs the proxy in-process with an admin server, both on
// free loopback ports, and returns their addresses.
func startProxyAdmin(t *testing.T, origins ...string) (proxyAddr, adminAddr string) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, origins, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr = serveProxy(t, p)
	info := adminInfo{Listen: proxyAddr, Mode: "reverse", Shards: 2, LB: "roundrobin"}
	adm, err := startAdmin("127.0.0.1:0", p, info, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := adm.Shutdown(ctx); err != nil {
			t.Errorf("admin shutdown: %v", err)
		}
	})
	return proxyAddr, adm.Addr()
}

// httpGet fetches url with a client of its own (no keep-alive), returning
// the status, Content-Type and body.
func httpGet(t *testing.T, url string) (int, string, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// promSample is one parsed sample of the text exposition format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// promText is a parsed exposition.
type promText struct {
	types   map[string]string // family -> type
	samples []promSample
}

// get returns the value of the one sample named name whose labels include
// want (name, value pairs).
func (p *promText) get(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	var found []float64
	for _, s := range p.samples {
		if s.name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if s.labels[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			found = append(found, s.value)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples", name, want, len(found))
	}
	return found[0]
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	promTypes    = []string{"counter", "gauge", "histogram", "summary", "untyped"}
)

// parseProm parses the Prometheus text exposition format (0.0.4) strictly:
// every line is a HELP, a TYPE or a sample; HELP and TYPE come once per
// family and before its samples; a family's samples are contiguous; names,
// label syntax and escapes, and values are checked; no series repeats; and,
// for this exporter's conventions, every family has a TYPE, counters end
// in _total and are not negative.
func parseProm(text string) (*promText, error) {
	out := &promText{types: make(map[string]string)}
	if text == "" || !strings.HasSuffix(text, "\n") {
		return nil, errors.New("empty, or the last line has no newline")
	}
	helps := make(map[string]bool)
	done := make(map[string]bool) // families whose samples are over
	seen := make(map[string]bool) // series
	cur := ""
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		if !utf8.ValidString(line) {
			return nil, fail("not UTF-8")
		}
		if strings.HasPrefix(line, "#") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 3 || f[0] != "#" || (f[1] != "HELP" && f[1] != "TYPE") {
				return nil, fail("bad comment line")
			}
			name := f[2]
			if !metricNameRE.MatchString(name) {
				return nil, fail("bad metric name")
			}
			if done[name] || (cur == name && slices.ContainsFunc(out.samples, func(s promSample) bool { return s.name == name })) {
				return nil, fail("%s after the family's samples", f[1])
			}
			if cur != name && cur != "" {
				done[cur] = true
			}
			cur = name
			switch f[1] {
			case "HELP":
				if helps[name] {
					return nil, fail("second HELP")
				}
				if len(f) != 4 || f[3] == "" {
					return nil, fail("empty HELP")
				}
				helps[name] = true
			case "TYPE":
				if _, dup := out.types[name]; dup {
					return nil, fail("second TYPE")
				}
				if len(f) != 4 || !slices.Contains(promTypes, f[3]) {
					return nil, fail("bad type")
				}
				out.types[name] = f[3]
			}
			continue
		}
		s, err := parsePromSample(line)
		if err != nil {
			return nil, fail("%v", err)
		}
		if s.name != cur {
			if done[s.name] {
				return nil, fail("family %s is not contiguous", s.name)
			}
			if cur != "" {
				done[cur] = true
			}
			cur = s.name
		}
		typ, ok := out.types[s.name]
		if !ok {
			return nil, fail("sample without a TYPE")
		}
		if typ == "counter" && (!strings.HasSuffix(s.name, "_total") || s.value < 0 || math.IsNaN(s.value)) {
			return nil, fail("counter not named _total or negative")
		}
		keys := make([]string, 0, len(s.labels))
		for k := range s.labels {
			keys = append(keys, k+"="+strconv.Quote(s.labels[k]))
		}
		slices.Sort(keys)
		id := s.name + "{" + strings.Join(keys, ",") + "}"
		if seen[id] {
			return nil, fail("repeated series")
		}
		seen[id] = true
		out.samples = append(out.samples, s)
	}
	return out, nil
}

func parsePromSample(line string) (promSample, error) {
	s := promSample{labels: make(map[string]string)}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, errors.New("no value")
	}
	s.name = line[:i]
	if !metricNameRE.MatchString(s.name) {
		return s, errors.New("bad metric name")
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return s, errors.New("bad label")
			}
			name := rest[:eq]
			if !labelNameRE.MatchString(name) || strings.HasPrefix(name, "__") {
				return s, fmt.Errorf("bad label name %q", name)
			}
			if _, dup := s.labels[name]; dup {
				return s, fmt.Errorf("repeated label %q", name)
			}
			rest = rest[eq+2:]
			var v strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '"' {
					rest, closed = rest[j+1:], true
					break
				}
				if c == '\n' {
					return s, errors.New("raw newline in label value")
				}
				if c == '\\' {
					if j+1 == len(rest) {
						return s, errors.New("dangling backslash")
					}
					j++
					switch rest[j] {
					case '\\':
						v.WriteByte('\\')
					case '"':
						v.WriteByte('"')
					case 'n':
						v.WriteByte('\n')
					default:
						return s, fmt.Errorf("bad escape \\%c", rest[j])
					}
					continue
				}
				v.WriteByte(c)
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[name] = v.String()
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, errors.New("want , or } after a label")
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, errors.New("want one space before the value")
	}
	f := strings.Split(rest[1:], " ")
	if len(f) > 2 || f[0] == "" {
		return s, errors.New("bad value field")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	if len(f) == 2 {
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			return s, fmt.Errorf("timestamp: %w", err)
		}
	}
	s.value = v
	return s, nil
}

// The validator itself rejects what it must, so a pass means something.
func TestParsePromRejects(t *testing.T) {
	good := "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
	if _, err := parseProm(good); err != nil {
		t.Fatalf("good input: %v", err)
	}
	for _, bad := range []string{
		"",
		"# TYPE a gauge\na 1",                   // no final newline
		"a 1\n",                                 // no TYPE
		"# TYPE a gauge\n# TYPE a gauge\na 1\n", // two TYPEs
		"# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",           // not contiguous
		"# TYPE a gauge\na 1\n# HELP a late\n",                      // HELP after samples
		"# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",              // repeated series
		"# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                    // repeated label
		"# TYPE a gauge\na{x=\"a\\q\"} 1\n",                         // bad escape
		"# TYPE a gauge\na{x=\"1\" 1\n",                             // unterminated
		"# TYPE a gauge\na{1x=\"1\"} 1\n",                           // bad label name
		"# TYPE a gauge\na  1\n",                                    // two spaces
		"# TYPE a gauge\na one\n",                                   // bad value
		"# TYPE a_total counter\na_total -1\n",                      // negative counter
		"# TYPE a counter\na 1\n",                                   // counter without _total
		"# TYPE a gauge\n\na 1\n",                                   // empty line
		"# TYPE a flavour\na 1\n",                                   // bad type
		"# TYPE 0a gauge\n0a 1\n",                                   // bad metric name
		"# HELP a\n# TYPE a gauge\na 1\n",                           // empty HELP
		"# TYPE a gauge\na{x=\"1\"}1\n",                             // no space
		"# TYPE a gauge\na{x=\"1\"} 1 2 3\n",                        // extra field
		"# TYPE a gauge\na{x=\"1\"} 1 soon\n",                       // bad timestamp
		"# TYPE a gauge\n# TYPE b gauge\nb 1\n# HELP a late\na 1\n", // family reopened
	} {
		if _, err := parseProm(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Label values with quotes, backslashes and newlines survive the round
// trip through the writer and the strict parser.
func TestWriteMetricsEscapes(t *testing.T) {
	key := "10.0.0.1:80 via=\"odd\\name\"\nx"
	doc := statusDoc{
		Shards:  3,
		Clients: clientStats{Open: 2, Parked: 1, Accepted: 5, Requests: 7, BodyBytes: 99, Responses: map[string]uint64{"2xx": 6, "5xx": 1}},
		Upstreams: []upstreamRow{
			{Upstream: "10.0.0.1:80", Key: "10.0.0.1:80", Idle: 4, Requests: 10, Attempts: 12, Reused: 9, ReuseRatio: 0.75,
				Closes: map[string]uint64{"owner": 2}, Errors: map[string]uint64{"dial": 1}},
			{Upstream: "10.0.0.1:80", Key: key, Busy: 1, TunnelsOpen: 3, Closes: map[string]uint64{}, Errors: map[string]uint64{}},
		},
		Peers: []peerRow{
			{Group: peerGroup, Name: "a \"b\"\\c", Addr: "10.0.0.1:80", Role: "origin", Weight: 3, State: "draining",
				Busy: 2, Idle: 0, Waiting: 1, Picks: 40, Failures: 1, Downs: 1, Rerouted: 2, ClosedDrained: 5},
			{Group: "other", Name: "a \"b\"\\c", Addr: "10.0.0.1:80", Role: "parent", Weight: 1, State: "up", Idle: 1, TunnelsOpen: 2},
			// A name from a URL's ?name=%ff is not UTF-8; the exposition must be.
			{Group: "third", Name: "n\xffx", Addr: "10.0.0.1:80", Role: "origin", Weight: 1, State: "up"},
		},
	}
	a := &admin{started: time.Unix(1700000000, 500e6)}
	var b bytes.Buffer
	a.writeMetrics(&b, doc)
	p, err := parseProm(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"serverside_shards", nil, 3},
		{"serverside_start_time_seconds", nil, 1700000000.5},
		{"serverside_client_connections", nil, 2},
		{"serverside_client_connections_parked", nil, 1},
		{"serverside_client_connections_accepted_total", nil, 5},
		{"serverside_client_requests_total", nil, 7},
		{"serverside_client_responses_total", []string{"code", "2xx"}, 6},
		{"serverside_client_responses_total", []string{"code", "3xx"}, 0},
		{"serverside_client_responses_total", []string{"code", "5xx"}, 1},
		{"serverside_client_response_body_bytes_total", nil, 99},
		{"serverside_upstreams", nil, 2},
		{"serverside_upstream_connections", []string{"upstream", "10.0.0.1:80", "key", "", "state", "idle"}, 4},
		{"serverside_upstream_connections", []string{"key", key, "state", "busy"}, 1},
		{"serverside_upstream_tunnels_open", []string{"key", key}, 3},
		{"serverside_upstream_tunnels_open", []string{"key", ""}, 0},
		{"serverside_upstream_requests_total", []string{"key", ""}, 10},
		{"serverside_upstream_attempts_total", []string{"key", ""}, 12},
		{"serverside_upstream_reused_total", []string{"key", ""}, 9},
		{"serverside_upstream_reuse_ratio", []string{"key", ""}, 0.75},
		{"serverside_upstream_closes_total", []string{"key", "", "reason", "owner"}, 2},
		{"serverside_upstream_closes_total", []string{"key", "", "reason", "idle_timeout"}, 0},
		{"serverside_upstream_errors_total", []string{"key", "", "phase", "dial"}, 1},
		{"serverside_upstream_errors_total", []string{"key", key, "phase", "pool-wait"}, 0},
		{"serverside_peers", nil, 3},
		{"serverside_peer_up", []string{"peer", "n\uFFFDx", "group", "third"}, 1},
		{"serverside_peer_up", []string{"peer", "a \"b\"\\c", "addr", "10.0.0.1:80", "group", ""}, 0},
		{"serverside_peer_draining", []string{"group", ""}, 1},
		{"serverside_peer_state", []string{"group", "", "state", "draining"}, 1},
		{"serverside_peer_state", []string{"group", "", "state", "drained"}, 0},
		{"serverside_peer_state", []string{"group", "", "state", "up"}, 0},
		{"serverside_peer_state", []string{"group", "", "state", "down"}, 0},
		{"serverside_peer_weight", []string{"group", ""}, 3},
		{"serverside_peer_connections", []string{"group", "", "state", "busy"}, 2},
		{"serverside_peer_waiting", []string{"group", ""}, 1},
		{"serverside_peer_picks_total", []string{"group", ""}, 40},
		{"serverside_peer_failures_total", []string{"group", ""}, 1},
		{"serverside_peer_downs_total", []string{"group", ""}, 1},
		{"serverside_peer_rerouted_total", []string{"group", ""}, 2},
		{"serverside_peer_drain_closes_total", []string{"group", ""}, 5},
		{"serverside_peer_up", []string{"group", "other"}, 1},
		{"serverside_peer_draining", []string{"group", "other"}, 0},
		{"serverside_peer_state", []string{"group", "other", "state", "up"}, 1},
		{"serverside_peer_connections", []string{"group", "other", "state", "idle"}, 1},
		{"serverside_peer_tunnels_open", []string{"group", "other"}, 2},
		{"serverside_peer_tunnels_open", []string{"group", ""}, 0},
	}
	for _, c := range checks {
		if got := p.get(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// Traffic through the proxy to a real nginx moves the numbers of /metrics
// and /status.json; every scrape is well-formed.
func TestAdminMetrics(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px, adm := startProxyAdmin(t, "http://"+ng.Addr())

	scrape := func() *promText {
		t.Helper()
		code, ctype, body := httpGet(t, "http://"+adm+"/metrics")
		if code != 200 || ctype != "text/plain; version=0.0.4; charset=utf-8" {
			t.Fatalf("/metrics: %d %q", code, ctype)
		}
		p, err := parseProm(body)
		if err != nil {
			t.Fatalf("/metrics malformed: %v\n%s", err, body)
		}
		return p
	}
	p := scrape()
	if v := p.get(t, "serverside_client_requests_total"); v != 0 {
		t.Fatalf("requests before traffic: %v", v)
	}
	if v := p.get(t, "serverside_upstreams"); v != 0 {
		t.Fatalf("upstreams before traffic: %v", v)
	}

	// Five successes and one 404 on one keep-alive client connection.
	tr := &http.Transport{}
	c := &http.Client{Timeout: 20 * time.Second, Transport: tr}
	for i, path := range []string{"/small", "/small", "/16k", "/small", "/status/404", "/small"} {
		resp, err := c.Get("http://" + px + path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}

	up := ng.Addr()
	// The connection goes back to the pool, and the request is counted,
	// just after the client has its reply: wait for both.
	deadline := time.Now().Add(5 * time.Second)
	for p = scrape(); (p.get(t, "serverside_upstream_connections", "upstream", up, "state", "idle") != 1 ||
		p.get(t, "serverside_client_requests_total") != 6) && time.Now().Before(deadline); p = scrape() {
		time.Sleep(10 * time.Millisecond)
	}
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"serverside_client_connections", nil, 1},
		{"serverside_client_connections_accepted_total", nil, 1},
		{"serverside_client_requests_total", nil, 6},
		{"serverside_client_responses_total", []string{"code", "2xx"}, 5},
		{"serverside_client_responses_total", []string{"code", "4xx"}, 1},
		{"serverside_client_responses_total", []string{"code", "5xx"}, 0},
		{"serverside_client_response_body_bytes_total", nil, float64(4*13 + bench.Size16K + len(notFoundBody(t, ng)))},
		{"serverside_upstreams", nil, 1},
		{"serverside_upstream_connections", []string{"upstream", up, "state", "idle"}, 1},
		{"serverside_upstream_connections", []string{"upstream", up, "state", "busy"}, 0},
		{"serverside_upstream_connections", []string{"upstream", up, "state", "connecting"}, 0},
		{"serverside_upstream_waiting", []string{"upstream", up}, 0},
		{"serverside_upstream_requests_total", []string{"upstream", up}, 6},
		{"serverside_upstream_attempts_total", []string{"upstream", up}, 6},
		{"serverside_upstream_reused_total", []string{"upstream", up}, 5},
		{"serverside_upstream_dials_total", []string{"upstream", up}, 1},
		{"serverside_upstream_retries_total", []string{"upstream", up}, 0},
		{"serverside_upstream_errors_total", []string{"upstream", up, "phase", "dial"}, 0},
		{"serverside_upstream_reuse_ratio", []string{"upstream", up}, 5.0 / 6},
	}
	for _, w := range want {
		if got := p.get(t, w.name, w.labels...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	if p.types["serverside_upstream_requests_total"] != "counter" || p.types["serverside_upstream_connections"] != "gauge" {
		t.Errorf("types: %v", p.types)
	}

	// /status.json says the same.
	code, ctype, body := httpGet(t, "http://"+adm+"/status.json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || ctype != "application/json" || err != nil {
		t.Fatalf("/status.json: %d %q %v\n%s", code, ctype, err, body)
	}
	if doc.Mode != "reverse" || doc.Shards != 2 || doc.Clients.Requests != 6 || len(doc.Upstreams) != 1 ||
		doc.Upstreams[0].Upstream != up || doc.Upstreams[0].Requests != 6 || doc.Upstreams[0].Idle != 1 {
		t.Fatalf("/status.json:\n%s", body)
	}

	// The client's connection closing shows too.
	tr.CloseIdleConnections()
	deadline = time.Now().Add(5 * time.Second)
	for p = scrape(); p.get(t, "serverside_client_connections") != 0 && time.Now().Before(deadline); p = scrape() {
		time.Sleep(10 * time.Millisecond)
	}
	if v := p.get(t, "serverside_client_connections"); v != 0 {
		t.Fatalf("client connections after close: %v", v)
	}

	// A request the proxy rejects itself counts too.
	c2, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if all, err := io.ReadAll(c2); err != nil || !strings.HasPrefix(string(all), "HTTP/1.1 400") {
		t.Fatalf("reply %q, %v", all, err)
	}
	p = scrape()
	if r, c4 := p.get(t, "serverside_client_requests_total"), p.get(t, "serverside_client_responses_total", "code", "4xx"); r != 7 || c4 != 2 {
		t.Fatalf("after a malformed request: requests %v, 4xx %v", r, c4)
	}
	if v := p.get(t, "serverside_upstream_requests_total", "upstream", up); v != 6 {
		t.Fatalf("upstream requests %v", v)
	}
}

// notFoundBody is nginx's 404 page, fetched directly.
func notFoundBody(t *testing.T, ng *bench.Nginx) string {
	t.Helper()
	code, _, body := httpGet(t, ng.URL("/status/404"))
	if code != 404 || body == "" {
		t.Fatalf("nginx /status/404: %d %q", code, body)
	}
	return body
}

// The admin mux serves pprof and the index, and nothing else.
func TestAdminPprofAndIndex(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	_, adm := startProxyAdmin(t)
	for _, c := range []struct {
		path, want string
		code       int
	}{
		{"/", `href="/status"`, 200},
		{"/debug/pprof/", "goroutine", 200},
		{"/debug/pprof/goroutine?debug=1", "goroutine profile:", 200},
		{"/debug/pprof/cmdline", "", 200},
		{"/nope", "404 page not found", 404},
	} {
		code, _, body := httpGet(t, "http://"+adm+c.path)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d\n%.300s", c.path, code, body)
		}
	}
}

// run with -config and -admin: the file sets the listener, the admin
// address and the origin, the command line overrides the shard count, and
// SIGTERM shuts the admin server down with the proxy.
func TestRunConfigAdminShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	listen, admAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`{"listen": %q, "admin": %q, "shards": 4, "access_log": false,
		"origins": [{"url": "http://%s", "name": "nginx-fixture"}], "lb": "p2c",
		"timeouts": {"connect": "2s"}}`, listen, admAddr, ng.Addr())
	file := filepath.Join(t.TempDir(), "serverside.json")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	code := make(chan int, 1)
	go func() { code <- run([]string{"-config", file, "-shards", "3"}) }()
	waitListening(t, admAddr)
	waitListening(t, listen)

	body, _ := curl(t, "http://"+listen+"/small")
	if body != "Hello, World!" {
		t.Fatalf("body %q", body)
	}
	// The request is counted once its handler is done, which may be just
	// after curl has the response.
	var doc statusDoc
	var js string
	waitFor(t, "the request counted in /status.json", func() bool {
		_, _, js = httpGet(t, "http://"+admAddr+"/status.json")
		doc = statusDoc{}
		if err := json.Unmarshal([]byte(js), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Clients.Requests == 1
	})
	if doc.Listen != listen || doc.Shards != 3 || doc.Mode != "reverse" || doc.Clients.Requests != 1 ||
		len(doc.Upstreams) != 1 || doc.Upstreams[0].Name != "nginx-fixture" || doc.LB != "p2c" ||
		len(doc.Peers) != 1 || doc.Peers[0].Name != "nginx-fixture" || doc.Peers[0].State != "up" || doc.Peers[0].Picks != 1 {
		t.Fatalf("/status.json:\n%s", js)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case rc := <-code:
		if rc != 0 {
			t.Fatalf("exit code %d", rc)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return")
	}
	if c, err := net.Dial("tcp", admAddr); err == nil {
		c.Close()
		t.Fatal("admin server still listening after run returned")
	}
}

// A bad config file stops run with exit code 2 before anything listens.
func TestRunBadConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(file, []byte(`{"listen": "127.0.0.1:0", "shardz": 2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if rc := run([]string{"-config", file}); rc != 2 {
		t.Fatalf("exit code %d, want 2", rc)
	}
}

// freeAddr is a loopback address nothing listens on (a port just freed).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// chromium runs headless Chromium with args plus a fresh profile, bounded
// by a timeout; the process is killed by its PID if it outlives it.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin := "/usr/bin/chromium"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("chromium not installed at /usr/bin/chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--disable-extensions", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	// Chromium forks helpers: its own process group lets the timeout kill
	// them all, by the group of the PID we started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("chromium %v timed out\n%s", args, errb.String())
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// rowRequests finds, in a DOM dump of /status, the upstream row of key and
// returns its requests cell.
func rowRequests(t *testing.T, dom, key string) int {
	t.Helper()
	re := regexp.MustCompile(`<tr data-key="` + regexp.QuoteMeta(key) + `">(?s:.*?)<td class="requests">(\d+)</td>`)
	m := re.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no row for %s in the DOM:\n%s", key, dom)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// peerCell finds, in a DOM dump of /status, the Peers row of peer name and
// returns the text of its cell whose class starts with class.
func peerCell(t *testing.T, dom, name, class string) string {
	t.Helper()
	row := regexp.MustCompile(`<tr data-peer="` + regexp.QuoteMeta(name) + `">((?s:.*?))</tr>`).FindStringSubmatch(dom)
	if row == nil {
		t.Fatalf("no Peers row for %s in the DOM:\n%s", name, dom)
	}
	m := regexp.MustCompile(`<td class="` + regexp.QuoteMeta(class) + `[^"]*">([^<]*)</td>`).FindStringSubmatch(row[1])
	if m == nil {
		t.Fatalf("no %s cell in the Peers row of %s: %s", class, name, row[1])
	}
	return m[1]
}

// upstreamCell finds, in /status (as served or a DOM dump), the Upstreams
// row of key and returns the text of its cell whose class starts with
// class followed by a space or the end of the class attribute.
func upstreamCell(t *testing.T, dom, key, class string) string {
	t.Helper()
	row := regexp.MustCompile(`<tr data-key="` + regexp.QuoteMeta(key) + `">((?s:.*?))</tr>`).FindStringSubmatch(dom)
	if row == nil {
		t.Fatalf("no Upstreams row for %s in:\n%s", key, dom)
	}
	m := regexp.MustCompile(`<td class="` + regexp.QuoteMeta(class) + `(?: [^"]*)?">([^<]*)</td>`).FindStringSubmatch(row[1])
	if m == nil {
		t.Fatalf("no %s cell in the Upstreams row of %s: %s", class, key, row[1])
	}
	return m[1]
}

// /status in a real browser: the script's refresh from /status.json
// works, the table shows the upstream, and its numbers follow the traffic.
func TestStatusPageChromium(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px, adm := startProxyAdmin(t, "http://"+ng.Addr())
	get := func(n int) {
		for i := 0; i < n; i++ {
			if body, _ := curl(t, "http://"+px+"/small"); body != "Hello, World!" {
				t.Fatalf("body %q", body)
			}
		}
	}
	get(3)
	url := "http://" + adm + "/status"
	dump := func() string {
		return chromium(t, "--virtual-time-budget=3000", "--dump-dom", url)
	}
	dom := dump()
	// "live" is written only by the script, after a fetch of /status.json
	// succeeded and the table was drawn from it.
	if !strings.Contains(dom, `<span id="live" class="ok">live, updated`) {
		t.Fatalf("the page's refresh did not run:\n%s", dom)
	}
	if !strings.Contains(dom, `<div class="shard" title="shard 1">1</div>`) {
		t.Fatalf("no shards drawn:\n%s", dom)
	}
	if n := rowRequests(t, dom, ng.Addr()); n != 3 {
		t.Fatalf("requests shown %d, want 3", n)
	}
	get(4)
	dom = dump()
	if n := rowRequests(t, dom, ng.Addr()); n != 7 {
		t.Fatalf("requests shown after more traffic %d, want 7", n)
	}
	if !strings.Contains(dom, `<div class="v" id="client-requests">7</div>`) {
		t.Fatalf("client requests not 7:\n%s", dom)
	}
	// The Peers table, drawn by the script: the one origin, up, then
	// drained after a POST /peers/drain.
	peer := ng.Addr() // an -origin without name= is named host:port
	if st, picks, addr := peerCell(t, dom, peer, "state"), peerCell(t, dom, peer, "picks"), peerCell(t, dom, peer, "addr"); st != "up" || picks != "7" || addr != peer {
		t.Fatalf("Peers row before the drain: state %q, picks %q, addr %q", st, picks, addr)
	}
	if !strings.Contains(dom, `<td class="state state-up">up</td>`) {
		t.Fatalf("state cell not classed:\n%s", dom)
	}
	if code, res := postAdmin(t, "http://"+adm+"/peers/drain?peer="+peer); code != 200 || res.Peer == nil || res.Peer.State != "drained" {
		t.Fatalf("drain: %d %+v", code, res)
	}
	// With its only peer drained, the proxy answers 503 itself.
	if code, _, body := httpGet(t, "http://"+px+"/small"); code != 503 || !strings.Contains(body, "no peer") {
		t.Fatalf("request with every peer drained: %d %q", code, body)
	}
	dom = dump()
	if st, idle := peerCell(t, dom, peer, "state"), peerCell(t, dom, peer, "idle"); st != "drained" || idle != "0" {
		t.Fatalf("Peers row after the drain: state %q, idle %q\n%s", st, idle, dom)
	}
	if !strings.Contains(dom, `<td class="state state-drained">drained</td>`) {
		t.Fatalf("drained state cell not classed:\n%s", dom)
	}
	if shot := os.Getenv("SERVERSIDE_STATUS_SCREENSHOT"); shot != "" {
		// For a look at the page by eye: the PNG is not checked.
		chromium(t, "--virtual-time-budget=3000", "--window-size=1200,800", "--screenshot="+shot, url)
	}
}

// The page renders right without JavaScript too (before the first
// refresh, or with scripts off).
func TestStatusPageServerRendered(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px, adm := startProxyAdmin(t, "http://"+ng.Addr())
	_, _, html := httpGet(t, "http://"+adm+"/status")
	if !strings.Contains(html, "no upstream yet") {
		t.Fatalf("empty table:\n%s", html)
	}
	if body, _ := curl(t, "http://"+px+"/small"); body != "Hello, World!" {
		t.Fatalf("body %q", body)
	}
	code, ctype, html := httpGet(t, "http://"+adm+"/status")
	if code != 200 || ctype != "text/html; charset=utf-8" {
		t.Fatalf("/status: %d %q", code, ctype)
	}
	if rowRequests(t, html, ng.Addr()) != 1 || !strings.Contains(html, `<div class="v" id="client-requests">1</div>`) {
		t.Fatalf("/status:\n%s", html)
	}
	if st, picks, role := peerCell(t, html, ng.Addr(), "state"), peerCell(t, html, ng.Addr(), "picks"), peerCell(t, html, ng.Addr(), "role"); st != "up" || picks != "1" || role != "origin" {
		t.Fatalf("Peers row: state %q, picks %q, role %q", st, picks, role)
	}
}

// postAdmin sends a POST to the admin server and decodes the reply.
func postAdmin(t *testing.T, url string) (int, peerActionResult) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res peerActionResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", url, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("POST %s: Content-Type %q", url, ct)
	}
	return resp.StatusCode, res
}

// statusJSON fetches and decodes /status.json.
func statusJSON(t *testing.T, adm string) statusDoc {
	t.Helper()
	code, _, body := httpGet(t, "http://"+adm+"/status.json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil {
		t.Fatalf("/status.json: %d %v\n%s", code, err, body)
	}
	return doc
}

// peerOf returns the row of the peer named name.
func peerOf(t *testing.T, doc statusDoc, name string) peerRow {
	t.Helper()
	for _, p := range doc.Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no peer %q in %+v", name, doc.Peers)
	return peerRow{}
}

// scrapeMetrics fetches /metrics and parses it strictly.
func scrapeMetrics(t *testing.T, adm string) *promText {
	t.Helper()
	code, _, body := httpGet(t, "http://"+adm+"/metrics")
	p, err := parseProm(body)
	if code != 200 || err != nil {
		t.Fatalf("/metrics: %d %v\n%s", code, err, body)
	}
	return p
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countURI counts the requests in ng's access log whose URI is uri.
func countURI(ng *bench.Nginx, uri string) int {
	n := 0
	for _, r := range ng.Requests() {
		if r.URI == uri {
			n++
		}
	}
	return n
}

// Drain one of three real nginx origins through the admin endpoints: its
// idle connection closes at once, its busy one after its response, no
// request reaches it in between (its access log says so), /status.json and
// /metrics follow draining -> drained, and undrain brings traffic back.
func TestAdminPeerDrain(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	names := []string{"a", "b", "c"}
	ngs := map[string]*bench.Nginx{}
	var origins []string
	for _, n := range names {
		ngs[n] = bench.StartNginx(t, bench.NginxOptions{})
		origins = append(origins, "http://"+ngs[n].Addr()+"?name="+n)
	}
	px, adm := startProxyAdmin(t, origins...)
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 20 * time.Second, Transport: tr}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get("http://" + px + path)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	// logged waits for the origins' access logs to hold n requests for
	// uri in all, and returns them per origin.
	logged := func(uri string, n int) map[string]int {
		t.Helper()
		out := map[string]int{}
		waitFor(t, fmt.Sprintf("%d requests for %s in the access logs", n, uri), func() bool {
			sum := 0
			for _, name := range names {
				out[name] = countURI(ngs[name], uri)
				sum += out[name]
			}
			return sum >= n
		})
		return out
	}

	// Six requests, two per origin, each leaving one idle connection.
	for range 6 {
		if body := get("/small?phase=before"); body != "Hello, World!" {
			t.Fatalf("body %q", body)
		}
	}
	if got := logged("/small?phase=before", 6); got["a"] != 2 || got["b"] != 2 || got["c"] != 2 {
		t.Fatalf("round-robin before the drain: %v", got)
	}
	waitFor(t, "one idle connection per peer", func() bool {
		doc := statusJSON(t, adm)
		return peerOf(t, doc, "a").Idle == 1 && peerOf(t, doc, "b").Idle == 1 && peerOf(t, doc, "c").Idle == 1
	})
	doc := statusJSON(t, adm)
	if doc.LB != "roundrobin" || len(doc.Peers) != 3 {
		t.Fatalf("/status.json: lb %q, peers %+v", doc.LB, doc.Peers)
	}
	for i, n := range names {
		p := doc.Peers[i]
		if p.Name != n || p.Addr != ngs[n].Addr() || p.Role != "origin" || p.Weight != 1 || p.State != "up" ||
			p.Picks != 2 || p.Failures != 0 || p.Busy != 0 {
			t.Fatalf("peer %d before the drain: %+v", i, p)
		}
	}

	// Wrong calls change nothing.
	code, ct, body := httpGet(t, "http://"+adm+"/peers/drain?peer=a")
	var wrong peerActionResult
	if code != http.StatusMethodNotAllowed || ct != "application/json" ||
		json.Unmarshal([]byte(body), &wrong) != nil || wrong.Action != "drain" || wrong.Error != "method GET not allowed: use POST" {
		t.Fatalf("GET /peers/drain: %d %s %q, want 405 with a JSON error", code, ct, body)
	}
	for _, c := range []struct {
		path string
		code int
	}{
		{"/peers/drain?peer=nope", 404},
		{"/peers/undrain?peer=nope", 404},
		{"/peers/drain", 400},
		{"/peers/drain?peer=", 400},
	} {
		if code, res := postAdmin(t, "http://"+adm+c.path); code != c.code || res.Error == "" || res.Peer != nil {
			t.Fatalf("POST %s: %d %+v, want %d", c.path, code, res, c.code)
		}
	}
	if p := peerOf(t, statusJSON(t, adm), "a"); p.State != "up" || p.Idle != 1 {
		t.Fatalf("a after wrong calls: %+v", p)
	}

	// Drain a while it is idle: its connection closes at once, so the
	// reply already says drained.
	code, res := postAdmin(t, "http://"+adm+"/peers/drain?peer=a")
	if code != 200 || res.Action != "drain" || res.Peer == nil || res.Peer.Name != "a" ||
		res.Peer.State != "drained" || res.Peer.Idle != 0 || res.Peer.Busy != 0 || res.Peer.ClosedDrained != 1 {
		t.Fatalf("drain a: %d %+v %+v", code, res, res.Peer)
	}
	m := scrapeMetrics(t, adm)
	aL := []string{"peer", "a", "addr", ngs["a"].Addr()}
	bL := []string{"peer", "b", "addr", ngs["b"].Addr()}
	with := func(l []string, extra ...string) []string { return append(slices.Clone(l), extra...) }
	for _, w := range []struct {
		name   string
		labels []string
		v      float64
	}{
		{"serverside_peers", nil, 3},
		{"serverside_peer_up", aL, 0},
		{"serverside_peer_draining", aL, 1},
		{"serverside_peer_state", with(aL, "state", "drained"), 1},
		{"serverside_peer_state", with(aL, "state", "draining"), 0},
		{"serverside_peer_state", with(aL, "state", "up"), 0},
		{"serverside_peer_connections", with(aL, "state", "idle"), 0},
		{"serverside_peer_drain_closes_total", aL, 1},
		{"serverside_peer_picks_total", aL, 2},
		{"serverside_peer_weight", aL, 1},
		{"serverside_peer_up", bL, 1},
		{"serverside_peer_draining", bL, 0},
		{"serverside_peer_state", with(bL, "state", "up"), 1},
		{"serverside_peer_connections", with(bL, "state", "idle"), 1},
		{"serverside_peer_failures_total", bL, 0},
		{"serverside_upstream_closes_total", []string{"upstream", ngs["a"].Addr(), "reason", "drained"}, 1},
	} {
		if got := m.get(t, w.name, w.labels...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	if m.types["serverside_peer_picks_total"] != "counter" || m.types["serverside_peer_up"] != "gauge" {
		t.Errorf("types: %v", m.types)
	}

	// While drained, every request goes to b or c.
	for range 8 {
		get("/small?phase=drained")
	}
	if got := logged("/small?phase=drained", 8); got["a"] != 0 || got["b"] != 4 || got["c"] != 4 {
		t.Fatalf("requests while a is drained: %v", got)
	}
	if p := peerOf(t, statusJSON(t, adm), "a"); p.Picks != 2 || p.State != "drained" {
		t.Fatalf("a while drained: %+v", p)
	}

	// Undrain a, then catch it busy with a slow response (/delay takes
	// about two seconds): one /delay at a time until a has one.
	if code, res := postAdmin(t, "http://"+adm+"/peers/undrain?peer=a"); code != 200 || res.Action != "undrain" ||
		res.Peer == nil || res.Peer.State != "up" {
		t.Fatalf("undrain a: %d %+v", code, res)
	}
	delays := make(chan string, 3)
	started := 0
	defer func() {
		for range started - len(delays) {
			<-delays
		}
	}()
	picks := func(doc statusDoc) (n uint64) {
		for _, p := range doc.Peers {
			n += p.Picks
		}
		return n
	}
	for aPicked := false; started < 3 && !aPicked; {
		before := statusJSON(t, adm)
		started++
		go func() { delays <- get("/delay") }()
		var after statusDoc
		waitFor(t, "the /delay request picked", func() bool {
			after = statusJSON(t, adm)
			return picks(after) == picks(before)+1
		})
		aPicked = peerOf(t, after, "a").Picks > peerOf(t, before, "a").Picks
	}
	waitFor(t, "a busy with /delay", func() bool { return peerOf(t, statusJSON(t, adm), "a").Busy == 1 })
	if p := peerOf(t, statusJSON(t, adm), "a"); p.Busy != 1 {
		t.Fatalf("a never got a /delay request: %+v", p)
	}
	code, res = postAdmin(t, "http://"+adm+"/peers/drain?peer=a")
	if code != 200 || res.Peer == nil || res.Peer.State != "draining" || res.Peer.Busy != 1 || res.Peer.Idle != 0 {
		t.Fatalf("drain a while busy: %d %+v", code, res.Peer)
	}
	m = scrapeMetrics(t, adm)
	if m.get(t, "serverside_peer_state", with(aL, "state", "draining")...) != 1 ||
		m.get(t, "serverside_peer_draining", aL...) != 1 || m.get(t, "serverside_peer_up", aL...) != 0 ||
		m.get(t, "serverside_peer_connections", with(aL, "state", "busy")...) != 1 {
		t.Errorf("metrics while a is draining: state %v, busy %v", m.get(t, "serverside_peer_state", with(aL, "state", "draining")...),
			m.get(t, "serverside_peer_connections", with(aL, "state", "busy")...))
	}
	// New requests avoid a while its busy connection finishes.
	for range 4 {
		get("/small?phase=draining")
	}
	if got := logged("/small?phase=draining", 4); got["a"] != 0 {
		t.Fatalf("requests while a is draining: %v", got)
	}
	// Every /delay, a's included, completes: the drain cut no response.
	for range started {
		if body := <-delays; len(body) != bench.DelayBodySize {
			t.Fatalf("/delay body %d bytes, want %d", len(body), bench.DelayBodySize)
		}
	}
	started = 0
	waitFor(t, "a drained", func() bool { return peerOf(t, statusJSON(t, adm), "a").State == "drained" })
	if p := peerOf(t, statusJSON(t, adm), "a"); p.Busy != 0 || p.Idle != 0 || p.ClosedDrained != 2 {
		t.Fatalf("a after its response: %+v", p)
	}
	if n := countURI(ngs["a"], "/delay"); n != 1 {
		t.Fatalf("a's log has %d /delay requests, want 1", n)
	}
	m = scrapeMetrics(t, adm)
	if m.get(t, "serverside_peer_state", with(aL, "state", "drained")...) != 1 ||
		m.get(t, "serverside_peer_drain_closes_total", aL...) != 2 {
		t.Errorf("metrics once a is drained")
	}

	// Undrain: a takes requests again.
	if code, res := postAdmin(t, "http://"+adm+"/peers/undrain?peer=a"); code != 200 || res.Peer == nil || res.Peer.State != "up" {
		t.Fatalf("undrain a: %d %+v", code, res)
	}
	for range 6 {
		get("/small?phase=after")
	}
	if got := logged("/small?phase=after", 6); got["a"] == 0 {
		t.Fatalf("requests after undrain: %v", got)
	}
	m = scrapeMetrics(t, adm)
	if m.get(t, "serverside_peer_up", aL...) != 1 || m.get(t, "serverside_peer_draining", aL...) != 0 {
		t.Errorf("metrics after undrain: a not up")
	}
}

// sum adds up the samples named name whose labels include want (name,
// value pairs), over every series: an upstream can have several pool
// keys (a TLS key, a tunnel key).
func (p *promText) sum(name string, want ...string) float64 {
	var n float64
	for _, s := range p.samples {
		ok := s.name == name
		for i := 0; ok && i+1 < len(want); i += 2 {
			ok = s.labels[want[i]] == want[i+1]
		}
		if ok {
			n += s.value
		}
	}
	return n
}

// metricsOf renders p's /metrics as the admin server would, parsed back
// strictly.
func metricsOf(t *testing.T, p *proxy) *promText {
	t.Helper()
	a := newAdmin(p, adminInfo{})
	var b bytes.Buffer
	a.writeMetrics(&b, a.snapshot())
	pt, err := parseProm(b.String())
	if err != nil {
		t.Fatalf("/metrics malformed: %v\n%s", err, b.String())
	}
	return pt
}

// The engine's TLS, tunnel and authentication counters reach /metrics:
// two https targets on connections nginx closes after one request (a full
// handshake, then a resumed one), a CONNECT tunnel, and a Basic challenge
// from Apache answered with the origin URL's credentials.
func TestAdminUpstreamTLSTunnelAuth(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	pki := bench.NewPKI(t, "origin.test")
	ng := bench.StartNginx(t, bench.NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, KeepaliveRequests: 1})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 2, Logger: logger}, clientConfig{
		ForwardTLS:   &engine.TLS{RootCAs: pki.CAPEM},
		ConnectPorts: portSet{ports: []int{bench.Port(t, ng.TLSAddr())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	get := "GET https://" + ng.TLSAddr() + "/small HTTP/1.1\r\nHost: " + ng.TLSAddr() + "\r\nConnection: close\r\n\r\n"
	for i := 0; i < 2; i++ {
		if status, body := rawGet(t, px, get); status != 200 || body != bench.SmallBody {
			t.Fatalf("https target %d: %d %q", i, status, body)
		}
	}
	if out, _ := curl(t, "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small"); out != bench.SmallBody {
		t.Fatalf("through a tunnel: %q", out)
	}
	if reqs := ng.WaitTLSRequests(3, 10*time.Second); len(reqs) != 3 {
		t.Fatalf("nginx logged %d TLS requests, want 3", len(reqs))
	}
	up := ng.TLSAddr()
	m := metricsOf(t, p)
	for _, w := range []struct {
		name string
		v    float64
	}{
		{"serverside_upstream_tls_handshakes_total", 2},
		{"serverside_upstream_tls_resumed_total", 1},
		{"serverside_upstream_tunnels_total", 1},
		{"serverside_upstream_auth_rounds_total", 0},
	} {
		if got := m.sum(w.name, "upstream", up); got != w.v {
			t.Errorf("%s{upstream=%q} = %v, want %v", w.name, up, got, w.v)
		}
		if m.types[w.name] != "counter" {
			t.Errorf("%s: type %q", w.name, m.types[w.name])
		}
	}

	ap := bench.StartApache(t, bench.ApacheOptions{Auth: "basic", Users: map[string]string{"alice": "pw"}})
	p2, err := newProxy(logger, []string{"http://alice:pw@" + ap.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	px2 := serveProxy(t, p2)
	for i := 0; i < 2; i++ {
		if out, _ := curl(t, "http://"+px2+"/small"); out != bench.SmallBody {
			t.Fatalf("through Apache %d: %q", i, out)
		}
	}
	// The first request meets the 401 and is sent again with the
	// credentials; the second has them from the start.
	m = metricsOf(t, p2)
	if got := m.sum("serverside_upstream_auth_rounds_total", "upstream", ap.Addr()); got != 1 {
		t.Errorf("auth rounds %v, want 1", got)
	}
	if got := m.sum("serverside_upstream_tls_handshakes_total", "upstream", ap.Addr()); got != 0 {
		t.Errorf("TLS handshakes to a plain origin %v, want 0", got)
	}
}

// The aggregate of retired upstreams (engine.RetiredKey) keeps its own
// labelled series, but is not an upstream: serverside_upstreams leaves it
// out.
func TestMetricsRetiredNotAnUpstream(t *testing.T) {
	doc := statusDoc{
		Clients: clientStats{Responses: map[string]uint64{}},
		Upstreams: []upstreamRow{
			{Upstream: engine.RetiredKey, Key: engine.RetiredKey, Requests: 40, Closes: map[string]uint64{}, Errors: map[string]uint64{"dial": 3}},
			{Upstream: "10.0.0.1:80", Key: "10.0.0.1:80", Requests: 2, Closes: map[string]uint64{}, Errors: map[string]uint64{}},
		},
	}
	a := &admin{started: time.Unix(1700000000, 0)}
	var b bytes.Buffer
	a.writeMetrics(&b, doc)
	p, err := parseProm(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got := p.get(t, "serverside_upstreams"); got != 1 {
		t.Errorf("serverside_upstreams = %v, want 1", got)
	}
	if got := p.get(t, "serverside_upstream_requests_total", "upstream", engine.RetiredKey); got != 40 {
		t.Errorf("retired requests = %v, want 40", got)
	}
	if got := p.get(t, "serverside_upstream_errors_total", "upstream", engine.RetiredKey, "phase", "dial"); got != 3 {
		t.Errorf("retired dial errors = %v, want 3", got)
	}
}

// A connection the origin closes with its response (nginx at its
// keepalive_requests, 1 here: "Connection: close" on every response) is
// counted as the upstream's close, not the proxy's.
func TestAdminMetricsUpstreamClose(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{KeepaliveRequests: 1})
	px, adm := startProxyAdmin(t, "http://"+ng.Addr())
	for i := 0; i < 2; i++ {
		if out, _ := curl(t, "http://"+px+"/small"); out != bench.SmallBody {
			t.Fatalf("request %d: %q", i, out)
		}
	}
	up := ng.Addr()
	var p *promText
	waitFor(t, "both requests counted and their connections closed", func() bool {
		p = scrapeMetrics(t, adm)
		return p.get(t, "serverside_upstream_requests_total", "upstream", up) == 2 &&
			p.get(t, "serverside_upstream_connections", "upstream", up, "state", "busy") == 0
	})
	for reason, want := range map[string]float64{"upstream_close": 2, "owner": 0} {
		if got := p.get(t, "serverside_upstream_closes_total", "upstream", up, "reason", reason); got != want {
			t.Errorf("closes{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

// A client that goes away mid-download (a reset after 1 MiB of a 64 MiB
// file from a real nginx) and one that goes away mid-upload (a reset after
// 1 MiB of an 8 MiB PUT) fail their exchanges on the client's side: they
// count in serverside_upstream_caller_errors_total, not in
// serverside_upstream_errors_total, which would blame the origin, nor in
// canceled_total, nor against the peer (failures, downs, reroutes). Both
// upstream connections are closed, not pooled with the rest of the
// response unread or the request unfinished, and the next request works.
func TestAdminMetricsClientGone(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	writeRandomFile(t, filepath.Join(ng.Dir(), "html", "files", "big"), 64<<20)
	px, adm := startProxyAdmin(t, "http://"+ng.Addr())
	up := ng.Addr()
	busy := func() bool {
		return scrapeMetrics(t, adm).get(t, "serverside_upstream_connections", "upstream", up, "state", "busy") == 1
	}
	settled := func(requests float64) func() bool {
		return func() bool {
			p := scrapeMetrics(t, adm)
			return p.get(t, "serverside_upstream_requests_total", "upstream", up) == requests &&
				p.get(t, "serverside_upstream_connections", "upstream", up, "state", "busy") == 0
		}
	}

	// The download: the proxy's writes to the client fail (the sink's
	// error).
	resetMidDownload(t, px, "/files/big", 1<<20) // gone with a reset: the proxy's next writes fail
	waitFor(t, "the download counted and its connection settled", settled(1))

	// The upload: reading the request body from the client fails. The
	// reset waits until the exchange is under way.
	c, _ := dialClient(t, px)
	if _, err := fmt.Fprintf(c, "PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload's exchange under way", busy)
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
	waitFor(t, "the upload counted and its connection settled", settled(2))

	p := scrapeMetrics(t, adm)
	if n := p.sum("serverside_upstream_errors_total", "upstream", up); n != 0 {
		for _, ph := range phases() {
			t.Logf("errors_total{phase=%q} = %v", ph, p.get(t, "serverside_upstream_errors_total", "upstream", up, "phase", ph))
		}
		t.Errorf("errors_total = %v, want 0: the clients went away, not the origin", n)
	}
	for name, want := range map[string]float64{
		"serverside_upstream_caller_errors_total": 2,
		"serverside_upstream_canceled_total":      0,
		"serverside_upstream_retries_total":       0,
		"serverside_upstream_dials_total":         2,
	} {
		if got := p.get(t, name, "upstream", up); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := p.get(t, "serverside_upstream_connections", "upstream", up, "state", "idle"); got != 0 {
		t.Errorf("%v idle connections, want 0: neither connection may be pooled", got)
	}
	if got := p.get(t, "serverside_upstream_closes_total", "upstream", up, "reason", "owner"); got != 2 {
		t.Errorf("closes_total{reason=owner} = %v, want 2", got)
	}
	for _, name := range []string{"serverside_peer_failures_total", "serverside_peer_downs_total", "serverside_peer_rerouted_total"} {
		if got := p.sum(name); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	var row upstreamRow
	for _, r := range statusJSON(t, adm).Upstreams {
		if r.Key == up {
			row = r
		}
	}
	if row.CallerErrors != 2 || row.Canceled != 0 || row.Errors["body"] != 0 || row.Errors["write"] != 0 {
		t.Errorf("/status.json: %+v, want 2 caller errors, none canceled, no body or write errors", row)
	}
	// The page shows them in a column of their own, apart from the
	// errors, as served and as the script draws it from /status.json.
	_, _, html := httpGet(t, "http://"+adm+"/status")
	if ce, errs := upstreamCell(t, html, up, "caller-errors"), upstreamCell(t, html, up, "errors"); ce != "2" || errs != "0" {
		t.Errorf("/status as served: caller errors %q, errors %q; want 2 and 0", ce, errs)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		dom := chromium(t, "--virtual-time-budget=3000", "--dump-dom", "http://"+adm+"/status")
		if !strings.Contains(dom, `<span id="live" class="ok">live, updated`) {
			t.Fatalf("the page's refresh did not run:\n%s", dom)
		}
		if ce, errs := upstreamCell(t, dom, up, "caller-errors"), upstreamCell(t, dom, up, "errors"); ce != "2" || errs != "0" {
			t.Errorf("/status in Chromium: caller errors %q, errors %q; want 2 and 0", ce, errs)
		}
	}
	if got := p.sum("serverside_peer_up"); got != 1 {
		t.Errorf("serverside_peer_up = %v, want 1", got)
	}
	if out, _ := curl(t, "http://"+px+"/small"); out != bench.SmallBody {
		t.Fatalf("the next request: %q", out)
	}
}
