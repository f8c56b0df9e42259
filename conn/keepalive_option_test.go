package conn

import (
	"strings"
	"testing"

	"github.com/serverside-go/serverside/parser"
	"github.com/valyala/bytebufferpool"
)

// TestKeepAliveOption: a forwarded head that would carry no Connection
// field gets "Connection: keep-alive" (which asks Apache for its idle
// timeout); one that carries a Connection field of its own, from the
// head (kept) or from an edit, gets no other, and CONNECT gets none.
func TestKeepAliveOption(t *testing.T) {
	keep := &parser.Edits{StripHopByHop: true, Keep: parser.HeaderSet(0).With(parser.HdrConnection)}
	strip := &parser.Edits{StripHopByHop: true}
	upgrade := &parser.Edits{StripHopByHop: true, Keep: parser.HeaderSet(0).With(parser.HdrUpgrade)}
	upgrade.Add("Connection", []byte("upgrade"))
	removed := &parser.Edits{}
	removed.Remove("Connection")
	set := &parser.Edits{StripHopByHop: true}
	set.Set("Connection", []byte("close"))
	for _, tc := range []struct {
		name, head string
		edits      *parser.Edits
		want       []string // the Connection lines sent
	}{
		{"none", "GET / HTTP/1.1\r\nHost: o\r\n\r\n", nil, []string{"Connection: keep-alive"}},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", strip, []string{"Connection: keep-alive"}},
		{"close, no edits", "GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", nil, []string{"Connection: close"}},
		{"close, kept", "GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", keep, []string{"Connection: close"}},
		{"close, stripped", "GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", strip, []string{"Connection: keep-alive"}},
		{"close, removed", "GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", removed, []string{"Connection: keep-alive"}},
		{"set by an edit", "GET / HTTP/1.1\r\nHost: o\r\n\r\n", set, []string{"Connection: close"}},
		{"upgrade", "GET / HTTP/1.1\r\nHost: o\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", upgrade, []string{"Connection: upgrade"}},
		{"CONNECT", "CONNECT o:443 HTTP/1.1\r\nHost: o:443\r\n\r\n", strip, nil},
	} {
		var c Conn
		ex := &Exchange{Head: request(t, tc.head), Edits: tc.edits}
		var bb bytebufferpool.ByteBuffer
		if err := parser.WriteRequestHead(&bb, ex.Head, c.edits(ex)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, l := range strings.Split(string(bb.B), "\r\n") {
			if strings.HasPrefix(strings.ToLower(l), "connection:") {
				got = append(got, l)
			}
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: Connection lines %q, want %q\n%s", tc.name, got, tc.want, bb.B)
		}
	}
}
