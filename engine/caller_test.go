package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// callerSink is a sink whose OnHead and OnBody run the given functions
// (nil: accept).
type callerSink struct {
	head func() error
	body func() error
}

func (s *callerSink) OnHead(*parser.Response) error {
	if s.head != nil {
		return s.head()
	}
	return nil
}

func (s *callerSink) OnBody([]byte) error {
	if s.body != nil {
		return s.body()
	}
	return nil
}

func (s *callerSink) OnDone(error) {}

// errClientGone is what a proxy's sink returns once its client is gone.
var errClientGone = fmt.Errorf("write to client: %w", syscall.EPIPE)

// callerCase is a request that fails on the caller's side.
type callerCase struct {
	name         string
	method, path string
	body         func() io.Reader
	cl           int64
	sink         func(cancel context.CancelFunc) engine.Sink
	// aborting, when set, makes the sink instead, for a request with an
	// Abort (Request.Abort).
	aborting func(a *engine.Abort) engine.Sink
	want     error      // in the error's chain
	phase    conn.Phase // the error's
	canceled bool       // counted in Canceled, not CallerErrors
}

// TestCallerFailures: an exchange with a real nginx that fails on the
// caller's side (its sink refuses the response head or body, its request
// body fails to read or ends short of its ContentLength) is counted in
// CallerErrors, not in Errors, which would blame the upstream; one whose
// context the caller canceled counts in Canceled; one the caller aborted
// (Request.Abort) in CallerErrors. None of them counts
// against the peer (failures, downs, reroutes: the group's other peer is
// never tried), and the connection, with the rest of the response unread
// or the request body unsent, is closed, not pooled: the next request
// dials. On netpoll and on Go net alike, on a new connection and on a
// reused one (the shard's inline path), where the failure is not taken
// for the stale keep-alive race.
func TestCallerFailures(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{})
	// 64 MiB, far more than the socket buffers and BodyHighWater hold: the
	// response is still arriving when the caller fails.
	big := filepath.Join(ngx.Dir(), "html", "files", "big")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 64<<20); err != nil {
		t.Fatal(err)
	}
	const part = 64 << 10
	for _, tc := range []callerCase{
		{name: "sink refuses the body", method: "GET", path: "/files/big",
			sink: func(context.CancelFunc) engine.Sink {
				return &callerSink{body: func() error { return errClientGone }}
			},
			want: conn.ErrSink, phase: conn.PhaseBody},
		{name: "sink refuses the head", method: "GET", path: "/files/big",
			sink: func(context.CancelFunc) engine.Sink {
				return &callerSink{head: func() error { return errClientGone }}
			},
			want: conn.ErrSink, phase: conn.PhaseAwaitHead},
		{name: "request body fails", method: "PUT", path: "/echo", cl: 1 << 20,
			body: func() io.Reader {
				return io.MultiReader(bytes.NewReader(make([]byte, part)), &errReader{fmt.Errorf("read from client: %w", syscall.ECONNRESET)})
			},
			sink: func(context.CancelFunc) engine.Sink { return &callerSink{} },
			want: conn.ErrRequestBody, phase: conn.PhaseWrite},
		{name: "request body short", method: "PUT", path: "/echo", cl: 1 << 20,
			body: func() io.Reader { return bytes.NewReader(make([]byte, part)) },
			sink: func(context.CancelFunc) engine.Sink { return &callerSink{} },
			want: conn.ErrBodyLength, phase: conn.PhaseWrite},
		{name: "aborted mid-body", method: "GET", path: "/files/big",
			aborting: func(a *engine.Abort) engine.Sink {
				return &callerSink{body: func() error { a.Abort(); return nil }}
			},
			want: engine.ErrAborted, phase: conn.PhaseBody},
		{name: "context canceled", method: "GET", path: "/files/big",
			sink: func(cancel context.CancelFunc) engine.Sink {
				return &callerSink{body: func() error { cancel(); return nil }}
			},
			want: context.Canceled, phase: conn.PhaseBody, canceled: true},
	} {
		for _, goNet := range []bool{false, true} {
			for _, reused := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/GoNetIO=%v/reused=%v", tc.name, goNet, reused), func(t *testing.T) {
					callerFailure(t, ngx, goNet, reused, tc)
				})
			}
		}
	}
}

func callerFailure(t *testing.T, ngx *bench.Nginx, goNet, reused bool, tc callerCase) {
	e := startEngine(t, engine.Config{Shards: 1, GoNetIO: goNet, Groups: map[string]engine.GroupConfig{"g": {
		// One failure would mark ngx down, and a reroute would go to
		// spare, which nothing listens on.
		Peers:  []engine.Peer{{Name: "ngx", Addr: ngx.Addr(), Weight: 1000}, {Name: "spare", Addr: "127.0.0.1:1", Weight: 1}},
		Health: engine.Health{MaxFails: 1, Backoff: time.Hour},
	}}})
	small := func() {
		t.Helper()
		req := ngxRequest(t, ngx, "GET", "/small", nil, 0)
		req.Upstream = engine.Upstream{Group: "g"}
		if resp, body, err := fetch(e, req); err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("GET /small: %v %q %v", resp, body, err)
		}
	}
	var before uint64 // requests before the failing one
	if reused {
		small()
		before = 1
	}
	req := ngxRequest(t, ngx, tc.method, tc.path, nil, tc.cl)
	req.Upstream = engine.Upstream{Group: "g"}
	if tc.body != nil {
		req.Body = tc.body()
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var sink engine.Sink
	if tc.aborting != nil {
		req.Abort = new(engine.Abort)
		sink = tc.aborting(req.Abort)
	} else {
		sink = tc.sink(cancel)
	}
	err := e.Exchange(ctx, req, sink)
	if ce := conn.AsError(err); ce == nil || !errors.Is(err, tc.want) || ce.Phase != tc.phase {
		t.Fatalf("%v, want a %s error with %v", err, tc.phase, tc.want)
	}
	s := e.Stats()[ngx.Addr()]
	var callerErrors, canceled uint64 = 1, 0
	if tc.canceled {
		callerErrors, canceled = 0, 1
	}
	if s.Requests != before+1 || len(s.Errors) != 0 || s.CallerErrors != callerErrors || s.Canceled != canceled ||
		s.Retries != 0 || s.RacesHit != 0 || s.OnReused != before {
		t.Errorf("stats: requests %d, errors %v, caller errors %d, canceled %d, retries %d, races %d, on reused %d; want %d requests, no errors, %d caller errors, %d canceled, no retry or race, %d on reused",
			s.Requests, s.Errors, s.CallerErrors, s.Canceled, s.Retries, s.RacesHit, s.OnReused, before+1, callerErrors, canceled, before)
	}
	if s.Pool.Idle != 0 || s.Pool.Busy != 0 || s.Pool.Dialed != 1 || s.Pool.Closed.Owner != 1 {
		t.Errorf("pool %+v: want the one connection closed by its owner, not pooled", s.Pool)
	}
	ps := e.PeerStats()["g"].Peers
	if p := ps[0]; p.State != engine.PeerUp || p.Picks != before+1 || p.Failures != 0 || p.Downs != 0 || p.Rerouted != 0 {
		t.Errorf("peer ngx %+v: want up, picked %d times, no failure, down or reroute", p, before+1)
	}
	if p := ps[1]; p.Picks != 0 {
		t.Errorf("peer spare %+v: want never picked", p)
	}
	small()
	if s := e.Stats()[ngx.Addr()]; s.Pool.Dialed != 2 {
		t.Errorf("the next request: %d dials in all, want 2", s.Pool.Dialed)
	}
}

// errReader fails every Read with err.
type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }
