package balance_test

import (
	"math"
	"strconv"
	"testing"

	"github.com/serverside-go/serverside/engine/balance"
)

func mustNew(t *testing.T, kind balance.Kind, names []string, weights []int) balance.Balancer {
	t.Helper()
	b, err := balance.New(kind, names, weights, 1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func view(weights []int) []balance.Peer {
	ps := make([]balance.Peer, len(weights))
	for i, w := range weights {
		ps[i] = balance.Peer{Weight: w, Eligible: true}
	}
	return ps
}

func TestNewRejectsUnknownKind(t *testing.T) {
	if _, err := balance.New("random", nil, nil, 0); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := balance.New(balance.Hash, []string{"a"}, nil, 0); err == nil {
		t.Fatal("mismatched names and weights accepted")
	}
}

func TestRoundRobinSmoothSequence(t *testing.T) {
	// nginx's documented example: weights 5, 1, 1 give a a b a c a a.
	b := mustNew(t, balance.RoundRobin, []string{"a", "b", "c"}, []int{5, 1, 1})
	ps := view([]int{5, 1, 1})
	var got string
	for i := 0; i < 14; i++ {
		got += string(rune('a' + b.Pick(ps, "")))
	}
	if want := "aabacaaaabacaa"; got != want {
		t.Fatalf("sequence = %s, want %s", got, want)
	}
}

func TestRoundRobinExactShares(t *testing.T) {
	weights := []int{3, 2, 1}
	b := mustNew(t, balance.RoundRobin, []string{"a", "b", "c"}, weights)
	ps := view(weights)
	counts := make([]int, 3)
	for i := 0; i < 600; i++ {
		counts[b.Pick(ps, "")]++
	}
	if counts[0] != 300 || counts[1] != 200 || counts[2] != 100 {
		t.Fatalf("counts = %v, want [300 200 100]", counts)
	}
	// An ineligible peer gets nothing; the others share by weight.
	ps[0].Eligible = false
	counts = make([]int, 3)
	for i := 0; i < 300; i++ {
		counts[b.Pick(ps, "")]++
	}
	if counts[0] != 0 || counts[1] != 200 || counts[2] != 100 {
		t.Fatalf("counts with a down = %v, want [0 200 100]", counts)
	}
	ps[1].Eligible, ps[2].Eligible = false, false
	if i := b.Pick(ps, ""); i != -1 {
		t.Fatalf("Pick with none eligible = %d, want -1", i)
	}
}

func TestLeastConn(t *testing.T) {
	b := mustNew(t, balance.LeastConn, []string{"a", "b", "c"}, []int{1, 1, 1})
	ps := view([]int{1, 1, 1})
	ps[0].Load, ps[1].Load, ps[2].Load = 4, 1, 2
	for i := 0; i < 5; i++ {
		if got := b.Pick(ps, ""); got != 1 {
			t.Fatalf("Pick = %d, want the least loaded 1", got)
		}
	}
	// Ties: round-robin.
	ps[0].Load, ps[1].Load, ps[2].Load = 0, 0, 0
	var got string
	for i := 0; i < 6; i++ {
		got += strconv.Itoa(b.Pick(ps, ""))
	}
	if got != "012012" {
		t.Fatalf("ties = %s, want 012012 (round-robin)", got)
	}
	// Ties with weights: weighted round-robin, spread out, so that light
	// sequential traffic (every peer at load 0) follows the weights.
	ps[1].Weight = 3
	got = ""
	for i := 0; i < 10; i++ {
		got += strconv.Itoa(b.Pick(ps, ""))
	}
	if got != "1012110121" {
		t.Fatalf("ties with weights 1, 3, 1 = %s, want 1012110121", got)
	}
	ps[1].Eligible = false
	ps[2].Load = 1
	if got := b.Pick(ps, ""); got != 0 {
		t.Fatalf("Pick = %d, want 0 (1 ineligible, 2 loaded)", got)
	}
	ps[0].Eligible, ps[2].Eligible = false, false
	if got := b.Pick(ps, ""); got != -1 {
		t.Fatalf("Pick with none eligible = %d, want -1", got)
	}
}

func TestP2C(t *testing.T) {
	b := mustNew(t, balance.P2C, []string{"a", "b", "c", "d"}, []int{1, 1, 1, 1})
	ps := view([]int{1, 1, 1, 1})
	ps[0].Load, ps[1].Load, ps[2].Load, ps[3].Load = 0, 5, 5, 5
	counts := make([]int, 4)
	const n = 12000
	for i := 0; i < n; i++ {
		counts[b.Pick(ps, "")]++
	}
	// The idle peer wins whenever it is one of the two drawn: with 4
	// peers that is 1 - (3/4 × 2/3) = 1/2 of the picks; the loaded peers
	// split the rest evenly.
	if d := math.Abs(float64(counts[0])/n - 0.5); d > 0.03 {
		t.Fatalf("idle peer got %d of %d, want about half", counts[0], n)
	}
	for i := 1; i < 4; i++ {
		if d := math.Abs(float64(counts[i])/n - 1.0/6); d > 0.03 {
			t.Fatalf("loaded peer %d got %d of %d, want about 1/6", i, counts[i], n)
		}
	}
	// Never the most loaded when two are drawn from three, of which it is
	// one: the worst peer can only win against nobody.
	ps = view([]int{1, 1, 1})
	ps[0].Load, ps[1].Load, ps[2].Load = 1, 2, 9
	for i := 0; i < 1000; i++ {
		if b.Pick(ps, "") == 2 {
			t.Fatal("p2c picked the most loaded of three")
		}
	}
	// Deterministic for a seed.
	seq := func() string {
		b := mustNew(t, balance.P2C, []string{"a", "b", "c"}, []int{1, 2, 3})
		ps := view([]int{1, 2, 3})
		s := ""
		for i := 0; i < 20; i++ {
			s += strconv.Itoa(b.Pick(ps, ""))
		}
		return s
	}
	if a, c := seq(), seq(); a != c {
		t.Fatalf("same seed, different sequences %s and %s", a, c)
	}
	// One eligible peer: always it; none: -1.
	ps = view([]int{1, 1})
	ps[0].Eligible = false
	if got := b.Pick(ps, ""); got != 1 {
		t.Fatalf("Pick = %d, want the only eligible 1", got)
	}
	ps[1].Eligible = false
	if got := b.Pick(ps, ""); got != -1 {
		t.Fatalf("Pick with none eligible = %d, want -1", got)
	}
}

func TestP2CWeights(t *testing.T) {
	b := mustNew(t, balance.P2C, []string{"a", "b"}, []int{1, 3})
	ps := view([]int{1, 3})
	// Equal loads: the heavier wins every draw of two.
	for i := 0; i < 100; i++ {
		if got := b.Pick(ps, ""); got != 1 {
			t.Fatalf("Pick = %d, want the heavier 1 on equal load", got)
		}
	}
}

func hashKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "host-" + strconv.Itoa(i) + ".example"
	}
	return keys
}

