package poolset_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

func TestWaitHandOffOnPut(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	w, err := p.Wait(keyA, time.Time{}, rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	rec.none(t)
	wantGauges(t, p, keyA, 0, 1, 0, 0, 1)
	p.Put(keyA, c, info(clock))
	if g := rec.got(t); g.Conn != c || g.Permit || g.Err != nil {
		t.Fatalf("grant = %+v", g)
	}
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0) // still busy: it changed hands without going idle
	if w.Cancel() {
		t.Fatal("Cancel after delivery won")
	}
	if s := p.Stats(keyA); s.Reused != 1 || s.Waits != 1 || p.IdleCountForTesting() != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestWaitPermitOnClosedAndDialFailed(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec1, rec2 := newRecorder(), newRecorder()
	for _, rec := range []*recorder{rec1, rec2} {
		if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	p.Closed(keyA, poolset.Busy)
	if g := rec1.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want permit", g)
	}
	rec2.none(t)
	wantGauges(t, p, keyA, 1, 0, 0, 0, 1)
	p.DialFailed(keyA) // the permit passes to the next waiter
	if g := rec2.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want permit", g)
	}
	wantGauges(t, p, keyA, 1, 0, 0, 0, 0)
	p.Dialed(keyA)
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
}

func TestWaitFIFO(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	var mu sync.Mutex
	var order []int
	for i := range 5 {
		if _, err := p.Wait(keyA, time.Time{}, func(g poolset.Grant[*fakeConn]) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// TryReserve and Get never overtake queued waiters.
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve overtook the queue")
	}
	for range 5 {
		p.Put(keyA, c, info(clock))
	}
	if len(order) != 5 || order[0] != 0 || order[1] != 1 || order[2] != 2 || order[3] != 3 || order[4] != 4 {
		t.Fatalf("delivery order = %v", order)
	}
	mustMiss(t, p, keyA)
}

func TestWaitImmediate(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, info(clock))
	rec := newRecorder()
	w, err := p.Wait(keyA, time.Time{}, rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	select { // delivered before Wait returned
	case g := <-rec.ch:
		if g.Conn != c {
			t.Fatalf("grant = %+v", g)
		}
	default:
		t.Fatal("idle conn not granted at once")
	}
	if w.Cancel() {
		t.Fatal("Cancel after immediate grant won")
	}
	// And a permit when under the cap.
	rec = newRecorder()
	if _, err := p.Wait(keyB, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v", g)
	}
	if s := p.Stats(keyB); s.Waits != 0 || s.Connecting != 1 {
		t.Fatalf("stats = %+v", s)
	}
	p.DialFailed(keyB)
}

func TestWaitDeadline(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, clock.Now().Add(20*time.Millisecond), rec.fn); err != nil {
		t.Fatal(err)
	}
	g := rec.got(t)
	if !errors.Is(g.Err, poolset.ErrPoolTimeout) {
		t.Fatalf("grant = %+v, want ErrPoolTimeout", g)
	}
	if s := p.Stats(keyA); s.WaitTimeouts != 1 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}

	// A deadline already passed fails at once, and fn is never called.
	rec = newRecorder()
	_, err := p.Wait(keyA, clock.Now(), rec.fn)
	if !errors.Is(err, poolset.ErrPoolTimeout) {
		t.Fatalf("Wait = %v, want ErrPoolTimeout", err)
	}
	rec.none(t)
}

func TestWaitQueueFull(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1, MaxWaitersPerKey: 2})
	dial(t, p, r, keyA)
	for range 2 {
		if _, err := p.Wait(keyA, time.Time{}, newRecorder().fn); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); !errors.Is(err, poolset.ErrQueueFull) {
		t.Fatalf("Wait = %v, want ErrQueueFull", err)
	}
	rec.none(t)
	if s := p.Stats(keyA); s.QueueFull != 1 || s.Waiting != 2 {
		t.Fatalf("stats = %+v", s)
	}
	// No queue at all.
	p2, _, r2 := newPool(t, poolset.Config{MaxConnsPerKey: 1, MaxWaitersPerKey: -1})
	dial(t, p2, r2, keyA)
	if _, err := p2.Wait(keyA, time.Time{}, rec.fn); !errors.Is(err, poolset.ErrQueueFull) {
		t.Fatalf("Wait = %v, want ErrQueueFull", err)
	}
}

