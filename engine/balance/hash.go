package balance

import (
	"slices"
	"strconv"
)

// PointsPerWeight is how many points one unit of weight puts on the hash
// ring. More points spread keys more evenly, at the cost of a longer ring.
const PointsPerWeight = 160

// ring is a consistent-hash ring. Each peer owns PointsPerWeight × weight
// points placed by hashing its name, so the points do not depend on which
// other peers exist: a peer joining takes over only the arcs in front of
// its own points, and one leaving hands only its own arcs to the next
// points along the ring.
type ring struct {
	points []point // sorted by hash
}

type point struct {
	hash uint64
	peer int
}

func newRing(names []string, weights []int) *ring {
	r := &ring{}
	for i, name := range names {
		n := PointsPerWeight * max(weights[i], 1)
		for v := 0; v < n; v++ {
			r.points = append(r.points, point{hash: Sum(name + "#" + strconv.Itoa(v)), peer: i})
		}
	}
	slices.SortFunc(r.points, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return a.peer - b.peer
	})
	return r
}

// Pick returns the owner of the first point at or after key's hash whose
// peer is eligible, walking around the ring.
func (r *ring) Pick(peers []Peer, key string) int {
	if len(r.points) == 0 {
		return -1
	}
	h := Sum(key)
	start, _ := slices.BinarySearchFunc(r.points, h, func(p point, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	for j := 0; j < len(r.points); j++ {
		p := r.points[(start+j)%len(r.points)]
		if p.peer < len(peers) && peers[p.peer].Eligible {
			return p.peer
		}
	}
	return -1
}

// Sum is the ring's hash of s: 64-bit FNV-1a, then a splitmix64 finalizer
// so that keys differing in one trailing character still land far apart.
// It does not allocate.
func Sum(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
