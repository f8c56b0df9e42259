package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// fileConfig is the -config file: a JSON object with every flag plus the
// per-peer options that have no flag. docs/demo.md documents it with an
// example.
//
// The peers' options (names, weights, connection caps) become the engine
// peer group's (withFilePeers in peers.go).
type fileConfig struct {
	Listen    string     `json:"listen"`
	Admin     string     `json:"admin"`
	Shards    *int       `json:"shards"`
	AccessLog *bool      `json:"access_log"`
	Origins   []peerSpec `json:"origins"`
	Parents   []peerSpec `json:"parents"`
	LB        string     `json:"lb"`
	Timeouts  timeouts   `json:"timeouts"`
	Health    healthSpec `json:"health"`
	// ClientAuth is -client-auth: "none" or "pass".
	ClientAuth string `json:"client_auth"`
	// ConnectPorts is as -connect-ports: "443,8443" or "any".
	ConnectPorts string `json:"connect_ports"`
	// CAFile, Insecure, ClientCert and ClientKey are as the flags of the
	// same names: TLS to https origins (and https:// targets).
	CAFile     string `json:"ca_file"`
	Insecure   *bool  `json:"insecure"`
	ClientCert string `json:"client_cert"`
	ClientKey  string `json:"client_key"`
	// UpstreamMaxRequests and UpstreamMaxLifetime are as
	// -upstream-max-requests and -upstream-max-lifetime.
	UpstreamMaxRequests *int     `json:"upstream_max_requests"`
	UpstreamMaxLifetime duration `json:"upstream_max_lifetime"`
	// UpstreamGoNet is as -upstream-gonet.
	UpstreamGoNet *bool `json:"upstream_gonet"`
	// StrictResend is as -strict-resend.
	StrictResend *bool `json:"strict_resend"`
	// ClientParkAfter is as -client-park-after: "0s" never parks.
	ClientParkAfter *duration `json:"client_park_after"`
	// ViaName is as -via-name: the received-by of the proxy's Via.
	ViaName string `json:"via_name"`
}

// peerSpec is one origin or parent proxy.
type peerSpec struct {
	// URL is http://host:port, with credentials for the peer's
	// challenges in its userinfo (http://user:pass@host:port).
	URL string `json:"url"`
	// Name labels the peer in logs and on /status; default host:port.
	Name string `json:"name"`
	// Weight is the peer's share for weighted policies, 1 to 1000;
	// 0 or absent means 1.
	Weight int `json:"weight"`
	// MaxConns caps the peer's connections; 0 or absent means no cap.
	MaxConns int `json:"max_conns"`
	// MaxPending bounds the requests waiting for one of those
	// connections, PendingTimeout each wait: as the URL options
	// max_pending and pending_timeout (engine defaults when absent).
	MaxPending     int       `json:"max_pending"`
	PendingTimeout *duration `json:"pending_timeout"`
	// Pipeline is the URL option pipeline: GETs and HEADs pipelined, up
	// to this many per connection; 0 or 1 for none.
	Pipeline int `json:"pipeline"`
	// SNI is the server name of an https origin; default the URL's host.
	SNI string `json:"sni"`
	// Preemptive is the URL option preemptive (peerAuth in auth.go).
	Preemptive *bool `json:"preemptive"`
}

// timeouts are the engine's timeouts, as Go duration strings ("10s").
// Nil is absent: "0s" is a value, 0 for TunnelIdle (never) and Shutdown
// (at once), and refused for the others, as for their flags.
type timeouts struct {
	Connect        *duration `json:"connect"`
	Idle           *duration `json:"idle"`
	ResponseHeader *duration `json:"response_header"`
	TunnelIdle     *duration `json:"tunnel_idle"`
	TLSHandshake   *duration `json:"tls_handshake"`
	// ClientIdle and ClientHeader are the client side's:
	// -client-idle-timeout and -client-header-timeout.
	ClientIdle   *duration `json:"client_idle"`
	ClientHeader *duration `json:"client_header"`
	// Shutdown is -shutdown-timeout.
	Shutdown *duration `json:"shutdown"`
}