func TestHashStableAndSpread(t *testing.T) {
	names := []string{"a", "b", "c"}
	b := mustNew(t, balance.Hash, names, []int{1, 1, 1})
	ps := view([]int{1, 1, 1})
	keys := hashKeys(30000)
	counts := make([]int, 3)
	first := make([]int, len(keys))
	for i, k := range keys {
		first[i] = b.Pick(ps, k)
		counts[first[i]]++
	}
	for i, c := range counts {
		if math.Abs(float64(c)/float64(len(keys))-1.0/3) > 0.05 {
			t.Fatalf("peer %d owns %d of %d keys, want about 1/3 (%v)", i, c, len(keys), counts)
		}
	}
	for i, k := range keys {
		if got := b.Pick(ps, k); got != first[i] {
			t.Fatalf("key %s moved from %d to %d with nothing changed", k, first[i], got)
		}
	}
}

func TestHashMovesOnlyOneNth(t *testing.T) {
	keys := hashKeys(20000)
	three := mustNew(t, balance.Hash, []string{"a", "b", "c"}, []int{1, 1, 1})
	four := mustNew(t, balance.Hash, []string{"a", "b", "c", "d"}, []int{1, 1, 1, 1})
	ps3, ps4 := view([]int{1, 1, 1}), view([]int{1, 1, 1, 1})
	moved := 0
	for _, k := range keys {
		before, after := three.Pick(ps3, k), four.Pick(ps4, k)
		if before != after {
			moved++
			if after != 3 {
				t.Fatalf("key %s moved from %d to %d, not to the peer that joined", k, before, after)
			}
		}
	}
	if f := float64(moved) / float64(len(keys)); math.Abs(f-0.25) > 0.05 {
		t.Fatalf("a fourth peer joining moved %.3f of keys, want about 1/4", f)
	}

	// A peer leaving (marked ineligible): only its keys move, spread over
	// the others.
	ps4[1].Eligible = false
	moved = 0
	spread := make([]int, 4)
	for _, k := range keys {
		before := four.Pick(view([]int{1, 1, 1, 1}), k)
		after := four.Pick(ps4, k)
		if before == after {
			continue
		}
		if before != 1 {
			t.Fatalf("key %s moved from %d, which did not leave", k, before)
		}
		moved++
		spread[after]++
	}
	if f := float64(moved) / float64(len(keys)); math.Abs(f-0.25) > 0.05 {
		t.Fatalf("a peer leaving moved %.3f of keys, want about 1/4", f)
	}
	for _, i := range []int{0, 2, 3} {
		if spread[i] < moved/6 {
			t.Fatalf("keys of the peer that left went %v, want them spread over the others", spread)
		}
	}
}

