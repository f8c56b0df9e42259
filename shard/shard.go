package shard

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// Config configures a Set. Zero fields take the documented defaults.
type Config struct {
	Shards         int           // default GOMAXPROCS
	ConnectTimeout time.Duration // default 10s
	MaxRetries     int           // stale-connection retries; default 2, negative for none
	// StrictResend keeps a non-idempotent request from being sent again
	// once any byte of it was written, even when the upstream's TCP
	// acknowledged none (conn.Error.Delivered).
	StrictResend bool
	// MaxPending bounds, per shard, the requests waiting for a connection;
	// beyond it requests fail with ErrOverloaded. Default 4096.
	MaxPending int
	// PendingTimeout bounds the wait for a connection; default 30s.
	PendingTimeout time.Duration
	// DialWorkers and ExchangeWorkers size the ants pools; defaults 256
	// and 4096.
	DialWorkers, ExchangeWorkers int
	Logger                       *slog.Logger
	// PinnedIdleTimeout ends a pinned session whose connection has been
	// idle this long; default 60s. ProbeInterval is how often idle pinned
	// connections are checked for a peer close and for that timeout;
	// default 1s.
	PinnedIdleTimeout, ProbeInterval time.Duration
	// OnPinnedClosed, when set, is called with the key of a pinned
	// session whose idle connection the upstream closed or the idle
	// timeout ended, or that EndSessions ended, so that the embedder can
	// close the client connection too. It runs on a shard goroutine and
	// must not block.
	OnPinnedClosed func(pinKey uint64)
	// OnSession, when set, is called when a pinned session starts (with
	// its connection's pool key), when its connection is gone (the key
	// then fails with ErrPinnedGone) and when Unpin forgets it, so that
	// an embedder routing requests itself (peer groups) can send a
	// session's requests to its upstream, or fail them. It runs on a
	// shard goroutine and must not block.
	OnSession func(pinKey uint64, key poolset.Key, ev SessionEvent)
	// PipelineStall is how long a connection in pipeline mode
	// (Task.Pipeline) may go without finishing a response and still take
	// more requests; default conn.DefaultStallAfter (20 ms).
	PipelineStall time.Duration
}

// SessionEvent is what happened to a pinned session (Config.OnSession).
type SessionEvent uint8

const (
	// SessionStarted: a connection was pinned to the key.
	SessionStarted SessionEvent = iota
	// SessionGone: the session's connection is gone; requests with the
	// key fail with ErrPinnedGone until Unpin.
	SessionGone
	// SessionForgotten: Unpin ended the session, or a new pin replaced
	// it; the key is unknown again.
	SessionForgotten
)

func (c Config) normalized() Config {
	if c.Shards <= 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 2
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4096
	}
	if c.PendingTimeout <= 0 {
		c.PendingTimeout = 30 * time.Second
	}
	if c.DialWorkers <= 0 {
		c.DialWorkers = 256
	}
	if c.ExchangeWorkers <= 0 {
		c.ExchangeWorkers = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PinnedIdleTimeout <= 0 {
		c.PinnedIdleTimeout = 60 * time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = time.Second
	}
	return c
}

// Set is the engine's shards with what they share: the pool, the worker
// pools and the counters.
type Set struct {
	cfg       Config
	pool      *poolset.Pool[*conn.Conn]
	stats     *Registry
	dials     *ants.Pool
	exchanges *ants.Pool
	shards    []*Shard
	rr        atomic.Uint64
	wg        sync.WaitGroup
	// overflow counts dials and jobs running on goroutines of their own
	// because the dial pool was full (Shard.dial, Set.Go).
	overflow sync.WaitGroup
	// goMu orders Set.Go's overflow.Add before Close's overflow.Wait.
	goMu   sync.Mutex
	closed atomic.Bool
	pipes  pipes // connections in pipeline mode (pipeline.go)
}

// New starts cfg.Shards shards over pool; stats receives the counters.
func New(cfg Config, pool *poolset.Pool[*conn.Conn], stats *Registry) (*Set, error) {
	cfg = cfg.normalized()
	dials, err := ants.NewPool(cfg.DialWorkers, ants.WithNonblocking(true))
	if err != nil {
		return nil, fmt.Errorf("shard: dial pool: %w", err)
	}
	exchanges, err := ants.NewPool(cfg.ExchangeWorkers, ants.WithNonblocking(true))
	if err != nil {
		dials.Release()
		return nil, fmt.Errorf("shard: exchange pool: %w", err)
	}
	s := &Set{cfg: cfg, pool: pool, stats: stats, dials: dials, exchanges: exchanges}
	for i := 0; i < cfg.Shards; i++ {
		sh := &Shard{set: s, id: i, wake: make(chan struct{}, 1), quit: make(chan struct{}),
			pinned: make(map[uint64]*session)}
		s.shards = append(s.shards, sh)
		s.wg.Add(1)
		go sh.run()
	}
	return s, nil
}

