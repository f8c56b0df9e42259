// Package balance holds the peer-group balancers of the engine: pure,
// deterministic choosers with no I/O and no locks of their own.
//
// A balancer sees a group as a slice of [Peer] views, in a fixed order,
// and returns the index of the one to use. What a peer's load is, and
// whether it may be chosen, is the caller's business: the engine fills
// Load from the shared pool's accounting (connections being dialed or busy
// plus queued waiters) and Eligible from health and drain state. A
// balancer is not safe for concurrent use; the engine calls it under its
// group's lock.
package balance

import (
	"fmt"
	"math/rand/v2"
)

// Peer is a balancer's view of one peer for one pick.
type Peer struct {
	// Weight is the peer's share, at least 1.
	Weight int
	// Load is the peer's outstanding work: connections dialed or busy plus
	// requests waiting for one.
	Load int
	// Eligible reports that the peer may take this request (up, not
	// draining, not excluded by a retry).
	Eligible bool
}

// Balancer picks a peer.
type Balancer interface {
	// Pick returns the index in peers of the chosen peer, or -1 when no
	// peer is eligible. key is the caller's hash key; only the hash
	// balancer reads it.
	Pick(peers []Peer, key string) int
}

// Kind names a balancing algorithm.
type Kind string

// The balancers.
const (
	// RoundRobin is smooth weighted round-robin (as nginx's): over any
	// window of sum(weights) picks every peer gets exactly its weight,
	// spread out rather than in bursts.
	RoundRobin Kind = "roundrobin"
	// LeastConn picks the peer with the least load per unit of weight
	// (nginx's least_conn: active/weight); ties go by smooth weighted
	// round-robin.
	LeastConn Kind = "leastconn"
	// P2C draws two distinct peers at random, with probability by weight,
	// and takes the one with less load per unit of weight (ties: the
	// greater weight, then the first drawn).
	P2C Kind = "p2c"
	// Hash maps the caller's key onto a consistent-hash ring, so that a
	// key keeps its peer, and a peer joining or leaving moves only about
	// 1/N of the keys.
	Hash Kind = "hash"
)

// Valid reports a kind New knows; the empty kind is RoundRobin.
func (k Kind) Valid() bool {
	switch k {
	case "", RoundRobin, LeastConn, P2C, Hash:
		return true
	}
	return false
}

// New returns a balancer of kind for peers named names (their order is
// the order of the Peer slices Pick gets) with the given weights (values
// below 1 count as 1). seed seeds P2C's random draws.
func New(kind Kind, names []string, weights []int, seed uint64) (Balancer, error) {
	if len(names) != len(weights) {
		return nil, fmt.Errorf("balance: %d names, %d weights", len(names), len(weights))
	}
	switch kind {
	case RoundRobin, "":
		return &roundRobin{current: make([]int, len(names))}, nil
	case LeastConn:
		return &leastConn{}, nil
	case P2C:
		return &p2c{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
	case Hash:
		return newRing(names, weights), nil
	}
	return nil, fmt.Errorf("balance: unknown balancer %q (want roundrobin, leastconn, p2c or hash)", kind)
}

func weight(p *Peer) int { return max(p.Weight, 1) }

// roundRobin is smooth weighted round-robin: each pick raises every
// eligible peer's current weight by its weight, takes the highest, and
// lowers that one by the total.
type roundRobin struct {
	current []int
}

func (b *roundRobin) Pick(peers []Peer, _ string) int {
	if len(b.current) != len(peers) {
		b.current = make([]int, len(peers))
	}
	best, total := -1, 0
	for i := range peers {
		p := &peers[i]
		if !p.Eligible {
			continue
		}
		w := weight(p)
		b.current[i] += w
		total += w
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	if best >= 0 {
		b.current[best] -= total
	}
	return best
}

// leastConn picks the peer with the least load per unit of weight, and
// among equals goes by smooth weighted round-robin, as nginx's least_conn
// does: light sequential traffic, which finds every peer at load 0,
// spreads by weight rather than all going to the heaviest.
type leastConn struct {
	current []int // the round-robin's current weights
}

func (b *leastConn) Pick(peers []Peer, _ string) int {
	if len(b.current) != len(peers) {
		b.current = make([]int, len(peers))
	}
	least := -1
	for i := range peers {
		if peers[i].Eligible && (least < 0 || lessLoaded(&peers[i], &peers[least])) {
			least = i
		}
	}
	if least < 0 {
		return -1
	}
	best, total := -1, 0
	for i := range peers {
		p := &peers[i]
		if !p.Eligible || lessLoaded(&peers[least], p) {
			continue
		}
		w := weight(p)
		b.current[i] += w
		total += w
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	b.current[best] -= total
	return best
}

// lessLoaded reports whether a has less load per unit of weight than b
// (as nginx's least_conn compares active/weight). The ratios are compared
// cross-multiplied: loads and weights (at most the engine's MaxWeight)
// are small enough not to overflow.
func lessLoaded(a, b *Peer) bool {
	return a.Load*weight(b) < b.Load*weight(a)
}

// better reports whether a beats b for p2c: less load per unit of
// weight, or the same and more weight.
func better(a, b *Peer) bool {
	if lessLoaded(a, b) || lessLoaded(b, a) {
		return lessLoaded(a, b)
	}
	return weight(a) > weight(b)
}

// p2c is the power of two choices over least load.
type p2c struct {
	rng *rand.Rand
}

func (b *p2c) Pick(peers []Peer, _ string) int {
	total, n := 0, 0
	for i := range peers {
		if peers[i].Eligible {
			total += weight(&peers[i])
			n++
		}
	}
	switch n {
	case 0:
		return -1
	case 1:
		return b.draw(peers, total, -1)
	}
	first := b.draw(peers, total, -1)
	second := b.draw(peers, total-weight(&peers[first]), first)
	if better(&peers[second], &peers[first]) {
		return second
	}
	return first
}

// draw picks an eligible peer other than skip, with probability by weight;
// total is the eligible weight without skip's.
func (b *p2c) draw(peers []Peer, total, skip int) int {
	r := b.rng.IntN(total)
	last := -1
	for i := range peers {
		if !peers[i].Eligible || i == skip {
			continue
		}
		last = i
		if r -= weight(&peers[i]); r < 0 {
			return i
		}
	}
	return last
}