func TestHashWeights(t *testing.T) {
	b := mustNew(t, balance.Hash, []string{"a", "b"}, []int{1, 3})
	ps := view([]int{1, 3})
	counts := make([]int, 2)
	for _, k := range hashKeys(20000) {
		counts[b.Pick(ps, k)]++
	}
	if f := float64(counts[1]) / 20000; math.Abs(f-0.75) > 0.05 {
		t.Fatalf("weight-3 peer owns %.3f of keys, want about 3/4", f)
	}
	ps[0].Eligible, ps[1].Eligible = false, false
	if got := b.Pick(ps, "x"); got != -1 {
		t.Fatalf("Pick with none eligible = %d, want -1", got)
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	for _, k := range []balance.Kind{balance.RoundRobin, balance.LeastConn, balance.P2C, balance.Hash} {
		b := mustNew(t, k, []string{"a", "b", "c"}, []int{1, 2, 3})
		ps := view([]int{1, 2, 3})
		if n := testing.AllocsPerRun(100, func() { b.Pick(ps, "key") }); n != 0 {
			t.Errorf("%s: Pick allocates %v times", k, n)
		}
	}
}

func TestKindValid(t *testing.T) {
	for _, k := range []balance.Kind{"", balance.RoundRobin, balance.LeastConn, balance.P2C, balance.Hash} {
		if !k.Valid() {
			t.Errorf("%q not valid", k)
		}
		if _, err := balance.New(k, []string{"a"}, []int{1}, 1); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range []balance.Kind{"random", "RoundRobin", "least_conn"} {
		if k.Valid() {
			t.Errorf("%q valid", k)
		}
		if _, err := balance.New(k, []string{"a"}, []int{1}, 1); err == nil {
			t.Errorf("%q: New accepted it", k)
		}
	}
}

// TestLeastConnWeights: leastconn weighs load by weight, as nginx's
// least_conn compares active/weight: with weights 3 and 1, requests that
// stay in flight pile up 3 to 1. Starting idle, eight picks, each adding
// its request to the load, go a b a a a b a a (ties of load/weight go to
// the heavier); then, in the steady state where the oldest request ends
// as each new one comes, the loads stay 6 and 2.
func TestLeastConnWeights(t *testing.T) {
	for _, k := range []balance.Kind{balance.LeastConn, balance.P2C} {
		b := mustNew(t, k, []string{"a", "b"}, []int{3, 1})
		ps := view([]int{3, 1})
		var inflight []int // the peers of the requests in flight, oldest first
		seq := ""
		for i := 0; i < 8; i++ {
			p := b.Pick(ps, "")
			ps[p].Load++
			inflight = append(inflight, p)
			seq += string("ab"[p])
		}
		if k == balance.LeastConn && seq != "abaaabaa" {
			t.Fatalf("%s: first eight picks %s, want abaaabaa", k, seq)
		}
		if ps[0].Load != 6 || ps[1].Load != 2 {
			t.Fatalf("%s: loads after eight picks %d and %d, want 6 and 2", k, ps[0].Load, ps[1].Load)
		}
		counts := [2]int{}
		for i := 0; i < 4000; i++ {
			ps[inflight[0]].Load--
			inflight = inflight[1:]
			p := b.Pick(ps, "")
			ps[p].Load++
			inflight = append(inflight, p)
			counts[p]++
		}
		// 3:1 exactly would be 3000 and 1000; unweighted, 2000 each.
		if counts[0] < 2700 || counts[1] > 1300 {
			t.Fatalf("%s: steady load: the weight-3 peer got %d, the weight-1 peer %d; want about 3:1", k, counts[0], counts[1])
		}
	}
}
