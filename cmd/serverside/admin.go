package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/poolset"
)

// proxyMetrics are the client-side counters of the proxy, updated with
// atomics by the connection goroutines and read by the admin server.
type proxyMetrics struct {
	accepted  atomic.Uint64 // client connections accepted
	open      atomic.Int64  // client connections open now
	requests  atomic.Uint64 // request heads parsed and handled
	byClass   [6]atomic.Uint64
	bodyBytes atomic.Uint64 // response body bytes written to clients
}

func (m *proxyMetrics) connOpened() {
	m.accepted.Add(1)
	m.open.Add(1)
}

func (m *proxyMetrics) connClosed() { m.open.Add(-1) }

// served counts one request and, when a response was written, its status
// class.
func (m *proxyMetrics) served(status int, bodyBytes int64) {
	m.requests.Add(1)
	if c := status / 100; c >= 1 && c <= 5 {
		m.byClass[c].Add(1)
	}
	if bodyBytes > 0 {
		m.bodyBytes.Add(uint64(bodyBytes))
	}
}

// adminInfo is what the admin pages show besides the live numbers: how the
// proxy was started.
type adminInfo struct {
	Listen string     // the proxy's listening address
	Mode   string     // "forward" or "reverse"
	Shards int        // engine shards (event loops)
	LB     string     // load-balancing policy
	Peers  []peerSpec // configured origins and parents, for their names
}

// admin serves /metrics, /status, /status.json and /debug/pprof/ for one
// proxy, and drains and undrains its peers on POST /peers/drain and
// /peers/undrain.
type admin struct {
	p       *proxy
	info    adminInfo
	started time.Time
	names   map[string]string // host:port of a configured peer -> its name
}

func newAdmin(p *proxy, info adminInfo) *admin {
	if info.Shards <= 0 {
		info.Shards = runtime.GOMAXPROCS(0) // the engine's default
	}
	a := &admin{p: p, info: info, started: time.Now(), names: make(map[string]string)}
	for _, ps := range info.Peers {
		if ps.Name != "" {
			if hp, err := peerHostPort(ps.URL); err == nil {
				a.names[hp] = ps.Name
			}
		}
	}
	return a
}

// handler is the admin mux. The pprof handlers are registered here and
// nowhere else that is served: the demo never serves http.DefaultServeMux.
func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.serveIndex)
	mux.HandleFunc("GET /metrics", a.serveMetrics)
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("GET /status.json", a.serveStatusJSON)
	// POST only: a drain changes state, so a crawler or a prefetching
	// browser following a link must not trigger one. Other methods get a
	// 405 with an Allow header from the handler, as JSON like its other
	// errors.
	mux.HandleFunc("/peers/drain", a.servePeerAction(true))
	mux.HandleFunc("/peers/undrain", a.servePeerAction(false))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (a *admin) serveIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, `<!doctype html><title>serverside admin</title>
<h1>serverside admin</h1><ul>
<li><a href="/status">/status</a>: pools at a glance (<a href="/status.json">/status.json</a>)
<li><a href="/metrics">/metrics</a>: Prometheus text format
<li>POST /peers/drain?peer=NAME, POST /peers/undrain?peer=NAME: take a peer out, put it back
<li><a href="/debug/pprof/">/debug/pprof/</a>: Go profiles
</ul>
`)
}

