package parser

import (
	"testing"

	"github.com/valyala/bytebufferpool"
)

// Decisions a proxy takes where RFC 9110/9112 leave room or where
// following the letter would open a hole; docs/parser.md lists them.

func TestConnectionCannotStripFraming(t *testing.T) {
	// RFC 9110 §7.6.1 says to drop fields named in Connection; naming
	// Content-Length or Host would strip the framing or the target of a
	// message that is still forwarded, so those options are ignored.
	in := "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, X-Hop\r\nX-Hop: 1\r\nContent-Length: 3\r\n\r\n"
	var r Request
	if _, err := r.Parse([]byte(in)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < r.Len(); i++ {
		want := r.ID(i) == HdrConnection || string(r.Name(i)) == "X-Hop"
		if got := r.IsHopByHop(i); got != want {
			t.Errorf("IsHopByHop(%s) = %v, want %v", r.Name(i), got, want)
		}
	}
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)
	WriteRequestHead(bb, &r, &Edits{StripHopByHop: true})
	if want := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"; string(bb.B) != want {
		t.Fatalf("got %q, want %q", bb.B, want)
	}
}

func TestConnectHasNoContent(t *testing.T) {
	// RFC 9110 §9.3.6: CONNECT has no content; bytes after the head are
	// tunnel data even when a length field is present.
	for _, in := range []string{
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		var r Request
		if _, err := r.Parse([]byte(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if r.Framing() != FramingNone || r.ContentLength() != -1 {
			t.Errorf("%q: framing %v length %d, want none -1", in, r.Framing(), r.ContentLength())
		}
	}
}

func TestSerializerNormalizesContentLength(t *testing.T) {
	// Identical repeats fold (RFC 9110 §8.6); the next hop gets one
	// canonical value so it cannot read the list differently.
	in := "HTTP/1.1 200 OK\r\nContent-Length: 007, 7\r\nX: y\r\ncontent-length: 7\r\n\r\n"
	var r Response
	if _, err := r.Parse([]byte(in)); err != nil {
		t.Fatal(err)
	}
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)
	WriteResponseHead(bb, &r, nil)
	if want := "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX: y\r\n\r\n"; string(bb.B) != want {
		t.Fatalf("got %q, want %q", bb.B, want)
	}
}
