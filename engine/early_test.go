package engine_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
)

// pausedBody is a request body whose source sends its first bytes and
// then pauses, as a client connection's reader does for a client that
// stops in the middle of its upload. It implements conn.AnswerWatcher:
// its wait looks at the upstream and ends with conn.ErrAnswered once the
// upstream answered.
type pausedBody struct {
	first    []byte
	answered func() bool
	watched  []bool // WatchAnswer's calls: with a function or nil
}

func (b *pausedBody) WatchAnswer(answered func() bool) {
	b.answered = answered
	b.watched = append(b.watched, answered != nil)
}

func (b *pausedBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if b.answered != nil && b.answered() {
			return 0, fmt.Errorf("paused body: %w", conn.ErrAnswered)
		}
	}
	return 0, errors.New("paused body: no answer came")
}

// TestEarlyAnswerToPausedBody: nginx answers 413 to the head of an upload
// whose body source has paused after its first bytes (of a Content-Length
// body, and of a chunked one past nginx's limit). The engine hands the body
// the means to watch for the answer (conn.AnswerWatcher), so the 413 is
// delivered while the body still waits, and counted as a request that did
// not fail; without them the exchange would wait for the body.
func TestEarlyAnswerToPausedBody(t *testing.T) {
	leakBaseline(t)
	ngx := bench.StartNginx(t, bench.NginxOptions{Locations: `
        location = /lim { client_max_body_size 1k; proxy_pass http://127.0.0.1:9; }
`})
	e := startEngine(t, engine.Config{})
	for i, cl := range []int64{10 << 20, -1} {
		b := &pausedBody{first: []byte(strings.Repeat("x", 4096))}
		s := send(t, e, ngxRequest(t, ngx, "POST", "/lim", b, cl))
		if s.err != nil || len(s.heads) != 1 || s.heads[0] != 413 || !strings.Contains(s.body.String(), "413 Request Entity Too Large") {
			t.Fatalf("length %d: heads %v, body %q, err %v; want nginx's 413", cl, s.heads, s.body.String(), s.err)
		}
		if fmt.Sprint(b.watched) != "[true false]" {
			t.Fatalf("length %d: WatchAnswer calls %v, want a function and then nil", cl, b.watched)
		}
		st := e.Stats()[ngx.Addr()]
		if st.Requests != uint64(i+1) || len(st.Errors) != 0 {
			t.Fatalf("length %d: stats %+v; want %d requests, no error", cl, st, i+1)
		}
	}
}

// TestEarlyAnswerAfterInterimToPausedBody: an origin that sends an
// interim response nobody asked for (100 Continue to a request without
// Expect) and then 413, and reads no more, answers a body source that
// paused after its first bytes: the watch looks past the interim head,
// and the 413 is delivered while the body still waits.
func TestEarlyAnswerAfterInterimToPausedBody(t *testing.T) {
	leakBaseline(t)
	done := make(chan struct{})
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope")
		<-done // reads no more of the body
	})
	defer close(done)
	e := startEngine(t, engine.Config{})
	b := &pausedBody{first: []byte(strings.Repeat("x", 4096))}
	req := request(t, o.Addr(), "POST", "o", "/up", false)
	req.Body, req.ContentLength = b, 10<<20
	s := send(t, e, req)
	if s.err != nil || fmt.Sprint(s.heads) != "[413]" || s.body.String() != "nope" {
		t.Fatalf("heads %v, body %q, err %v; want the origin's 413", s.heads, s.body.String(), s.err)
	}
	if st := e.Stats()[o.Addr()]; st.Requests != 1 || len(st.Errors) != 0 {
		t.Fatalf("stats %+v; want 1 request, no error", st)
	}
}