// duration is a time.Duration written as a Go duration string in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"10s\", got %s", b)
	}
	v, err := parseDuration(s)
	*d = duration(v)
	return err
}

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return v, nil
}

// lbPolicies are the accepted values of lb.
var lbPolicies = []string{"roundrobin", "leastconn", "p2c", "hash"}

// ConfigError is a -config file that cannot be used; Field names the
// offending field (a JSON path such as origins[1].weight) when there is
// one.
type ConfigError struct {
	File  string
	Field string
	Err   error
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return "config " + e.File + ": " + e.Err.Error()
	}
	return "config " + e.File + ": " + e.Field + ": " + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ErrUnknownField is what a ConfigError wraps for a field the format does
// not have, a likely typo.
var ErrUnknownField = errors.New("unknown field")

// loadConfig reads and validates a config file.
func loadConfig(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{File: path, Err: err}
	}
	return parseConfig(path, data)
}

// parseConfig decodes and validates a config file's contents; name is for
// the errors.
func parseConfig(name string, data []byte) (*fileConfig, error) {
	if err := json.Unmarshal(data, new(any)); err != nil {
		return nil, &ConfigError{File: name, Err: jsonSyntax(data, err)}
	}
	if err := repeatedKey(data); err != nil {
		err.File = name
		return nil, err
	}
	// Numbers as written, so that checkFields can tell 1e3 or 1.5 from an
	// integer as the decoder does.
	var raw any
	rd := json.NewDecoder(bytes.NewReader(data))
	rd.UseNumber()
	if err := rd.Decode(&raw); err != nil {
		return nil, &ConfigError{File: name, Err: jsonSyntax(data, err)}
	}
	if _, ok := raw.(map[string]any); !ok {
		return nil, &ConfigError{File: name, Err: errors.New("want a JSON object at the top")}
	}
	// encoding/json names an unknown field but not where it is, and
	// reports an Unmarshaler's error without the field: walking the
	// document first gives the full path of either.
	if err := checkFields(raw, reflect.TypeFor[fileConfig](), ""); err != nil {
		err.File = name
		return nil, err
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		ce := &ConfigError{File: name, Err: err}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			ce.Field, ce.Err = te.Field, fmt.Errorf("want a %s, got a JSON %s", te.Type, te.Value)
		}
		return nil, ce
	}
	if err := fc.validate(); err != nil {
		err.File = name
		return nil, err
	}
	return &fc, nil
}

// jsonSyntax adds the line and column to a JSON syntax error.
func jsonSyntax(data []byte, err error) error {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	// Offset counts the bytes read, the offending one included.
	off := max(min(int(se.Offset), len(data))-1, 0)
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Errorf("line %d column %d: %w", line, col, err)
}

// repeatedKey reports the first key that an object of data (valid JSON)
// has twice: the decoder silently keeps the last one, and the other is
// likely a mistake.
func repeatedKey(data []byte) *ConfigError {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func(path string) *ConfigError
	walk = func(path string) *ConfigError {
		tok, err := dec.Token()
		if err != nil {
			return nil // a syntax error, reported by the caller's decode
		}
		switch tok {
		case json.Delim('{'):
			seen := make(map[string]bool)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil
				}
				k, _ := kt.(string)
				p := k
				if path != "" {
					p = path + "." + k
				}
				if seen[k] {
					line := 1 + bytes.Count(data[:dec.InputOffset()], []byte("\n"))
					return &ConfigError{Field: p, Err: fmt.Errorf("line %d: repeated key", line)}
				}
				seen[k] = true
				if err := walk(p); err != nil {
					return err
				}
			}
			_, _ = dec.Token() // }
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(path + "[" + strconv.Itoa(i) + "]"); err != nil {
					return err
				}
			}
			_, _ = dec.Token() // ]
		}
		return nil
	}
	return walk("")
}

// checkFields reports the first object key in v that t has no JSON field
// for, the first value of the wrong JSON type, or the first bad duration,
// descending into nested structs and slices of structs. The decoder would
// report a wrong type too, but without the list index in its path
// (origins.weight for origins[1].weight) and with Go's type names.
func checkFields(v any, t reflect.Type, path string) *ConfigError {
	if v == nil {
		return nil // null leaves the field as it is, as the decoder does
	}
	wrongType := func(want string) *ConfigError {
		got := "a JSON string"
		switch v.(type) {
		case json.Number:
			got = "a JSON number"
		case bool:
			got = "a JSON bool"
		case []any:
			return &ConfigError{Field: path, Err: fmt.Errorf("want %s, got a JSON array", want)}
		case map[string]any:
			return &ConfigError{Field: path, Err: fmt.Errorf("want %s, got a JSON object", want)}
		}
		lit, _ := json.Marshal(v)
		return &ConfigError{Field: path, Err: fmt.Errorf("want %s, got %s %s", want, got, lit)}
	}
	if t == reflect.TypeFor[duration]() {
		s, ok := v.(string)
		if !ok {
			got, _ := json.Marshal(v)
			return &ConfigError{Field: path, Err: fmt.Errorf("want a duration string such as \"10s\", got %s", got)}
		}
		if _, err := parseDuration(s); err != nil {
			return &ConfigError{Field: path, Err: err}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkFields(v, t.Elem(), path)
	case reflect.String:
		if _, ok := v.(string); !ok {
			return wrongType("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return wrongType("a bool")
		}
	case reflect.Int:
		n, ok := v.(json.Number)
		if !ok {
			return wrongType("an integer")
		}
		if _, err := strconv.ParseInt(string(n), 10, strconv.IntSize); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return &ConfigError{Field: path, Err: fmt.Errorf("%s is out of range", n)}
			}
			return wrongType("an integer")
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return wrongType("a list")
		}
		for i, e := range arr {
			if err := checkFields(e, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return wrongType("an object")
		}
		fields := make(map[string]reflect.Type)
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for k, sub := range obj {
			ft, ok := fields[k]
			p := k
			if path != "" {
				p = path + "." + k
			}
			if !ok {
				return &ConfigError{Field: p, Err: fmt.Errorf("%w (known fields here: %s)", ErrUnknownField, strings.Join(names, ", "))}
			}
			if err := checkFields(sub, ft, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (fc *fileConfig) validate() *ConfigError {
	bad := func(field string, format string, args ...any) *ConfigError {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	for _, a := range []struct{ field, addr string }{{"listen", fc.Listen}, {"admin", fc.Admin}} {
		if a.addr == "" {
			continue
		}
		if err := checkListenAddr(a.addr); err != nil {
			return &ConfigError{Field: a.field, Err: err}
		}
	}
	if fc.Shards != nil && (*fc.Shards < 0 || *fc.Shards > engine.MaxShards) {
		return bad("shards", "must be 0 (GOMAXPROCS) to %d, got %d", engine.MaxShards, *fc.Shards)
	}
	if fc.LB != "" && !slices.Contains(lbPolicies, fc.LB) {
		return bad("lb", "unknown policy %q; want one of %s", fc.LB, strings.Join(lbPolicies, ", "))
	}
	if fc.ClientAuth != "" && fc.ClientAuth != clientAuthNone && fc.ClientAuth != clientAuthPass {
		return bad("client_auth", "unknown mode %q; want %s or %s", fc.ClientAuth, clientAuthNone, clientAuthPass)
	}
	if fc.ConnectPorts != "" {
		if _, err := parsePorts(fc.ConnectPorts); err != nil {
			return bad("connect_ports", "%v", err)
		}
	}
	if (fc.ClientCert == "") != (fc.ClientKey == "") {
		return bad("client_cert", "client_cert and client_key go together")
	}
	if fc.ViaName != "" {
		if err := checkViaName(fc.ViaName); err != nil {
			return bad("via_name", "%v", err)
		}
	}
	for _, t := range []struct {
		field string
		d     *duration
	}{
		{"timeouts.connect", fc.Timeouts.Connect},
		{"timeouts.idle", fc.Timeouts.Idle},
		{"timeouts.response_header", fc.Timeouts.ResponseHeader},
		{"timeouts.tls_handshake", fc.Timeouts.TLSHandshake},
		{"timeouts.client_idle", fc.Timeouts.ClientIdle},
		{"timeouts.client_header", fc.Timeouts.ClientHeader},
		{"health.interval", fc.Health.Interval},
		{"health.timeout", fc.Health.Timeout},
	} {
		if t.d != nil && *t.d == 0 {
			return bad(t.field, "want a duration above 0 (leave it out for the default)")
		}
	}
	if fc.Health.Path == "" {
		// The active checks' settings, without the checks, would be
		// ignored; max_fails is the passive ones'.
		for _, f := range []struct {
			field string
			set   bool
		}{
			{"host", fc.Health.Host != ""}, {"interval", fc.Health.Interval != nil},
			{"timeout", fc.Health.Timeout != nil}, {"status", fc.Health.Status != 0},
		} {
			if f.set {
				return bad("health."+f.field, "only with health.path (active checks)")
			}
		}
	}
	maxFails := -1
	if fc.Health.MaxFails != nil {
		maxFails = *fc.Health.MaxFails
	}
	if field, err := checkHealth(fc.Health.Path, fc.Health.Host, fc.Health.Status, maxFails); err != nil {
		return &ConfigError{Field: "health." + field, Err: err}
	}
	if len(fc.Origins) > 0 && len(fc.Parents) > 0 {
		return bad("parents", "origins and parents do not mix: origins make a reverse proxy, parents a forward one")
	}
	for _, list := range []struct {
		field  string
		peers  []peerSpec
		parent bool
	}{{"origins", fc.Origins, false}, {"parents", fc.Parents, true}} {
		names := make(map[string]int)
		for i := range list.peers {
			ps := &list.peers[i]
			field := list.field + "[" + strconv.Itoa(i) + "]"
			if err := ps.validate(list.parent); err != nil {
				return bad(field+"."+err.field, "%v", err.err)
			}
			if j, dup := names[ps.Name]; dup {
				return bad(field+".name", "%q is also the name of %s[%d]", ps.Name, list.field, j)
			}
			names[ps.Name] = i
		}
	}
	return nil
}

// checkListenAddr checks the form of an address to listen on (-listen,
// -admin) before anything listens.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, e.g. 127.0.0.1:9090: %v", err)
	}
	// A service name ("http") is left to net.Listen.
	if _, err := strconv.ParseUint(port, 10, 16); errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("want host:port, e.g. 127.0.0.1:9090: port %q out of range", port)
	}
	return nil
}

// sameListenAddr reports whether two listen addresses name the same
// socket: the same port (not 0, which picks one) on the same host, as
// written or as IP addresses spelled differently.
func sameListenAddr(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	if ah == bh {
		return true
	}
	ai, err1 := netip.ParseAddr(ah)
	bi, err2 := netip.ParseAddr(bh)
	return err1 == nil && err2 == nil && ai.Unmap() == bi.Unmap()
}

// checkHealth checks the health settings, the file's or the flags'; field
// is the file's name of the offending one (path, host, status, max_fails).
func checkHealth(path, host string, status, maxFails int) (field string, err error) {
	ctl := func(r rune) bool { return r <= ' ' || r == 0x7f }
	if path != "" && (path[0] != '/' || strings.ContainsFunc(path, ctl)) {
		return "path", fmt.Errorf("want a path such as \"/healthz\", got %q", path)
	}
	if strings.ContainsFunc(host, ctl) {
		return "host", fmt.Errorf("want a host name, got %q", host)
	}
	if status != 0 && (status < 100 || status > 599) {
		return "status", fmt.Errorf("want 0 (any 2xx or 3xx) or 100 to 599, got %d", status)
	}
	if maxFails < -1 || maxFails == 0 {
		// 0 is not the engine's default here: nginx's max_fails=0 turns
		// the accounting off, which is -1 here.
		return "max_fails", fmt.Errorf("want -1 (off) or 1 or more, got %d", maxFails)
	}
	return "", nil
}

type peerError struct {
	field string
	err   error
}

// maxPeerWeight is the highest weight a peer may have, in a URL option or
// the config file: the engine's bound.
const maxPeerWeight = engine.MaxWeight

// maxPipeline bounds a peer's pipeline option: past a few requests per
// connection a deeper pipeline saves nothing more, and a slow response
// holds up every request behind it.
const maxPipeline = 64

// validate checks a peer and fills in its defaults (Name, Weight).
func (ps *peerSpec) validate(parent bool) *peerError {
	if ps.URL == "" {
		return &peerError{"url", errors.New("missing")}
	}
	u, err := url.Parse(ps.URL)
	if err != nil {
		return &peerError{"url", fmt.Errorf("%q: cannot parse", redactURL(ps.URL))}
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return &peerError{"url", fmt.Errorf("%q: want http:// or https://", redactURL(ps.URL))}
	}
	if u.Hostname() == "" {
		return &peerError{"url", fmt.Errorf("%q: no host", u.Redacted())}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return &peerError{"url", fmt.Errorf("%q: want only scheme, host and port", u.Redacted())}
	}
	if !validPort(hostPortScheme(u.Host, u.Scheme)) {
		return &peerError{"url", fmt.Errorf("%q: want a port from 1 to 65535", u.Redacted())}
	}
	if ps.Weight < 0 || ps.Weight > maxPeerWeight {
		return &peerError{"weight", fmt.Errorf("want 1 to %d (0 or absent for 1), got %d", maxPeerWeight, ps.Weight)}
	}
	if ps.Weight == 0 {
		ps.Weight = 1
	}
	if ps.SNI != "" && u.Scheme != "https" {
		return &peerError{"sni", errors.New("only for https:// peers")}
	}
	if ps.MaxConns < 0 {
		return &peerError{"max_conns", fmt.Errorf("want 0 (no cap) or more, got %d", ps.MaxConns)}
	}
	if ps.Pipeline < 0 || ps.Pipeline > maxPipeline {
		return &peerError{"pipeline", fmt.Errorf("want 0 to %d, got %d", maxPipeline, ps.Pipeline)}
	}
	if ps.Pipeline > 1 && u.Scheme != "http" {
		return &peerError{"pipeline", errors.New("only for http:// peers")}
	}
	if ps.PendingTimeout != nil && *ps.PendingTimeout == 0 {
		// The engine would take 0 for its default.
		return &peerError{"pending_timeout", errors.New("want a duration above 0 (leave it out for the default)")}
	}
	if ps.MaxPending < 0 {
		return &peerError{"max_pending", fmt.Errorf("want 0 (the default) or more, got %d", ps.MaxPending)}
	}
	if ps.Name == "" {
		ps.Name = hostPortScheme(u.Host, u.Scheme)
	}
	return nil
}

// flagURL is the peer's URL as the -origin or -parent flag takes it: with
// the options that withPeers reads from the URL.
func (ps *peerSpec) flagURL() string {
	if ps.Preemptive == nil {
		return ps.URL
	}
	return strings.TrimSuffix(ps.URL, "?") + "?preemptive=" + strconv.FormatBool(*ps.Preemptive)
}

// peerHostPort is the host:port a peer URL names.
func peerHostPort(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	return hostPortScheme(u.Host, u.Scheme), nil
}

// cliExtras are the flags for the config file, the admin server and the
// engine's timeouts.
type cliExtras struct {
	config         string
	admin          string
	connectTimeout time.Duration
	tlsHandshake   time.Duration
	idleTimeout    time.Duration
	headerTimeout  time.Duration
	goNetIO        bool
	strictResend   bool
	connectPorts   string
	tunnelIdle     time.Duration
	caFile         string
	insecure       bool
	clientCert     string
	clientKey      string
	clientAuth     string
	maxRequests    int
	maxLifetime    time.Duration
	shutdown       time.Duration
	viaName        string
}

func (x *cliExtras) register(fs *flag.FlagSet) {
	fs.StringVar(&x.config, "config", "", "JSON config `file` with every flag plus per-peer options (docs/demo.md);\nflags given on the command line override it, e.g. -config /etc/serverside.json")
	fs.StringVar(&x.admin, "admin", "", "`address` of the admin HTTP server (/metrics, /status, /debug/pprof/); off when empty,\ne.g. -admin 127.0.0.1:9090")
	fs.StringVar(&x.clientAuth, "client-auth", clientAuthNone, "what happens to the client's Proxy-Authorization (`mode`): none (stripped) or pass\n(sent to a -parent without credentials of its own: the client logs in to the parent,\nNTLM included), e.g. -client-auth pass")
	fs.DurationVar(&x.connectTimeout, "connect-timeout", engine.DefaultConnectTimeout, "bound on dialing an upstream, e.g. -connect-timeout 3s")
	fs.DurationVar(&x.tlsHandshake, "tls-handshake-timeout", engine.DefaultTLSHandshakeTimeout, "bound on the TLS handshake with an https origin or https:// target (after the dial),\ne.g. -tls-handshake-timeout 5s")
	fs.DurationVar(&x.idleTimeout, "idle-timeout", engine.DefaultIdleTimeout, "how long an idle upstream connection is kept for reuse, e.g. -idle-timeout 90s")
	fs.BoolVar(&x.goNetIO, "upstream-gonet", false, "make plain-TCP upstream connections with Go's net package and runtime poller instead of netpoll\n(engine Config.GoNetIO), e.g. -upstream-gonet")
	fs.BoolVar(&x.strictResend, "strict-resend", false, "never send a request that is not idempotent (POST, PATCH, without an Idempotency-Key field) again once any byte of it was written, even\nwhen the upstream closed the kept-alive connection before any byte reached it (engine Config.StrictResend),\ne.g. -strict-resend")
	fs.DurationVar(&x.headerTimeout, "response-header-timeout", engine.DefaultResponseHeaderTimeout, "bound on waiting for an upstream's response head (and each wait for body bytes),\ne.g. -response-header-timeout 30s")
	fs.StringVar(&x.connectPorts, "connect-ports", "443", "`ports` CONNECT may reach (forward mode only), comma-separated, or \"any\";\nothers are answered 403, e.g. -connect-ports 443,8443")
	fs.DurationVar(&x.shutdown, "shutdown-timeout", DefaultShutdownTimeout, "on SIGTERM or SIGINT, how long requests and tunnels in flight may run before they are cut\n(0: at once), e.g. -shutdown-timeout 30s")
	fs.DurationVar(&x.tunnelIdle, "tunnel-idle-timeout", DefaultTunnelIdleTimeout, "end a CONNECT tunnel or protocol switch that moved no byte either way for this long;\n0 never does (long-lived SSH or database sessions), e.g. -tunnel-idle-timeout 1m")
	fs.StringVar(&x.caFile, "ca-file", "", "PEM `file` of the CAs that https origins, https parents and https:// targets are verified against\n(default: the system roots), e.g. -ca-file /etc/ssl/internal-ca.pem")
	fs.BoolVar(&x.insecure, "insecure", false, "do not verify the certificates of https origins, https parents and https:// targets (DANGEROUS: testing only),\ne.g. -insecure")
	fs.StringVar(&x.clientCert, "client-cert", "", "PEM `file` of the client certificate offered to https origins and parents (mTLS); needs -client-key,\ne.g. -client-cert /etc/serverside/client.pem -client-key /etc/serverside/client.key")
	fs.StringVar(&x.clientKey, "client-key", "", "PEM `file` of the key of -client-cert, e.g. -client-key /etc/serverside/client.key")
	fs.IntVar(&x.maxRequests, "upstream-max-requests", 0, "close an upstream connection after this many requests (0: no limit; below an origin's own\nlimit, it saves the origin the close), e.g. -upstream-max-requests 1000")
	fs.StringVar(&x.viaName, "via-name", "", "`name` the proxy gives itself in the Via it adds (\"1.1 NAME (serverside)\"), a host[:port] or a token,\n"+
		"by which it answers 508 to a request that came round back to it (a -parent loop);\n"+
		"default the host's name and the listening port, e.g. -via-name proxy1.example.com:3128")
	fs.DurationVar(&x.maxLifetime, "upstream-max-lifetime", 0, "close an upstream connection this long after it was opened, once idle (0: no limit),\nso that traffic reaches new instances behind an address, e.g. -upstream-max-lifetime 10m")
}

// tlsSettings reads the TLS files named by the flags.
func (x *cliExtras) tlsSettings() (tlsSettings, error) {
	var ts tlsSettings
	ts.insecure = x.insecure
	if x.caFile != "" {
		pem, err := os.ReadFile(x.caFile)
		if err != nil {
			return ts, fmt.Errorf("-ca-file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return ts, fmt.Errorf("-ca-file %s: no PEM certificate", x.caFile)
		}
		ts.roots = pem
	}
	if (x.clientCert == "") != (x.clientKey == "") {
		return ts, errors.New("-client-cert and -client-key go together")
	}
	if x.clientCert != "" {
		c, err := tls.LoadX509KeyPair(x.clientCert, x.clientKey)
		if err != nil {
			return ts, fmt.Errorf("-client-cert: %w", err)
		}
		ts.cert = &c
	}
	return ts, nil
}

// engineConfig sets the timeouts of cfg.
func (x *cliExtras) engineConfig(cfg engine.Config) engine.Config {
	cfg.ConnectTimeout = x.connectTimeout
	cfg.TLSHandshakeTimeout = x.tlsHandshake
	cfg.IdleTimeout = x.idleTimeout
	cfg.ResponseHeaderTimeout = x.headerTimeout
	cfg.GoNetIO = x.goNetIO
	cfg.StrictResend = x.strictResend
	cfg.MaxConnRequests = x.maxRequests
	cfg.MaxConnLifetime = x.maxLifetime
	return cfg
}

// apply loads -config, when given, and sets through fs every flag that the
// command line did not set, so the flag variables hold the merged result.
// A flag the FlagSet does not have leaves its value in the returned
// config only. Peers given on the command line (-origin or -parent)
// replace the file's, both lists; the returned config then lists the
// command line's peers.
func (x *cliExtras) apply(fs *flag.FlagSet) (*fileConfig, error) {
	if x.config == "" {
		return &fileConfig{}, nil
	}
	fc, err := loadConfig(x.config)
	if err != nil {
		return nil, err
	}
	onCmdLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })
	set := func(name, field, value string) error {
		if onCmdLine[name] || fs.Lookup(name) == nil {
			return nil
		}
		if err := fs.Set(name, value); err != nil {
			return &ConfigError{File: x.config, Field: field, Err: err}
		}
		return nil
	}
	var errs []error
	if fc.Listen != "" {
		errs = append(errs, set("listen", "listen", fc.Listen))
	}
	if fc.Admin != "" {
		errs = append(errs, set("admin", "admin", fc.Admin))
	}
	if fc.Shards != nil {
		errs = append(errs, set("shards", "shards", strconv.Itoa(*fc.Shards)))
	}
	if fc.AccessLog != nil {
		errs = append(errs, set("access-log", "access_log", strconv.FormatBool(*fc.AccessLog)))
	}
	if fc.LB != "" {
		errs = append(errs, set("lb", "lb", fc.LB))
	}
	if fc.ClientAuth != "" {
		errs = append(errs, set("client-auth", "client_auth", fc.ClientAuth))
	}
	for _, f := range []struct{ flag, field, v string }{
		{"connect-ports", "connect_ports", fc.ConnectPorts},
		{"ca-file", "ca_file", fc.CAFile},
		{"client-cert", "client_cert", fc.ClientCert},
		{"client-key", "client_key", fc.ClientKey},
		{"via-name", "via_name", fc.ViaName},
	} {
		if f.v != "" {
			errs = append(errs, set(f.flag, f.field, f.v))
		}
	}
	if fc.Insecure != nil {
		errs = append(errs, set("insecure", "insecure", strconv.FormatBool(*fc.Insecure)))
	}
	if fc.UpstreamMaxRequests != nil {
		errs = append(errs, set("upstream-max-requests", "upstream_max_requests", strconv.Itoa(*fc.UpstreamMaxRequests)))
	}
	if fc.UpstreamGoNet != nil {
		errs = append(errs, set("upstream-gonet", "upstream_gonet", strconv.FormatBool(*fc.UpstreamGoNet)))
	}
	if fc.StrictResend != nil {
		errs = append(errs, set("strict-resend", "strict_resend", strconv.FormatBool(*fc.StrictResend)))
	}
	if fc.ClientParkAfter != nil {
		errs = append(errs, set("client-park-after", "client_park_after", time.Duration(*fc.ClientParkAfter).String()))
	}
	if fc.UpstreamMaxLifetime != 0 {
		errs = append(errs, set("upstream-max-lifetime", "upstream_max_lifetime", time.Duration(fc.UpstreamMaxLifetime).String()))
	}
	for _, t := range []struct {
		flag, field string
		d           *duration
	}{
		{"connect-timeout", "timeouts.connect", fc.Timeouts.Connect},
		{"idle-timeout", "timeouts.idle", fc.Timeouts.Idle},
		{"response-header-timeout", "timeouts.response_header", fc.Timeouts.ResponseHeader},
		{"tunnel-idle-timeout", "timeouts.tunnel_idle", fc.Timeouts.TunnelIdle},
		{"tls-handshake-timeout", "timeouts.tls_handshake", fc.Timeouts.TLSHandshake},
		{"client-idle-timeout", "timeouts.client_idle", fc.Timeouts.ClientIdle},
		{"client-header-timeout", "timeouts.client_header", fc.Timeouts.ClientHeader},
		{"shutdown-timeout", "timeouts.shutdown", fc.Timeouts.Shutdown},
	} {
		if t.d != nil {
			errs = append(errs, set(t.flag, t.field, time.Duration(*t.d).String()))
		}
	}
	for _, h := range fc.Health.flagValues() {
		errs = append(errs, set(h.flag, h.field, h.value))
	}
	// Peers on the command line replace the file's, both lists: the
	// file's origins and a -parent would not mix.
	peersOnCmdLine := onCmdLine["origin"] || onCmdLine["parent"]
	for _, l := range []struct {
		flag, field string
		peers       *[]peerSpec
	}{{"origin", "origins", &fc.Origins}, {"parent", "parents", &fc.Parents}} {
		if peersOnCmdLine {
			*l.peers = nil
			if onCmdLine[l.flag] {
				*l.peers = cmdLinePeers(fs.Lookup(l.flag).Value)
			}
			continue
		}
		for i, ps := range *l.peers {
			errs = append(errs, set(l.flag, l.field+"["+strconv.Itoa(i)+"].url", ps.flagURL()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return fc, nil
}

// cmdLinePeers lists the peers of a repeatable URL flag with default
// options.
func cmdLinePeers(v flag.Value) []peerSpec {
	var urls []string
	switch l := v.(type) {
	case *originList:
		urls = *l
	case flag.Getter:
		if s, ok := l.Get().([]string); ok {
			urls = s
		}
	}
	if urls == nil && v.String() != "" {
		urls = strings.Split(v.String(), ",")
	}
	out := make([]peerSpec, 0, len(urls))
	for _, s := range urls {
		ps := peerSpec{URL: s}
		if ps.validate(true) != nil {
			ps.Name = redactURL(s) // the flag's own parsing reports the error
		}
		out = append(out, ps)
	}
	return out
}
