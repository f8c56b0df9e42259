package poolset_test

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/serverside-go/serverside/poolset"
)

// warm returns a pool with n idle conns for each key.
func warm(tb testing.TB, keys []poolset.Key, n int) *pool {
	tb.Helper()
	p := poolset.New[*fakeConn](poolset.Config{})
	for _, k := range keys {
		conns := make([]*fakeConn, n)
		for i := range conns {
			if !p.TryReserve(k) {
				tb.Fatal("TryReserve")
			}
			p.Dialed(k)
			conns[i] = &fakeConn{}
		}
		for _, c := range conns {
			p.Put(k, c, poolset.PutInfo{Requests: 1})
		}
	}
	return p
}

func benchKeys(n int) []poolset.Key {
	keys := make([]poolset.Key, n)
	for i := range keys {
		keys[i] = poolset.Key{Addr: "10.0.0." + strconv.Itoa(i+1) + ":443", TLS: "sni=h" + strconv.Itoa(i) + ".example;verify=full"}
	}
	return keys
}

// TestGetPutAllocs insists that the hot path allocates nothing once warm.
func TestGetPutAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	keys := benchKeys(2)
	p := warm(t, keys, 2)
	defer p.Close()
	info := poolset.PutInfo{Requests: 1, KeepAliveHint: 5e9}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, k := range keys {
			c, ok := p.Get(k)
			if !ok {
				t.Fatal("Get missed")
			}
			p.Put(k, c, info)
		}
	})
	if allocs != 0 {
		t.Fatalf("Get+Put allocates %v times", allocs)
	}
}

func BenchmarkGetPut(b *testing.B) {
	keys := benchKeys(1)
	p := warm(b, keys, 1)
	defer p.Close()
	key, info := keys[0], poolset.PutInfo{Requests: 1}
	b.ReportAllocs()
	for b.Loop() {
		c, ok := p.Get(key)
		if !ok {
			b.Fatal("Get missed")
		}
		p.Put(key, c, info)
	}
}

func BenchmarkGetPutParallel(b *testing.B) {
	keys := benchKeys(16)
	p := warm(b, keys, 4)
	defer p.Close()
	var seq atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7
		info := poolset.PutInfo{Requests: 1}
		for pb.Next() {
			key := keys[i%len(keys)]
			i++
			c, ok := p.Get(key)
			if !ok {
				// More goroutines than warm conns on this key: dial one.
				if !p.TryReserve(key) {
					b.Fatal("TryReserve")
				}
				p.Dialed(key)
				c = &fakeConn{}
			}
			p.Put(key, c, info)
		}
	})
}
