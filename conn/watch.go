package conn

import (
	"errors"
	"fmt"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// The sink watchdog bounds what netpoll buffers while a sink blocks.
//
// readBody checks the high-water mark before each sink call, but a sink may
// block inside one call (OnHead writing to a stalled client, or OnBody) as
// long as it likes, and netpoll's poller keeps draining the socket into
// memory meanwhile. So while a response is being delivered a timer looks at
// the buffer: once it holds more than the high-water mark while a sink call
// is running, the watchdog takes the fd off the poller (stopPoller) and the
// kernel's window holds the rest. The exchange notices after the call and
// goes on over blocking Go net I/O (detach), as it would have at the next
// check.
//
// The timer's period follows the arrival rate: the time in which half the
// high-water mark would arrive, between watchMin and watchMax. A quiet or
// slow body costs a look every watchMax; a fast one is looked at often but
// ends (or is detached) soon, so the looks are bounded by bandwidth over the
// high-water mark, not by the number of exchanges.
const (
	watchMin = time.Millisecond
	watchMax = 20 * time.Millisecond
)

// startWatch arms the watchdog for the delivery of one response.
func (c *Conn) startWatch(hw int) {
	if c.g != nil || c.detached.Load() { // Go net reads only when asked
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watch == nil {
		// Made stopped: the timer's goroutine reads c.watch only after
		// it sees watching, which is set below.
		c.watch = time.AfterFunc(time.Hour, c.watchSink)
		c.watch.Stop()
	}
	c.watchHW = hw
	c.wLen = c.nc.Reader().Len()
	c.wSeen = c.consumed
	c.wAt = time.Now()
	c.watching.Store(true)
	c.watch.Reset(watchMin)
}

// stopWatch disarms the watchdog; a look already running finds watching
// false and neither acts nor re-arms.
func (c *Conn) stopWatch() {
	if c.watching.Swap(false) {
		c.watch.Stop()
	}
}

// sinkCall marks a sink call in progress (true) or done (false).
func (c *Conn) sinkCall(in bool) {
	if in && c.pl != nil {
		c.sinkAt.Store(nanotime())
	}
	c.inSink.Store(in)
}

// watchSink is the timer's function.
func (c *Conn) watchSink() {
	if !c.watching.Load() {
		return
	}
	if !c.mu.TryLock() {
		// The exchange holds the lock only briefly (skip, detach) and
		// looks at the buffer itself then; look again soon.
		c.watch.Reset(watchMin)
		return
	}
	defer c.mu.Unlock()
	if c.closed || c.detached.Load() || !c.watching.Load() {
		return
	}
	if c.pl != nil && c.inSink.Load() && nanotime()-c.sinkAt.Load() > int64(EvictAfter) {
		// A client slow to take its response holds up the requests
		// pipelined behind it: they go elsewhere.
		c.evictWaiters()
	}
	buf := c.nc.Reader().Len()
	if c.inSink.Load() && buf > c.watchHW {
		if err := c.stopPoller(); err == nil {
			return
		}
		// Not a netpoll connection, nothing to stop; or a pipelined
		// write is going on. Look again later.
	}
	now := time.Now()
	arrived := int64(buf-c.wLen) + c.consumed - c.wSeen
	dt := now.Sub(c.wAt)
	c.wLen, c.wSeen, c.wAt = buf, c.consumed, now
	next := watchMax
	if arrived > 0 {
		next = time.Duration(float64(dt) * float64(c.watchHW/2) / float64(arrived))
	}
	c.watch.Reset(min(max(next, watchMin), watchMax))
}

// errWriting is stopPoller's refusal during a pipelined write.
var errWriting = errors.New("conn: a pipelined write is going on")

// stopPoller takes the fd off netpoll's poller without closing it (netpoll's
// Detach) and keeps it in rawFD until detach adopts it; the bytes already
// buffered stay in the input buffer. It must be called under c.mu. It
// refuses while a pipelined batch is being written (c.writing): netpoll's
// writer must not outlive the fd's place on the poller.
func (c *Conn) stopPoller() error {
	d, ok := c.nc.(detacher)
	if !ok {
		return ErrNotNetpoll
	}
	if c.writing {
		return errWriting
	}
	fd := d.Fd()
	if err := d.Detach(); err != nil {
		return fmt.Errorf("netpoll detach: %w", err)
	}
	c.detached.Store(true)
	c.rawFD = fd
	return nil
}

// stopPollerForLength takes the fd off the poller before OnHead when the
// body has a length and more than the high-water mark of it is still to
// arrive beyond what is buffered: readBody would leave netpoll at its
// first look anyway, and OnHead may block meanwhile, during which a fast
// upstream sends megabytes before the watchdog's first look (later still
// on a busy machine). hl is the head's length in the buffer.
func (c *Conn) stopPollerForLength(resp *parser.Response, hl, hw int) {
	if c.g != nil || c.detached.Load() || resp.Framing() != parser.FramingLength {
		return
	}
	if resp.ContentLength()-int64(c.nc.Reader().Len()-hl) <= int64(hw) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && !c.detached.Load() {
		_ = c.stopPoller() // not a netpoll connection, or writing: the watchdog looks as before
	}
}