func TestWaitCancel(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1, MaxWaitersPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	w, err := p.Wait(keyA, clock.Now().Add(time.Hour), rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Cancel() {
		t.Fatal("Cancel of a queued waiter lost")
	}
	if w.Cancel() {
		t.Fatal("second Cancel won")
	}
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	// Its queue slot is free at once.
	if _, err := p.Wait(keyA, time.Time{}, newRecorder().fn); err != nil {
		t.Fatalf("Wait after Cancel = %v", err)
	}
	p.Put(keyA, c, info(clock))
	rec.none(t)
	if s := p.Stats(keyA); s.WaitCancels != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestCancelRaceConnGoesBack makes Cancel win between the moment Put picks
// the waiter and the delivery: the conn must go back to the pool, not leak.
func TestCancelRaceConnGoesBack(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	w, err := p.Wait(keyA, time.Time{}, rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	var won bool
	p.SetDeliverHookForTesting(func() { won = w.Cancel() })
	p.Put(keyA, c, info(clock))
	p.SetDeliverHookForTesting(nil)
	if !won {
		t.Fatal("Cancel in the race window lost")
	}
	rec.none(t)
	wantGauges(t, p, keyA, 0, 0, 1, 0, 0) // given back: idle, nothing busy
	mustGet(t, p, keyA, c)
	if c.closes.Load() != 0 {
		t.Fatal("given-back conn closed")
	}
}

// TestCancelRacePermitGoesBack: the same with a dial permit, which passes on
// to the next waiter.
func TestCancelRacePermitGoesBack(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec1, rec2 := newRecorder(), newRecorder()
	w1, err := p.Wait(keyA, time.Time{}, rec1.fn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(keyA, time.Time{}, rec2.fn); err != nil {
		t.Fatal(err)
	}
	first := true
	p.SetDeliverHookForTesting(func() {
		if first {
			first = false
			w1.Cancel()
		}
	})
	c.Close()
	p.Closed(keyA, poolset.Busy)
	p.SetDeliverHookForTesting(nil)
	rec1.none(t)
	if g := rec2.got(t); !g.Permit {
		t.Fatalf("grant = %+v", g)
	}
	wantGauges(t, p, keyA, 1, 0, 0, 0, 0)
	p.DialFailed(keyA)
	wantGauges(t, p, keyA, 0, 0, 0, 0, 0)
}

// TestCancelRaceReal races Cancel against a hand-off on real goroutines.
// Whoever wins, the conn ends up exactly once: with the waiter's owner,
// or back in the pool.
func TestCancelRaceReal(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	for range 2000 {
		rec := newRecorder()
		w, err := p.Wait(keyA, time.Time{}, rec.fn)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan bool)
		go func() { done <- w.Cancel() }()
		p.Put(keyA, c, info(clock))
		if <-done {
			rec.none(t)
			mustGet(t, p, keyA, c) // it went idle
		} else if g := rec.got(t); g.Conn != c {
			t.Fatalf("grant = %+v", g)
		}
		wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	}
	if c.closes.Load() != 0 {
		t.Fatal("conn closed")
	}
}

func TestAcquire(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	ctx := context.Background()

	g, err := p.Acquire(ctx, keyA)
	if err != nil || !g.Permit {
		t.Fatalf("Acquire = %+v, %v; want a permit", g, err)
	}
	p.Dialed(keyA)
	c := r.conn()
	p.Put(keyA, c, info(clock))
	if g, err = p.Acquire(ctx, keyA); err != nil || g.Conn != c {
		t.Fatalf("Acquire = %+v, %v; want the idle conn", g, err)
	}

	// At the cap: blocks until Put hands the conn over.
	got := make(chan poolset.Grant[*fakeConn])
	go func() {
		g, err := p.Acquire(ctx, keyA)
		if err != nil {
			t.Error(err)
		}
		got <- g
	}()
	for p.Stats(keyA).Waiting == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Put(keyA, c, info(clock))
	if g := <-got; g.Conn != c {
		t.Fatalf("grant = %+v", g)
	}

	// Deadline.
	dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = p.Acquire(dctx, keyA)
	if !errors.Is(err, poolset.ErrPoolTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past deadline = %v", err)
	}

	// Cancellation is not a timeout.
	cctx, cancel2 := context.WithCancel(ctx)
	go func() {
		for p.Stats(keyA).Waiting == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel2()
	}()
	_, err = p.Acquire(cctx, keyA)
	if !errors.Is(err, context.Canceled) || errors.Is(err, poolset.ErrPoolTimeout) {
		t.Fatalf("Acquire canceled = %v", err)
	}
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	p.Put(keyA, c, info(clock))
	wantGauges(t, p, keyA, 0, 0, 1, 0, 0)
}

// TestAcquireCancelRace cancels Acquire's context while a Put hands the conn
// over. Nothing may leak: either Acquire returns the conn, or the pool has
// it back.
func TestAcquireCancelRace(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	for range 500 {
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan poolset.Grant[*fakeConn], 1)
		go func() {
			g, _ := p.Acquire(ctx, keyA)
			res <- g
		}()
		for p.Stats(keyA).Waiting == 0 {
			runtime.Gosched()
		}
		go cancel()
		p.Put(keyA, c, info(clock))
		if g := <-res; g.Conn != c {
			mustGet(t, p, keyA, c) // given back
		}
		wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	}
	if c.closes.Load() != 0 {
		t.Fatal("conn closed")
	}
}

func TestWaitCallbackMayReenter(t *testing.T) {
	// fn runs outside the lock, so it may call the pool.
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	done := make(chan struct{})
	if _, err := p.Wait(keyA, time.Time{}, func(g poolset.Grant[*fakeConn]) {
		p.Put(keyA, g.Conn, info(clock))
		close(done)
	}); err != nil {
		t.Fatal(err)
	}
	p.Put(keyA, c, info(clock))
	<-done
	wantGauges(t, p, keyA, 0, 0, 1, 0, 0)
}
