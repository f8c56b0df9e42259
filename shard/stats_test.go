package shard

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// TestCountersFailed: a failure is counted once, in Canceled when the
// request's context ended, in CallerErrors when the caller's sink or
// request body failed, else in Errors by its phase; an error that is not
// a *conn.Error is not counted.
func TestCountersFailed(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithCancel(live)
	cancel()
	gone := fmt.Errorf("write to client: %w", syscall.EPIPE)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want func(*Counters) uint64
	}{
		{"sink", live, &conn.Error{Phase: conn.PhaseBody, Err: fmt.Errorf("%w: %w", conn.ErrSink, gone)},
			func(c *Counters) uint64 { return c.CallerErrors.Load() }},
		{"sink head", live, &conn.Error{Phase: conn.PhaseAwaitHead, Err: fmt.Errorf("%w: %w", conn.ErrSink, gone)},
			func(c *Counters) uint64 { return c.CallerErrors.Load() }},
		{"request body", live, &conn.Error{Phase: conn.PhaseWrite, Err: fmt.Errorf("%w: %w", conn.ErrRequestBody, syscall.ECONNRESET)},
			func(c *Counters) uint64 { return c.CallerErrors.Load() }},
		{"request body short", live, &conn.Error{Phase: conn.PhaseWrite, Err: fmt.Errorf("%w: 3 bytes short", conn.ErrBodyLength)},
			func(c *Counters) uint64 { return c.CallerErrors.Load() }},
		{"sink, context ended", ended, &conn.Error{Phase: conn.PhaseBody, Err: fmt.Errorf("%w: %w", conn.ErrSink, gone)},
			func(c *Counters) uint64 { return c.Canceled.Load() }},
		{"upstream reset", live, &conn.Error{Phase: conn.PhaseBody, Err: syscall.ECONNRESET},
			func(c *Counters) uint64 { return c.Errors[conn.PhaseBody].Load() }},
		{"write failed", live, &conn.Error{Phase: conn.PhaseWrite, Err: syscall.EPIPE},
			func(c *Counters) uint64 { return c.Errors[conn.PhaseWrite].Load() }},
		{"not a conn.Error", live, errors.New("other"), nil},
	} {
		var c Counters
		c.Failed(tc.ctx, tc.err)
		total := c.Canceled.Load() + c.CallerErrors.Load()
		for i := range c.Errors {
			total += c.Errors[i].Load()
		}
		switch {
		case tc.want == nil && total != 0:
			t.Errorf("%s: counted %d times, want none", tc.name, total)
		case tc.want != nil && (tc.want(&c) != 1 || total != 1):
			t.Errorf("%s: counted %d times, %d in the right counter; want once there", tc.name, total, tc.want(&c))
		}
	}
}

// TestCountersAddEveryField: add, which retires an upstream's counts into
// Retired, carries every counter.
func TestCountersAddEveryField(t *testing.T) {
	var src, dst Counters
	srcs, dsts := counterFields(t, &src), counterFields(t, &dst)
	for i, c := range srcs {
		c.Store(uint64(i + 1))
	}
	dst.add(&src)
	dst.add(&src)
	for i, c := range dsts {
		if got, want := c.Load(), 2*uint64(i+1); got != want {
			t.Errorf("counter %d: %d after adding %d twice, want %d", i, got, i+1, want)
		}
	}
}

// counterFields lists c's counters, in field order.
func counterFields(t *testing.T, c *Counters) []*atomic.Uint64 {
	var out []*atomic.Uint64
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i).Addr().Interface().(type) {
		case *atomic.Uint64:
			out = append(out, f)
		case *[conn.NumPhases]atomic.Uint64:
			for j := range f {
				out = append(out, &f[j])
			}
		default:
			t.Fatalf("field %s of type %s: extend counterFields", v.Type().Field(i).Name, v.Field(i).Type())
		}
	}
	return out
}

// TestRegistryRetires: past registryFloor entries, a sweep at each
// doubling drops the entries not used since the sweep before whose
// upstream is not Live, and adds their counts to Retired, so that the sum
// over Range and Retired is every count made. Entries in use, or Live,
// stay.
func TestRegistryRetires(t *testing.T) {
	key := func(i int) poolset.Key { return poolset.Key{Addr: "10.0.0.1:" + strconv.Itoa(i)} }
	live := key(1)
	var r Registry
	r.Live = func(k poolset.Key) bool { return k == live }
	count := func(i int) { r.For(key(i)).Requests.Add(1) }

	// Up to the floor: the first sweep finds every entry used since the
	// start, and retires none.
	for i := range registryFloor {
		count(i)
	}
	if n := r.entries.Load(); n != registryFloor || r.Retired() != nil {
		t.Fatalf("%d entries, retired %v; want %d and none", n, r.Retired(), registryFloor)
	}
	// Key 2 is used again after that sweep; then the entries double.
	count(2)
	for i := registryFloor; i < 2*registryFloor; i++ {
		count(i)
	}
	// The second sweep retired the first registryFloor keys but 1 (Live),
	// 2 (used since the first sweep) and the last one, whose creation ran
	// the first sweep and which was used after it.
	if n := r.entries.Load(); n != registryFloor+3 {
		t.Fatalf("%d entries after the second sweep, want %d", n, registryFloor+3)
	}
	ret := r.Retired()
	if ret == nil || ret.Requests.Load() != registryFloor-3 {
		t.Fatalf("retired %v, want %d requests", ret, registryFloor-3)
	}
	var sum uint64
	seen := map[poolset.Key]uint64{}
	r.Range(func(k poolset.Key, c *Counters) {
		seen[k] = c.Requests.Load()
		sum += c.Requests.Load()
	})
	if has(seen, key(0)) || seen[live] != 1 || seen[key(2)] != 2 || seen[key(registryFloor-1)] != 1 {
		t.Fatalf("key 0 %v, live %d, key 2 %d, key %d %d: want gone, 1, 2 and 1", has(seen, key(0)), seen[live], seen[key(2)],
			registryFloor-1, seen[key(registryFloor-1)])
	}
	if total := sum + ret.Requests.Load(); total != 2*registryFloor+1 {
		t.Fatalf("requests counted %d, want %d", total, 2*registryFloor+1)
	}
	// A retired upstream that comes back starts a new entry.
	count(0)
	if c := r.For(key(0)); c.Requests.Load() != 1 {
		t.Fatalf("key 0 back: %d requests, want 1", c.Requests.Load())
	}
}

func has(m map[poolset.Key]uint64, k poolset.Key) bool { _, in := m[k]; return in }

// TestRegistryWithoutLive never retires: a Registry that cannot tell which
// upstreams the pool still has keeps them all.
func TestRegistryWithoutLive(t *testing.T) {
	var r Registry
	for i := range 3 * registryFloor {
		r.For(poolset.Key{Addr: "10.0.0.2:" + strconv.Itoa(i)}).Requests.Add(1)
	}
	if n := r.entries.Load(); n != 3*registryFloor || r.Retired() != nil {
		t.Fatalf("%d entries, retired %v; want %d and none", n, r.Retired(), 3*registryFloor)
	}
}
