package engine

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/serverside-go/serverside/conn"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultIdleTimeout           = 60 * time.Second
	DefaultConnectTimeout        = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultExpectContinueTimeout = time.Second
	DefaultMaxIdlePerUpstream    = 1024
	DefaultMaxIdle               = 8192
	DefaultMaxPending            = 4096
	DefaultPendingTimeout        = 30 * time.Second
	DefaultMaxRetries            = 2
	DefaultBodyHighWater         = conn.DefaultBodyHighWater
	DefaultTLSHandshakeTimeout   = conn.DefaultTLSHandshakeTimeout
)

// Config configures an Engine. The zero value of every field selects the
// documented default; a negative count or duration is refused by New
// (ErrBadConfig) unless its field gives it a meaning. Config is read once,
// by New.
type Config struct {
	// Shards is the number of event-loop shards, at most MaxShards.
	// Default GOMAXPROCS.
	Shards int
	// IdleTimeout is how long an idle pooled connection is kept. Default
	// 60s. An upstream's shorter "Keep-Alive: timeout=N" is honoured.
	// Both count from when the last byte of the connection's last response
	// was read, as the upstream's own idle timer does from when it sent
	// it, not from when the sink let the connection go back to the pool.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a dial, and the CONNECT exchange with a parent
	// proxy. Default 10s.
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds a TLS handshake with an upstream.
	// Default 10s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written, and each wait for body bytes. Default 60s.
	ResponseHeaderTimeout time.Duration
	// ExpectContinueTimeout is how long a request with "Expect:
	// 100-continue" waits for "100 Continue" before sending its body
	// anyway. Default 1s.
	ExpectContinueTimeout time.Duration
	// MaxIdlePerUpstream caps the idle connections kept per upstream
	// (default 1024); MaxIdle caps them all together (default 8192).
	// A proxy's upstream connections are as many as its concurrent
	// requests: a low cap closes connections that the next burst dials
	// again (an idle netpoll connection costs a few KiB).
	// Negative keeps none.
	MaxIdlePerUpstream, MaxIdle int
	// MaxConnsPerUpstream caps the connections of one upstream (dialing,
	// busy, idle and pinned); requests over it wait. Default 0: no cap.
	MaxConnsPerUpstream int
	// MaxConnLifetime retires a pooled connection this long after it was
	// dialed (closed when it comes back from a request or while idle, with
	// reason "lifetime"), so that traffic moves to new upstream instances
	// in time. MaxConnRequests retires one after that many requests
	// (reason "max_requests"), below an origin's own limit saving it the
	// close. Default 0 for both: no limit. Pinned connections keep their
	// session.
	MaxConnLifetime time.Duration
	MaxConnRequests int
	// MaxPending bounds, per shard, the requests waiting for a connection
	// (default 4096); PendingTimeout bounds each wait (default 30s).
	MaxPending     int
	PendingTimeout time.Duration
	// MaxRetries bounds the stale-connection retries of one request, and
	// the resends to another peer of a group's request whose new
	// connection the peer dropped after it was written, or that an
	// origin of the group did not answer within ResponseHeaderTimeout
	// (each resend waits that long again). Default 2; negative disables
	// them.
	MaxRetries int
	// StrictResend keeps a request that is not idempotent (POST, say,
	// without an Idempotency-Key field) from being sent again once any
	// byte of it was written. By default
	// one whose bytes the upstream's TCP never acknowledged is sent again
	// after the stale keep-alive race, as an idempotent one is, when its
	// body was not read or can be replayed (GetBody): the upstream had
	// closed the connection and cannot have received it (RFC 9110
	// §9.2.2). Connections straight to the upstream, plain or TLS, are
	// told apart that way; through a tunnel (an origin behind a parent) a
	// written request counts as received.
	StrictResend bool
	// PipelineStall is how long a connection pipelining requests
	// (Peer.Pipeline, Upstream.Pipeline) may go without finishing a
	// response and still take more: a slow response holds up the requests
	// behind it, so after this long new requests go to other connections.
	// Default 20ms.
	PipelineStall time.Duration
	// BodyHighWater is how many response bytes netpoll may buffer before
	// a connection moves to blocking I/O for the rest of a body. Default
	// 1 MiB.
	BodyHighWater int
	// GoNetIO makes plain-TCP upstream connections with Go's net package,
	// served by the Go runtime's own poller, instead of netpoll (the
	// default). A caller blocked in Exchange then reads its response with
	// no hand-off from netpoll's poller goroutine, which costs less CPU per
	// request at low concurrency (docs/benchmarks.md), and a slow sink
	// gets TCP backpressure without a detach; netpoll's one epoll_wait
	// for many connections is the better fit under high concurrency.
	// Idle connections are checked with a non-blocking peek, as TLS ones
	// are.
	GoNetIO bool
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
	// Groups are the peer groups requests may name (Upstream.Group),
	// keyed by name; more can be added at runtime with SetGroup.
	Groups map[string]GroupConfig

	// Auth, when set, returns how requests to an upstream authenticate
	// (nil: no credentials); Request.Auth overrides it per request. It is
	// called for every request and must be safe for concurrent use.
	Auth func(Upstream) *Auth
	// OnPinnedClosed, when set, is called with the pin key of a pinned
	// session whose idle connection the upstream closed or whose
	// PinnedIdleTimeout passed: the embedder closes the client connection
	// of that session, as browsers expect. It runs on a shard goroutine
	// and must not block. Later requests with the key fail with
	// ErrPinnedGone until Unpin.
	OnPinnedClosed func(pinKey uint64)
	// PinnedIdleTimeout ends a pinned session idle this long. Default
	// IdleTimeout.
	PinnedIdleTimeout time.Duration
}

