package parser_test

import (
	"strings"
	"testing"

	"github.com/valyala/bytebufferpool"

	"github.com/serverside-go/serverside/parser"
)

// TestEditsConnectionClose: Edits.ConnectionClose answers whether the
// head written with the edits says "Connection: close", the same as the
// head WriteRequestHead writes: the client's field when the edits keep
// it, or a field they set or add; not Proxy-Connection.
func TestEditsConnectionClose(t *testing.T) {
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)
	const (
		plain    = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
		closing  = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
		twoConns = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: X-A, CLOSE\r\n\r\n"
		proxy    = "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n"
	)
	keep := parser.HeaderSet(0).With(parser.HdrConnection)
	for _, c := range []struct {
		name, head string
		edit       func(*parser.Edits) // nil: no Edits at all
		want       bool
	}{
		{"plain, no edits", plain, nil, false},
		{"close, no edits", closing, nil, true},
		{"second field, no edits", twoConns, nil, true},
		{"Proxy-Connection", proxy, nil, false},
		{"close, stripped", closing, func(e *parser.Edits) { e.StripHopByHop = true }, false},
		{"close, kept", closing, func(e *parser.Edits) { e.StripHopByHop, e.Keep = true, keep }, true},
		{"close, removed", closing, func(e *parser.Edits) { e.Remove("connection") }, false},
		{"close, replaced", closing, func(e *parser.Edits) { e.Set("Connection", []byte("keep-alive")) }, false},
		{"close, added to", closing, func(e *parser.Edits) { e.Add("Connection", []byte("keep-alive")) }, true},
		{"set", plain, func(e *parser.Edits) { e.Set("Connection", []byte("close")) }, true},
		{"set over a stripped field", closing, func(e *parser.Edits) { e.StripHopByHop = true; e.Set("Connection", []byte("Close")) }, true},
		{"added in a list", plain, func(e *parser.Edits) { e.Add("connection", []byte("te, close ")) }, true},
		{"set, then removed", plain, func(e *parser.Edits) { e.Set("Connection", []byte("close")); e.Remove("Connection") }, true},
		{"an option like close", plain, func(e *parser.Edits) { e.Set("Connection", []byte("closed, x-close")) }, false},
		{"another field", plain, func(e *parser.Edits) { e.Set("X-Connection", []byte("close")) }, false},
	} {
		var r parser.Request
		if _, err := r.Parse([]byte(c.head)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var e *parser.Edits
		if c.edit != nil {
			e = new(parser.Edits)
			c.edit(e)
		}
		bb.Reset()
		if err := parser.WriteRequestHead(bb, &r, e); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		written := false
		for _, l := range strings.Split(strings.ToLower(bb.String()), "\r\n") {
			if v, ok := strings.CutPrefix(l, "connection:"); ok {
				for _, o := range strings.Split(v, ",") {
					written = written || strings.TrimSpace(o) == "close"
				}
			}
		}
		if written != c.want {
			t.Fatalf("%s: the written head says close %v, the case says %v:\n%s", c.name, written, c.want, bb.B)
		}
		if got := e.ConnectionClose(&r.Header); got != c.want {
			t.Errorf("%s: ConnectionClose %v, want %v", c.name, got, c.want)
		}
	}
}
