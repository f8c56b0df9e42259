package shard

import (
	"strconv"
	"testing"

	"github.com/serverside-go/serverside/poolset"
)

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