// Submit routes t to a shard: requests of a pinned session always to the
// same one (pin key affinity), others round-robin. t.Done reports the
// outcome; Submit on a closed Set calls it at once with ErrClosed.
func (s *Set) Submit(t *Task) {
	if s.closed.Load() {
		t.Done(ErrClosed)
		return
	}
	t.ctr = s.stats.For(t.Key)
	s.shardFor(t.PinKey).post(event{kind: evSubmit, t: t})
}

func (s *Set) shardFor(pinKey uint64) *Shard {
	if pinKey != 0 {
		return s.shards[pinKey%uint64(len(s.shards))]
	}
	return s.shards[s.rr.Add(1)%uint64(len(s.shards))]
}

// Go runs fn on the dial pool, for blocking work outside a request's
// flow (opening a tunnel: the dial, a TLS handshake with the parent, the
// CONNECT exchange). When the pool is full, fn runs on a goroutine of its
// own, as a request's dial does (Shard.dial): the pool bounds the
// goroutines kept, while the number of jobs is bounded by the callers
// (the upstream's cap, when set, the client connections otherwise) and
// fn's own deadlines. Failing for want of a worker turned a burst
// of CONNECTs to a slow parent into 503s. Go fails with ErrClosed after
// Close.
func (s *Set) Go(fn func()) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.dials.Submit(fn) == nil {
		return nil
	}
	s.goMu.Lock()
	defer s.goMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	s.overflow.Add(1)
	go func() {
		defer s.overflow.Done()
		fn()
	}()
	return nil
}

// Shards returns the shards.
func (s *Set) Shards() []*Shard { return s.shards }

// ID is the shard's index in its Set.
func (s *Shard) ID() int { return s.id }

// Unpin ends the pinned session pinKey, closing its connection, and
// forgets the key: a session whose connection is gone keeps failing its
// requests with ErrPinnedGone until Unpin.
func (s *Set) Unpin(pinKey uint64) {
	if pinKey != 0 && !s.closed.Load() {
		s.shardFor(pinKey).post(event{kind: evUnpin, pinKey: pinKey})
	}
}

// EndSessions ends every pinned session whose connection pools under key
// (its upstream is draining or left): an idle one at once, a busy one
// once its exchange completes, each closing its connection and calling
// OnPinnedClosed; so does a session that an exchange in flight starts
// afterwards on key, which the pool is draining. Their keys fail with
// ErrPinnedGone until Unpin, as when the upstream closes a pinned
// connection.
func (s *Set) EndSessions(key poolset.Key) {
	if s.closed.Load() {
		return
	}
	for _, sh := range s.shards {
		sh.post(event{kind: evEndKey, key: &key})
	}
}

// PinnedState reports the state of the connection of session pinKey
// (Closed for a session whose connection is gone), and false when the key
// is unknown. It waits for the owning shard.
func (s *Set) PinnedState(ctx context.Context, pinKey uint64) (conn.State, bool) {
	if pinKey == 0 || s.closed.Load() {
		return 0, false
	}
	reply := make(chan lookup, 1)
	s.shardFor(pinKey).post(event{kind: evLookup, pinKey: pinKey, reply: reply})
	select {
	case r := <-reply:
		return r.state, r.ok
	case <-ctx.Done():
		return 0, false
	}
}

// Close stops the shards after closing their pinned sessions and waits for
// the worker pools (up to timeout). Callers first let in-flight requests
// finish: Close does not fail them.
func (s *Set) Close(timeout time.Duration) {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	for _, sh := range s.shards {
		close(sh.quit)
	}
	s.wg.Wait()
	// A Set.Go that saw the Set open has added to overflow by now.
	s.goMu.Lock()
	s.goMu.Unlock()
	_ = s.dials.ReleaseTimeout(timeout)
	_ = s.exchanges.ReleaseTimeout(timeout)
	done := make(chan struct{})
	go func() {
		s.overflow.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}
