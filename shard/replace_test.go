package shard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// TestFreshRetryGrantedWhileDraining: a retry after the stale race waits
// under a full cap and is handed a reused connection on its return, but
// the key began draining before the shard took the grant. The retry must
// not dial the draining upstream in the reused connection's place (a
// draining key takes no new connection, as TryReserve says): it fails
// with ErrDraining, a failure before anything was sent that its Reroute
// may take elsewhere, and the drain completes.
func TestFreshRetryGrantedWhileDraining(t *testing.T) {
	checkLeaks(t)
	o := keepAliveOrigin(t)
	pool := poolset.New[*conn.Conn](poolset.Config{MaxConnsPerKey: 1})
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		set.Close(5 * time.Second)
		pool.Close()
	}()
	key := poolset.Key{Addr: o.Addr()}

	// The cap's one connection, held busy outside the shard.
	if !pool.TryReserve(key) {
		t.Fatal("TryReserve")
	}
	c, err := conn.Dial(context.Background(), o.Addr(), 5*time.Second)
	if err != nil {
		pool.DialFailed(key)
		t.Fatal(err)
	}
	pool.Dialed(key)
	// It carries a request first: the retry is handed a reused one.
	first := task(t, context.Background(), o.Addr(), nil)
	if _, err := c.RoundTrip(context.Background(), &first.Exchange, nopSink{}); err != nil {
		t.Fatal(err)
	}

	// The retry waits for it.
	done := make(chan error, 1)
	retry := task(t, context.Background(), o.Addr(), done)
	retry.fresh = true
	set.Submit(retry)
	deadline := time.Now().Add(10 * time.Second)
	for pool.Stats(key).Waiting != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the retry did not wait")
		}
		time.Sleep(time.Millisecond)
	}

	// Hold the shard goroutine (a task's Done runs on it) while the
	// connection is handed to the retry and the key begins to drain.
	entered, release := make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	holder := task(t, ctx, "127.0.0.1:1", nil)
	holder.Done = func(error) {
		close(entered)
		<-release
	}
	set.Submit(holder)
	<-entered
	if err := c.SetState(conn.Idle); err != nil {
		t.Fatal(err)
	}
	pool.Put(key, c, poolset.PutInfo{Requests: c.Requests(), Born: c.Born()})
	pool.Drain(key)
	close(release)

	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the retry did not end")
	}
	if !errors.Is(err, poolset.ErrDraining) {
		t.Fatalf("retry: %v, want ErrDraining", err)
	}
	if o.Accepted() != 1 {
		t.Fatalf("origin accepted %d connections, want 1: a draining upstream was dialed", o.Accepted())
	}
	if s := pool.Stats(key); s.Conns() != 0 || s.Closed.Total() != 1 {
		t.Fatalf("pool %+v, want the drain complete and the handed-over connection closed", s)
	}
}
