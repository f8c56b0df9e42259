package poolset

// batch is the work an operation decides under the lock and does after
// releasing it: connections to close and waiters to deliver to. It lives on
// the operation's stack. The first few victims fit in place, so the common
// cases (nothing, or one refused or evicted connection) do not allocate.
type batch[C Conn] struct {
	victims   [4]C
	nVictims  int
	more      []C        // victims beyond len(victims): sweeps, Drain, Close
	ready     *Waiter[C] // waiters to deliver to, in dequeue order
	readyTail *Waiter[C]
}

// close queues c to be closed.
func (b *batch[C]) close(c C) {
	if b.nVictims < len(b.victims) {
		b.victims[b.nVictims] = c
		b.nVictims++
		return
	}
	b.more = append(b.more, c)
}

// deliver queues w, whose grant is set, for delivery.
func (b *batch[C]) deliver(w *Waiter[C]) {
	if b.readyTail != nil {
		b.readyTail.readyNext = w
	} else {
		b.ready = w
	}
	b.readyTail = w
}

// run delivers, then closes. p.mu must not be held. Waiters go first: they
// are requests waiting to proceed, while a Close is cleanup.
func (b *batch[C]) run(p *Pool[C]) {
	for w := b.ready; w != nil; {
		next := w.readyNext
		w.readyNext = nil
		p.deliver(w)
		w = next
	}
	for i := range b.nVictims {
		b.victims[i].Close()
	}
	for _, c := range b.more {
		c.Close()
	}
}
