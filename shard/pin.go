package shard

import (
	"fmt"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// session is a pinned connection, owned by one shard. Its requests run one
// at a time, in order; the others queue. When the connection is found
// closed the session becomes a tombstone (c == nil): later requests with
// its key fail with ErrPinnedGone, never silently go to a new connection,
// until Unpin forgets the key.
type session struct {
	c   *conn.Conn // nil: the session's connection is gone
	key poolset.Key
	// scope: "" when the session takes every request of its key, else
	// only those with this Task.PinScope (an origin's login through a
	// parent).
	scope string
	busy  bool // an exchange runs on c
	// ending: EndSessions was called for the session's upstream while an
	// exchange ran on c; the session ends when it completes.
	ending bool
	queue  []*Task // requests waiting for c
	idle   time.Time
}

func goneErr(t *Task) error {
	return &conn.Error{Phase: conn.PhasePoolWait, Addr: t.Key.Addr,
		Err: fmt.Errorf("%w: session %d", ErrPinnedGone, t.PinKey)}
}

// serves reports whether t is the session's: to its upstream and, for a
// session scoped to one origin through a parent, to that origin.
func (ss *session) serves(t *Task) bool {
	return ss.key == t.Key && (ss.scope == "" || ss.scope == t.PinScope)
}

// runPinned runs t on its session's connection, or queues or fails it.
func (s *Shard) runPinned(t *Task, ss *session) {
	switch {
	case ss.c == nil:
		s.finish(t, goneErr(t))
	case ss.busy:
		ss.queue = append(ss.queue, t)
	case !ss.c.Alive() || !ss.c.Probe():
		// A pinned request never goes again, so the socket is looked at
		// (Probe), as for a pooled request that could not: a close
		// already in the kernel is answered ErrPinnedGone before the
		// request meets it.
		s.endSession(t.PinKey, ss, true)
		s.finish(t, goneErr(t))
	default:
		ss.busy = true
		t.pinned = true
		s.exchange(t, ss.c)
	}
}

// pinnedDone takes back a session's connection after an exchange on it.
func (s *Shard) pinnedDone(t *Task, c *conn.Conn, reusable bool) {
	ss, ok := s.pinned[t.PinKey]
	if !ok || ss.c != c {
		// Unpinned or replaced meanwhile: the connection is ours to close.
		_ = c.Close()
		s.set.pool.Closed(t.Key, poolset.Pinned)
		return
	}
	ss.busy = false
	if !reusable || ss.ending {
		// EndSessions ended it (reported, as there) or the connection
		// closes with this response (which the caller is in the middle
		// of: it learns of it there).
		ending := ss.ending
		s.endSession(t.PinKey, ss, true)
		if ending {
			s.pinnedClosed(t.PinKey)
		}
		return
	}
	ss.idle = time.Now()
	s.nextPinned(ss)
}

// switchPinned ends the session whose connection c just answered a
// Switch task with 101 and hands c over as switchConn does. The client
// connection that authenticated the session (NTLM, Negotiate: a WebSocket
// behind Windows authentication) switches protocols with it, so nothing
// else can use the session: it becomes a tombstone, as when its connection
// is gone, and c leaves the pinned accounting for the busy one.
func (s *Shard) switchPinned(t *Task, c *conn.Conn, out conn.Outcome) error {
	ss, ok := s.pinned[t.PinKey]
	if !ok || ss.c != c {
		// Unpinned or replaced meanwhile: the connection is ours to close.
		_ = c.Close()
		s.set.pool.Closed(t.Key, poolset.Pinned)
		return &conn.Error{Phase: conn.PhaseBody, Addr: t.Key.Addr, Written: true, Delivered: true, Responded: true,
			Err: fmt.Errorf("101 Switching Protocols: %w: session %d ended meanwhile", ErrPinnedGone, t.PinKey)}
	}
	if f := s.set.cfg.OnSession; f != nil {
		f(t.PinKey, ss.key, SessionGone)
	}
	ss.c, ss.busy = nil, false
	queue := ss.queue
	ss.queue = nil
	for _, q := range queue {
		s.finish(q, goneErr(q))
	}
	s.set.pool.Unpin(t.Key)
	return s.set.switchConn(t, c, out)
}

// nextPinned starts the next queued request of an idle session.
func (s *Shard) nextPinned(ss *session) {
	if !ss.busy && len(ss.queue) > 0 {
		next := ss.queue[0]
		ss.queue[0] = nil
		ss.queue = ss.queue[1:]
		s.runPinned(next, ss)
	}
}

// pin makes c, busy after a reusable exchange of t, the connection of
// session t.PinKey, replacing a previous one.
func (s *Shard) pin(t *Task, c *conn.Conn) {
	if old, ok := s.pinned[t.PinKey]; ok {
		s.endSession(t.PinKey, old, false)
	}
	if err := c.SetState(conn.Pinned); err != nil {
		_ = c.Close()
		s.set.pool.Closed(t.Key, poolset.Busy)
		return
	}
	s.set.pool.Pin(t.Key)
	ss := &session{c: c, key: t.Key, idle: time.Now()}
	if t.PinOrigin {
		ss.scope = t.PinScope
	}
	s.pinned[t.PinKey] = ss
	if f := s.set.cfg.OnSession; f != nil {
		f(t.PinKey, t.Key, SessionStarted)
	}
	if s.set.pool.Draining(t.Key) {
		// The upstream is draining: EndSessions ran while this exchange
		// was in flight, before it was a session. It ends as a busy
		// session does there, after its exchange.
		s.endSession(t.PinKey, ss, true)
		s.pinnedClosed(t.PinKey)
		return
	}
	s.armProbe()
}

// armProbe schedules a check of the idle pinned sessions. Without an
// OnRequest handler netpoll pushes no close event, so a peer closing an
// idle pinned connection is found by probing it, as the pool's sweeper
// does for idle pooled ones.
func (s *Shard) armProbe() {
	if s.probe == nil && !s.stopping {
		s.probe = time.AfterFunc(s.set.cfg.ProbeInterval, func() { s.post(event{kind: evProbe}) })
	}
}

// probeSessions ends the idle sessions whose connection the peer closed
// or whose idle timeout passed, telling the embedder, and re-arms the
// probe while live sessions remain.
func (s *Shard) probeSessions(now time.Time) {
	if s.stopping {
		return
	}
	live := false
	for k, ss := range s.pinned {
		if ss.c == nil {
			continue
		}
		if ss.busy || len(ss.queue) > 0 {
			live = true
			continue
		}
		if ss.c.Alive() && now.Sub(ss.idle) < s.set.cfg.PinnedIdleTimeout {
			live = true
			continue
		}
		s.endSession(k, ss, true)
		s.pinnedClosed(k)
	}
	if live {
		s.armProbe()
	}
}

// pinnedClosed tells the embedder that session key ended while its client
// connection may be idle.
func (s *Shard) pinnedClosed(key uint64) {
	if f := s.set.cfg.OnPinnedClosed; f != nil {
		f(key)
	}
}

// endSessionsOf ends the sessions whose connection pools under key, as
// Set.EndSessions asks: an idle one at once, a busy one when its exchange
// completes. The embedder hears of each through OnPinnedClosed.
func (s *Shard) endSessionsOf(key poolset.Key) {
	for k, ss := range s.pinned {
		if ss.c == nil || ss.key != key {
			continue
		}
		if ss.busy {
			ss.ending = true
			continue
		}
		s.endSession(k, ss, true)
		s.pinnedClosed(k)
	}
}

// endSession closes a session's connection (unless an exchange still runs
// on it: then pinnedDone closes it) and fails its queued requests. With
// tombstone the key stays known as gone; otherwise it is forgotten.
func (s *Shard) endSession(key uint64, ss *session, tombstone bool) {
	if f := s.set.cfg.OnSession; f != nil {
		switch {
		case !tombstone:
			f(key, ss.key, SessionForgotten)
		case ss.c != nil:
			f(key, ss.key, SessionGone)
		}
	}
	if ss.c != nil {
		if ss.busy {
			_ = ss.c.Close() // the exchange fails; pinnedDone accounts for it
		} else {
			_ = ss.c.Close()
			s.set.pool.Closed(ss.key, poolset.Pinned)
		}
	}
	if tombstone {
		ss.c, ss.busy = nil, false
	} else {
		delete(s.pinned, key)
	}
	queue := ss.queue
	ss.queue = nil
	for _, q := range queue {
		s.finish(q, goneErr(q))
	}
}

// closeSessions ends every session at shutdown.
func (s *Shard) closeSessions() {
	if s.probe != nil {
		s.probe.Stop()
		s.probe = nil
	}
	for k, ss := range s.pinned {
		if ss.c != nil {
			_ = ss.c.Close()
			s.set.pool.Closed(ss.key, poolset.Pinned)
		}
		delete(s.pinned, k)
		for _, q := range ss.queue {
			q.Done(ErrClosed)
		}
	}
}