// validate refuses the values that have no meaning: negative counts and
// durations, but for the fields whose documentation gives negative one.
func (c Config) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Shards", int64(c.Shards)},
		{"IdleTimeout", int64(c.IdleTimeout)},
		{"ConnectTimeout", int64(c.ConnectTimeout)},
		{"TLSHandshakeTimeout", int64(c.TLSHandshakeTimeout)},
		{"ResponseHeaderTimeout", int64(c.ResponseHeaderTimeout)},
		{"ExpectContinueTimeout", int64(c.ExpectContinueTimeout)},
		{"MaxConnsPerUpstream", int64(c.MaxConnsPerUpstream)},
		{"MaxConnLifetime", int64(c.MaxConnLifetime)},
		{"MaxConnRequests", int64(c.MaxConnRequests)},
		{"MaxPending", int64(c.MaxPending)},
		{"PendingTimeout", int64(c.PendingTimeout)},
		{"BodyHighWater", int64(c.BodyHighWater)},
		{"PinnedIdleTimeout", int64(c.PinnedIdleTimeout)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s is negative", ErrBadConfig, f.name)
		}
	}
	if c.Shards > MaxShards {
		return fmt.Errorf("%w: Shards %d is over MaxShards (%d)", ErrBadConfig, c.Shards, MaxShards)
	}
	return nil
}

// MaxShards bounds Config.Shards. A shard is a goroutine with its own
// state, and more of them than processors gain nothing; the bound keeps a
// mistyped count from exhausting memory before the engine starts.
const MaxShards = 1024

func (c Config) normalized() Config {
	if c.Shards <= 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.TLSHandshakeTimeout <= 0 {
		c.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if c.ExpectContinueTimeout <= 0 {
		c.ExpectContinueTimeout = DefaultExpectContinueTimeout
	}
	if c.MaxIdlePerUpstream == 0 {
		c.MaxIdlePerUpstream = DefaultMaxIdlePerUpstream
	}
	if c.MaxIdle == 0 {
		c.MaxIdle = DefaultMaxIdle
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.PendingTimeout <= 0 {
		c.PendingTimeout = DefaultPendingTimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.BodyHighWater <= 0 {
		c.BodyHighWater = DefaultBodyHighWater
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PinnedIdleTimeout <= 0 {
		c.PinnedIdleTimeout = c.IdleTimeout
	}
	return c
}