// adminServer is the running admin HTTP server.
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startAdmin listens on addr and serves the admin pages of p.
func startAdmin(addr string, p *proxy, info adminInfo, logger *slog.Logger) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &adminServer{
		srv: &http.Server{
			Handler:           newAdmin(p, info).handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the admin server listens on.
func (s *adminServer) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the admin server: it lets requests in flight finish until
// ctx ends (a CPU profile or trace in progress is then cut off), and
// returns once Serve has returned.
func (s *adminServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// upstreamRow is one upstream in /status.json.
type upstreamRow struct {
	Upstream   string `json:"upstream"`       // ip:port
	Key        string `json:"key"`            // the pool key: ip:port plus any TLS, parent or credential qualifiers
	Name       string `json:"name,omitempty"` // the configured peer's name
	Connecting int    `json:"connecting"`
	Busy       int    `json:"busy"`
	Idle       int    `json:"idle"`
	Pinned     int    `json:"pinned"`
	// TunnelsOpen counts the CONNECT tunnels through this parent open or
	// being opened now, each holding a slot of its max_conns; each is also
	// a busy (or connecting) connection under a key of its own.
	TunnelsOpen   int               `json:"tunnels_open"`
	Waiting       int               `json:"waiting"`
	Requests      uint64            `json:"requests"`
	Attempts      uint64            `json:"attempts"`
	Reused        uint64            `json:"reused"`
	ReuseRatio    float64           `json:"reuse_ratio"`
	Retries       uint64            `json:"retries"`
	RacesHit      uint64            `json:"races_hit"`
	RacesRetried  uint64            `json:"races_retried"`
	Pipelined     uint64            `json:"pipelined"`
	Unanswered    uint64            `json:"unanswered"`
	Detached      uint64            `json:"detached"`
	AuthRounds    uint64            `json:"auth_rounds"`
	TLSHandshakes uint64            `json:"tls_handshakes"`
	TLSResumed    uint64            `json:"tls_resumed"`
	Tunnels       uint64            `json:"tunnels"`
	Dialed        uint64            `json:"dialed"`
	DialFailed    uint64            `json:"dial_failed"`
	Closes        map[string]uint64 `json:"closes"`
	Errors        map[string]uint64 `json:"errors"`
	Canceled      uint64            `json:"canceled"`
	CallerErrors  uint64            `json:"caller_errors"`
}

// peerRow is one peer of a group in /status.json: the engine's PeerStats
// with the pool's view of the peer's connections.
type peerRow struct {
	Group      string `json:"group"`
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	Role       string `json:"role"` // "origin" or "parent"
	Weight     int    `json:"weight"`
	State      string `json:"state"` // up, down, draining or drained
	Connecting int    `json:"connecting"`
	Busy       int    `json:"busy"`
	Idle       int    `json:"idle"`
	Pinned     int    `json:"pinned"`
	// TunnelsOpen counts the CONNECT tunnels through this parent open or
	// being opened now, each holding a slot of its max_conns; each is also
	// one of the busy (or connecting) connections.
	TunnelsOpen int    `json:"tunnels_open"`
	Waiting     int    `json:"waiting"`
	Picks       uint64 `json:"picks"`    // balancer choices, probes included
	Failures    uint64 `json:"failures"` // connect failures, protocol errors, failed checks
	Downs       uint64 `json:"downs"`    // times marked down
	Rerouted    uint64 `json:"rerouted"` // requests moved away: a failed connect, a drain, a drop or a header timeout
	// ClosedDrained counts the peer's connections closed by a drain (a pool
	// counter, like the upstream rows' closes).
	ClosedDrained uint64 `json:"closed_drained"`
}

// clientStats is the client side in /status.json.
type clientStats struct {
	Open      int64             `json:"open"`
	Parked    int64             `json:"parked"` // of Open, idle off netpoll (park.go)
	Accepted  uint64            `json:"accepted"`
	Requests  uint64            `json:"requests"`
	Responses map[string]uint64 `json:"responses"` // by status class, "2xx"
	BodyBytes uint64            `json:"body_bytes"`
}

// statusDoc is /status.json.
type statusDoc struct {
	Listen        string        `json:"listen"`
	Mode          string        `json:"mode"`
	LB            string        `json:"lb"`
	Shards        int           `json:"shards"`
	Started       time.Time     `json:"started"`
	UptimeSeconds float64       `json:"uptime_seconds"`
	Goroutines    int           `json:"goroutines"`
	Clients       clientStats   `json:"clients"`
	Upstreams     []upstreamRow `json:"upstreams"`
	Peers         []peerRow     `json:"peers"`
}

// closeReasons names poolset.CloseCounts' fields, in their order.
var closeReasons = []string{"idle_timeout", "hint_expired", "lifetime", "max_requests",
	"dead_on_checkout", "dead_on_return", "peer_closed_idle", "over_cap", "drained", "upstream_close", "owner"}

func closeCounts(c poolset.CloseCounts) []uint64 {
	return []uint64{c.IdleTimeout, c.HintExpired, c.Lifetime, c.MaxRequests,
		c.DeadOnCheckout, c.DeadOnReturn, c.PeerClosedIdle, c.OverCap, c.Drained, c.UpstreamClose, c.Owner}
}

// phases lists the error phases, so that every one appears in /metrics
// from the start (a counter that appears late breaks rate()).
func phases() []string {
	out := make([]string, conn.NumPhases)
	for i := range out {
		out[i] = conn.Phase(i).String()
	}
	return out
}

// keyAddr is the ip:port part of a pool key's String form.
func keyAddr(key string) string {
	addr, _, _ := strings.Cut(key, " ")
	return addr
}

func (a *admin) snapshot() statusDoc {
	m := &a.p.metrics
	doc := statusDoc{
		Listen:        a.info.Listen,
		Mode:          a.info.Mode,
		LB:            a.info.LB,
		Shards:        a.info.Shards,
		Started:       a.started.UTC(),
		UptimeSeconds: time.Since(a.started).Seconds(),
		Goroutines:    runtime.NumGoroutine(),
		Clients: clientStats{
			Open:      m.open.Load(),
			Parked:    a.p.parked(),
			Accepted:  m.accepted.Load(),
			Requests:  m.requests.Load(),
			Responses: make(map[string]uint64),
			BodyBytes: m.bodyBytes.Load(),
		},
		Upstreams: []upstreamRow{},
		Peers:     a.peerRows(),
	}
	if g, ok := a.p.eng.PeerStats()[a.p.group]; ok && a.p.group != "" {
		// The balancer the engine runs, whatever the caller said.
		doc.LB = string(g.Balancer)
	}
	for c := 1; c <= 5; c++ {
		doc.Clients.Responses[strconv.Itoa(c)+"xx"] = m.byClass[c].Load()
	}
	for key, s := range a.p.eng.Stats() {
		r := upstreamRow{
			Upstream: keyAddr(key), Key: key, Name: a.names[keyAddr(key)],
			Connecting: s.Pool.Connecting, Busy: s.Pool.Busy, Idle: s.Pool.Idle, Pinned: s.Pool.Pinned, TunnelsOpen: s.Pool.Held, Waiting: s.Pool.Waiting,
			Requests: s.Requests, Attempts: s.Attempts, Reused: s.OnReused, ReuseRatio: s.ReuseRatio,
			Retries: s.Retries, RacesHit: s.RacesHit, RacesRetried: s.RacesRetried, Detached: s.Detached,
			Pipelined: s.Pipelined, Unanswered: s.Unanswered,
			AuthRounds: s.AuthRounds, TLSHandshakes: s.TLSHandshakes, TLSResumed: s.TLSResumed, Tunnels: s.Tunnels,
			Dialed: s.Pool.Dialed, DialFailed: s.Pool.DialFailed,
			Closes: make(map[string]uint64), Errors: make(map[string]uint64), Canceled: s.Canceled,
			CallerErrors: s.CallerErrors,
		}
		for i, n := range closeCounts(s.Pool.Closed) {
			r.Closes[closeReasons[i]] = n
		}
		for _, ph := range phases() {
			r.Errors[ph] = s.Errors[ph]
		}
		doc.Upstreams = append(doc.Upstreams, r)
	}
	slices.SortFunc(doc.Upstreams, func(x, y upstreamRow) int { return strings.Compare(x.Key, y.Key) })
	return doc
}

// peerRows lists the peers of every engine group, by group and then in
// their configured order.
func (a *admin) peerRows() []peerRow {
	all := a.p.eng.PeerStats()
	groups := make([]string, 0, len(all))
	for name := range all {
		groups = append(groups, name)
	}
	slices.Sort(groups)
	rows := []peerRow{}
	for _, name := range groups {
		for _, ps := range all[name].Peers {
			role := "origin"
			if ps.Parent {
				role = "parent"
			}
			rows = append(rows, peerRow{
				Group: name, Name: ps.Name, Addr: ps.Addr, Role: role, Weight: ps.Weight, State: ps.State.String(),
				Connecting: ps.Pool.Connecting, Busy: ps.Pool.Busy, Idle: ps.Pool.Idle, Pinned: ps.Pool.Pinned,
				TunnelsOpen: ps.Pool.Held, Waiting: ps.Pool.Waiting, Picks: ps.Picks, Failures: ps.Failures, Downs: ps.Downs,
				Rerouted: ps.Rerouted, ClosedDrained: ps.Pool.Closed.Drained,
			})
		}
	}
	return rows
}

// peerActionResult is the reply to POST /peers/drain and /peers/undrain:
// the peer as it is right after the call. A drain answers at once; State
// moves from draining to drained once the peer's busy connections have
// finished their responses, which /status.json shows.
type peerActionResult struct {
	Action string   `json:"action"` // "drain" or "undrain"
	Peer   *peerRow `json:"peer,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// servePeerAction drains (drain true) or undrains the peer named by the
// query's peer parameter in the proxy's group: 200 with the peer's row,
// 400 without a name, 404 for a name the group lacks (or with no group).
func (a *admin) servePeerAction(drain bool) http.HandlerFunc {
	action, call := "undrain", a.p.eng.UndrainPeer
	if drain {
		action, call = "drain", a.p.eng.DrainPeer
	}
	return func(w http.ResponseWriter, r *http.Request) {
		res := peerActionResult{Action: action}
		name := r.URL.Query().Get("peer")
		code := http.StatusOK
		var err error
		post := r.Method == http.MethodPost
		if name != "" && post {
			err = call(a.p.group, name)
		}
		switch {
		case !post:
			w.Header().Set("Allow", http.MethodPost)
			code, res.Error = http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: use POST"
		case name == "":
			code, res.Error = http.StatusBadRequest, "missing peer parameter: /peers/"+action+"?peer=NAME"
		case errors.Is(err, engine.ErrNoGroup) || errors.Is(err, engine.ErrNoPeer):
			code, res.Error = http.StatusNotFound, err.Error()
		case err != nil:
			code, res.Error = http.StatusInternalServerError, err.Error()
		default:
			a.p.log.Info("admin: peer "+action, "group", a.p.group, "peer", name)
			for _, row := range a.peerRows() {
				if row.Group == a.p.group && row.Name == name {
					res.Peer = &row
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	}
}

func (a *admin) serveStatusJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(a.snapshot())
}

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"sum": func(m map[string]uint64) uint64 {
		var n uint64
		for _, v := range m {
			n += v
		}
		return n
	},
	"pct": func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
}).Parse(statusHTML))

// serveStatus renders the page with the numbers of now, so it reads right
// without JavaScript; its script then refreshes them from /status.json
// every second.
func (a *admin) serveStatus(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	if err := statusTmpl.Execute(&b, a.snapshot()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// serveMetrics writes the Prometheus text exposition format (version
// 0.0.4), by hand: a few dozen families do not need a client library.
func (a *admin) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	a.writeMetrics(&b, a.snapshot())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// expo writes metric families in the text exposition format.
type expo struct{ b *bytes.Buffer }

func (e expo) family(name, typ, help string) {
	fmt.Fprintf(e.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (e expo) sample(name, value string, labels ...string) {
	e.b.WriteString(name)
	if len(labels) > 0 {
		e.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				e.b.WriteByte(',')
			}
			e.b.WriteString(labels[i])
			e.b.WriteString(`="`)
			e.b.WriteString(escapeLabel(labels[i+1]))
			e.b.WriteByte('"')
		}
		e.b.WriteByte('}')
	}
	e.b.WriteByte(' ')
	e.b.WriteString(value)
	e.b.WriteByte('\n')
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// escapeLabel escapes a label value; bytes that are not UTF-8 (a peer
// name from ?name=%ff) become U+FFFD, since the format is UTF-8.
func escapeLabel(s string) string { return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) }

func u64(n uint64) string  { return strconv.FormatUint(n, 10) }
func i64(n int64) string   { return strconv.FormatInt(n, 10) }
func f64(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// upstreamLabels are the labels of an upstream's samples: upstream is the
// ip:port; key is added only when the pool key has more than the address
// (a TLS name, a parent proxy, credentials), so that two keys to one
// address stay two series.
func upstreamLabels(r upstreamRow, extra ...string) []string {
	l := []string{"upstream", r.Upstream}
	if r.Key != r.Upstream {
		l = append(l, "key", r.Key)
	}
	return append(l, extra...)
}

func (a *admin) writeMetrics(b *bytes.Buffer, doc statusDoc) {
	e := expo{b}
	c := doc.Clients

	e.family("serverside_shards", "gauge", "Engine shards (event loops).")
	e.sample("serverside_shards", strconv.Itoa(doc.Shards))
	e.family("serverside_start_time_seconds", "gauge", "Start time of the proxy since the Unix epoch in seconds.")
	e.sample("serverside_start_time_seconds", f64(float64(a.started.UnixMilli())/1000))
	e.family("serverside_goroutines", "gauge", "Goroutines in the proxy process.")
	e.sample("serverside_goroutines", strconv.Itoa(doc.Goroutines))

	e.family("serverside_client_connections", "gauge", "Client connections open.")
	e.sample("serverside_client_connections", i64(c.Open))
	e.family("serverside_client_connections_parked", "gauge", "Client connections open and idle, parked off the event loop.")
	e.sample("serverside_client_connections_parked", i64(c.Parked))
	e.family("serverside_client_connections_accepted_total", "counter", "Client connections accepted.")
	e.sample("serverside_client_connections_accepted_total", u64(c.Accepted))
	e.family("serverside_client_requests_total", "counter", "Client requests served (request heads parsed and answered or failed).")
	e.sample("serverside_client_requests_total", u64(c.Requests))
	e.family("serverside_client_responses_total", "counter", "Responses written to clients, by status class.")
	for cl := 1; cl <= 5; cl++ {
		k := strconv.Itoa(cl) + "xx"
		e.sample("serverside_client_responses_total", u64(c.Responses[k]), "code", k)
	}
	e.family("serverside_client_response_body_bytes_total", "counter", "Response body bytes written to clients.")
	e.sample("serverside_client_response_body_bytes_total", u64(c.BodyBytes))
	if a.p != nil {
		a.p.tunnels.write(e)
	}

	ups := doc.Upstreams
	// The aggregate of retired upstreams has series of its own, but it is
	// not an upstream.
	n := 0
	for _, r := range ups {
		if r.Key != engine.RetiredKey {
			n++
		}
	}
	e.family("serverside_upstreams", "gauge", "Upstreams the engine has state for (not counting the aggregate of retired ones).")
	e.sample("serverside_upstreams", strconv.Itoa(n))

	e.family("serverside_upstream_connections", "gauge", "Upstream connections by state (connecting, busy, idle, pinned).")
	for _, r := range ups {
		for _, st := range []struct {
			name string
			n    int
		}{{"connecting", r.Connecting}, {"busy", r.Busy}, {"idle", r.Idle}, {"pinned", r.Pinned}} {
			e.sample("serverside_upstream_connections", strconv.Itoa(st.n), upstreamLabels(r, "state", st.name)...)
		}
	}
	gauge := func(name, help string, v func(upstreamRow) string) {
		e.family(name, "gauge", help)
		for _, r := range ups {
			e.sample(name, v(r), upstreamLabels(r)...)
		}
	}
	counter := func(name, help string, v func(upstreamRow) uint64) {
		e.family(name, "counter", help)
		for _, r := range ups {
			e.sample(name, u64(v(r)), upstreamLabels(r)...)
		}
	}
	gauge("serverside_upstream_tunnels_open", "CONNECT tunnels through the upstream (a parent) open or being opened now, each holding a slot of its max_conns; each is also a busy connection under an upstream key of its own.",
		func(r upstreamRow) string { return strconv.Itoa(r.TunnelsOpen) })
	gauge("serverside_upstream_waiting", "Requests queued for a connection to the upstream.",
		func(r upstreamRow) string { return strconv.Itoa(r.Waiting) })
	counter("serverside_upstream_requests_total", "Requests to the upstream finished, successfully or not.",
		func(r upstreamRow) uint64 { return r.Requests })
	counter("serverside_upstream_attempts_total", "Exchanges started with the upstream, retries included.",
		func(r upstreamRow) uint64 { return r.Attempts })
	counter("serverside_upstream_reused_total", "Exchanges started on a reused connection.",
		func(r upstreamRow) uint64 { return r.Reused })
	counter("serverside_upstream_retries_total", "Exchanges sent again after a failure.",
		func(r upstreamRow) uint64 { return r.Retries })
	counter("serverside_upstream_races_hit_total", "Failures on a reused connection before any response byte (stale keep-alive races).",
		func(r upstreamRow) uint64 { return r.RacesHit })
	counter("serverside_upstream_races_retried_total", "Stale keep-alive races that were retried.",
		func(r upstreamRow) uint64 { return r.RacesRetried })
	counter("serverside_upstream_pipelined_total", "Exchanges sent on a connection in pipeline mode (a peer's pipeline option).",
		func(r upstreamRow) uint64 { return r.Pipelined })
	counter("serverside_upstream_unanswered_total", "Pipelined requests sent again because their connection ended before their response.",
		func(r upstreamRow) uint64 { return r.Unanswered })
	counter("serverside_upstream_detached_total", "Connections moved to blocking I/O for a large body.",
		func(r upstreamRow) uint64 { return r.Detached })
	counter("serverside_upstream_auth_rounds_total", "Requests sent again with the proxy's credentials answering a 401 or 407.",
		func(r upstreamRow) uint64 { return r.AuthRounds })
	counter("serverside_upstream_tls_handshakes_total", "TLS connections made to the upstream.",
		func(r upstreamRow) uint64 { return r.TLSHandshakes })
	counter("serverside_upstream_tls_resumed_total", "TLS connections whose handshake resumed an earlier session.",
		func(r upstreamRow) uint64 { return r.TLSResumed })
	counter("serverside_upstream_tunnels_total", "CONNECT tunnels opened for clients, to the upstream or through it as a parent.",
		func(r upstreamRow) uint64 { return r.Tunnels })
	counter("serverside_upstream_dials_total", "Connections dialed (pool counter; restarts when the pool retires a quiet upstream).",
		func(r upstreamRow) uint64 { return r.Dialed })
	counter("serverside_upstream_dial_failures_total", "Dials that failed; not those given up because the request was canceled (pool counter).",
		func(r upstreamRow) uint64 { return r.DialFailed })
	e.family("serverside_upstream_closes_total", "counter", "Upstream connections closed, by reason (pool counter).")
	for _, r := range ups {
		for _, reason := range closeReasons {
			e.sample("serverside_upstream_closes_total", u64(r.Closes[reason]), upstreamLabels(r, "reason", reason)...)
		}
	}
	counter("serverside_upstream_canceled_total", "Upstream requests the proxy gave up on: their context ended at the shutdown's deadline (not in errors_total).",
		func(r upstreamRow) uint64 { return r.Canceled })
	counter("serverside_upstream_caller_errors_total", "Upstream requests that failed on the client's side: the response could not be relayed (the client went away) or the request body could not be read from the client (not in errors_total).",
		func(r upstreamRow) uint64 { return r.CallerErrors })
	e.family("serverside_upstream_errors_total", "counter", "Failed upstream requests, by the phase they failed in; not those that failed on the client's side or were canceled.")
	for _, r := range ups {
		for _, ph := range phases() {
			e.sample("serverside_upstream_errors_total", u64(r.Errors[ph]), upstreamLabels(r, "phase", ph)...)
		}
	}
	gauge("serverside_upstream_reuse_ratio", "Share of exchanges that needed no new connection (reused / attempts).",
		func(r upstreamRow) string { return f64(r.ReuseRatio) })

	writePeerMetrics(e, doc.Peers)
}

// peerStates are the values of peerRow.State, in the order of
// engine.PeerState.
var peerStates = []string{engine.PeerUp.String(), engine.PeerDown.String(),
	engine.PeerDraining.String(), engine.PeerDrained.String()}

// writePeerMetrics writes the peer group families. A peer's labels are its
// name and address; group is added only for a group other than the demo's
// own, which is the only one the demo builds.
func writePeerMetrics(e expo, peers []peerRow) {
	labels := func(r peerRow, extra ...string) []string {
		l := []string{"peer", r.Name, "addr", r.Addr}
		if r.Group != peerGroup {
			l = append(l, "group", r.Group)
		}
		return append(l, extra...)
	}
	b01 := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	gauge := func(name, help string, v func(peerRow) string) {
		e.family(name, "gauge", help)
		for _, r := range peers {
			e.sample(name, v(r), labels(r)...)
		}
	}
	counter := func(name, help string, v func(peerRow) uint64) {
		e.family(name, "counter", help)
		for _, r := range peers {
			e.sample(name, u64(v(r)), labels(r)...)
		}
	}
	e.family("serverside_peers", "gauge", "Peers (origins or parents) in the proxy's peer group.")
	e.sample("serverside_peers", strconv.Itoa(len(peers)))
	gauge("serverside_peer_up", "1 if the peer takes requests (state up): not down, draining or drained.",
		func(r peerRow) string { return b01(r.State == engine.PeerUp.String()) })
	gauge("serverside_peer_draining", "1 if the peer is taken out by a drain (draining or drained).",
		func(r peerRow) string {
			return b01(r.State == engine.PeerDraining.String() || r.State == engine.PeerDrained.String())
		})
	e.family("serverside_peer_state", "gauge", "The peer's state: 1 for the one it is in (up, down, draining, drained), 0 for the others.")
	for _, r := range peers {
		for _, st := range peerStates {
			e.sample("serverside_peer_state", b01(r.State == st), labels(r, "state", st)...)
		}
	}
	gauge("serverside_peer_weight", "The peer's weight in the balancer.",
		func(r peerRow) string { return strconv.Itoa(r.Weight) })
	e.family("serverside_peer_connections", "gauge", "The peer's connections by state (connecting, busy, idle, pinned); while draining, what is left to close.")
	for _, r := range peers {
		for _, st := range []struct {
			name string
			n    int
		}{{"connecting", r.Connecting}, {"busy", r.Busy}, {"idle", r.Idle}, {"pinned", r.Pinned}} {
			e.sample("serverside_peer_connections", strconv.Itoa(st.n), labels(r, "state", st.name)...)
		}
	}
	gauge("serverside_peer_tunnels_open", "CONNECT tunnels through the peer (a parent) open or being opened now, each holding a slot of its max_conns; each is also one of its busy connections.",
		func(r peerRow) string { return strconv.Itoa(r.TunnelsOpen) })
	gauge("serverside_peer_waiting", "Requests queued for a connection to the peer.",
		func(r peerRow) string { return strconv.Itoa(r.Waiting) })
	counter("serverside_peer_picks_total", "Times the balancer chose the peer, probes included.",
		func(r peerRow) uint64 { return r.Picks })
	counter("serverside_peer_failures_total", "Connect failures, protocol errors and failed active checks of the peer.",
		func(r peerRow) uint64 { return r.Failures })
	counter("serverside_peer_downs_total", "Times the peer was marked down.",
		func(r peerRow) uint64 { return r.Downs })
	counter("serverside_peer_rerouted_total", "Requests moved to another peer after their connect to this one failed, it was drained while they waited, it dropped their new connection unanswered, or it did not answer them within the response-header timeout.",
		func(r peerRow) uint64 { return r.Rerouted })
	counter("serverside_peer_drain_closes_total", "The peer's connections closed by a drain (pool counter).",
		func(r peerRow) uint64 { return r.ClosedDrained })
}
