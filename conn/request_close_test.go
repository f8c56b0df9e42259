package conn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/serverside-go/serverside/parser"
)

// TestRequestCloseThroughEdits: a request asks to close when the head it
// forwards says "Connection: close", whether that field is the client's
// (kept) or one the caller's edits set or add. Such a connection is not
// reused when the upstream ignores the close and answers keep-alive, and
// when the upstream agrees the close is the request's (CloseAsked false).
// A client's "close" that the edits strip, remove or replace is not
// forwarded, and asks nothing.
func TestRequestCloseThroughEdits(t *testing.T) {
	checkLeaks(t)
	edits := func(strip bool, f func(e *parser.Edits)) *parser.Edits {
		e := &parser.Edits{StripHopByHop: strip}
		if f != nil {
			f(e)
		}
		return e
	}
	closeValue := []byte("close")
	const get, getClose = "GET / HTTP/1.1\r\nHost: o\r\n\r\n", "GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name  string
		head  string
		edits *parser.Edits
		asked bool
	}{
		{"set by an edit", get, edits(true, func(e *parser.Edits) { e.Set("Connection", closeValue) }), true},
		{"added by an edit", get, edits(false, func(e *parser.Edits) { e.Add("Connection", []byte("foo, Close")) }), true},
		{"client's, no edits", getClose, nil, true},
		{"client's, kept", getClose, &parser.Edits{StripHopByHop: true, Keep: parser.HeaderSet(0).With(parser.HdrConnection)}, true},
		{"client's, stripped", getClose, edits(true, nil), false},
		{"client's, removed", getClose, edits(false, func(e *parser.Edits) { e.Remove("Connection") }), false},
		{"client's, replaced", getClose, edits(false, func(e *parser.Edits) { e.Set("Connection", []byte("keep-alive")) }), false},
		{"none", get, edits(true, nil), false},
	} {
		for _, agree := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/upstream agrees=%v", tc.name, agree), func(t *testing.T) {
				sent := make(chan bool, 1)
				o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
					lines, err := readHead(br)
					if err != nil {
						return
					}
					closing := false
					for _, l := range lines {
						closing = closing || strings.HasPrefix(strings.ToLower(l), "connection:") && strings.Contains(strings.ToLower(l), "close")
					}
					sent <- closing
					if agree && closing {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
						return
					}
					// Keep-alive, the close ignored if it was asked.
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					_, _ = readHead(br)
				})
				c := dial(t, o.addr())
				out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, tc.head), Edits: tc.edits}, &sink{})
				if err != nil || out.Status != 200 {
					t.Fatalf("status %d, err %v", out.Status, err)
				}
				if closing := <-sent; closing != tc.asked {
					t.Fatalf("the upstream saw a close %v, want %v", closing, tc.asked)
				}
				if c.Reusable() == tc.asked || out.CloseAsked {
					t.Errorf("reusable %v, CloseAsked %v; want reusable %v, CloseAsked false", c.Reusable(), out.CloseAsked, !tc.asked)
				}
			})
		}
	}
}
