package conn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// bufferedGate is a request body whose first Read waits until netpoll
// holds want response bytes, so that the whole answer came in before the
// body goes out (where the exchange looks for it), however the scheduler
// runs the origin.
type bufferedGate struct {
	c      *Conn
	want   int
	r      io.Reader
	opened bool
	allocs float64 // per answered() call, with the answer buffered
}

func (b *bufferedGate) Read(p []byte) (int, error) {
	if !b.opened {
		b.opened = true
		for deadline := time.Now().Add(5 * time.Second); b.c.nc.Reader().Len() < b.want && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		// On RoundTrip's goroutine, the only one answered is safe for.
		b.allocs = testing.AllocsPerRun(100, func() { b.c.answered() })
	}
	return b.r.Read(p)
}

// TestEarlyAnswerAfterInterim: an origin that sends an interim response
// nobody asked for (a 100 Continue to a request without Expect, a 103
// Early Hints) and then an error response, and reads no more of the body,
// still refuses the body (RFC 9112 §9.5): the rest is not sent, the
// interim response reaches the sink before the final one, and the
// connection is spent. Before, only the first status line was looked at,
// and the body blocked until the write timeout. After an interim
// response, a success is no refusal: the whole body goes out.
func TestEarlyAnswerAfterInterim(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  string // what the origin sends after the head
		status  int
		body    string
		interim string
	}{
		{"100-413", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope", 413, "nope", "100 "},
		{"103-102-401", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 102 Processing\n\nHTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 2\r\n\r\nno", 401, "no", "103 </a.css>, 102 "},
		{"103-200", "HTTP/1.1 103 Early Hints\r\nLink: </b.js>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", "103 </b.js>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			const n = 32 << 20 // far more than the socket buffers hold
			refuse := tc.status >= 300
			got := make(chan int64, 1)
			done := make(chan struct{})
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				io.WriteString(c, tc.answer)
				if refuse {
					<-done // reads no more: the body would block
					return
				}
				k, _ := io.CopyN(io.Discard, br, n)
				got <- k
				<-done // keeps the connection open: reusable
			})
			c := dial(t, o.addr())
			defer close(done)
			ex := &Exchange{Head: request(t, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n", n)),
				Body:          &bufferedGate{c: c, want: len(tc.answer), r: strings.NewReader(strings.Repeat("x", n))},
				ContentLength: n,
				Config:        Config{WriteTimeout: 5 * time.Second, ResponseHeaderTimeout: 5 * time.Second}}
			body := ex.Body.(*bufferedGate)
			s := &interimSink{sink: sink{keep: true}}
			out, err := c.RoundTrip(context.Background(), ex, s)
			if err != nil || s.status != tc.status || string(s.body) != tc.body || strings.Join(s.interim, ", ") != tc.interim {
				t.Fatalf("status %d body %q interim %q outcome %+v err %v", s.status, s.body, s.interim, out, err)
			}
			if body.allocs != 0 {
				t.Fatalf("answered allocates %v times a call", body.allocs)
			}
			if out.BodySkipped != refuse || c.Reusable() == refuse {
				t.Fatalf("body skipped %v, reusable %v", out.BodySkipped, c.Reusable())
			}
			if !refuse {
				if k := <-got; k != n {
					t.Fatalf("origin got %d body bytes, want %d", k, n)
				}
			}
		})
	}
}

// TestRefusedAfterInterim: the look past interim heads finds the first
// final status line, whatever the line ends (CRLF or a bare LF), and
// reports no refusal for what it cannot tell yet.
func TestRefusedAfterInterim(t *testing.T) {
	for _, tc := range []struct {
		b    string
		want bool
	}{
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 ", true},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 41", false},                    // status not whole yet
		{"HTTP/1.1 100 Continue\r\n\r", false},                                 // head not whole yet
		{"HTTP/1.1 100 Continue\r\nX: y\r\n", false},                           // head not whole yet
		{"HTTP/1.1 103 Early Hints\nLink: <a>\n\nHTTP/1.1 500 x", true},        // bare LFs
		{"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 204 x", false}, // a success
		{"HTTP/1.1 102 P\r\n\r\nHTTP/1.1 101 Switching\r\n\r\nHTTP/1.1 400 x", false},
		{"HTTP/1.1 100 C\r\n\r\nHTTP/1.1 100 C\r\n\r\nHTTP/1.1 302 x", true},
		{"HTTP/1.1 100 C\r\n\r\nGARBAGE GARBAGE", false}, // the reading reports it
		{"HTTP/1.1 401 x", true},
		{"HTTP/1.1 200 x", false},
	} {
		if got := refusedAfterInterim([]byte(tc.b)); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.b, got, tc.want)
		}
	}
}
