package parser

import (
	"errors"
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

func TestSerializerDropsHTTP10Expect(t *testing.T) {
	// An HTTP/1.0 request's Expect is ignored (RFC 9110 §10.1.1); the
	// head goes on as HTTP/1.1, where it would ask for a 100 Continue the
	// client never asked for. An HTTP/1.1 request keeps it.
	for _, c := range []struct{ in, want string }{
		{"POST /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", "POST /u HTTP/1.1\r\nContent-Length: 1\r\n\r\n"},
		{"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
			"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"},
	} {
		var r Request
		if _, err := r.Parse([]byte(c.in)); err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		bb := bytebufferpool.Get()
		if err := WriteRequestHead(bb, &r, nil); err != nil || string(bb.B) != c.want {
			t.Errorf("%q: got %q %v, want %q", c.in, bb.B, err, c.want)
		}
		bytebufferpool.Put(bb)
	}
}

func TestConnectionOptionsBounded(t *testing.T) {
	// Marking named fields costs options × fields: the options are capped.
	in := "GET / HTTP/1.1\r\nHost: a\r\nConnection: a1,a2,a3,a4,a5,a6,a7,a8,a9,b1,b2,b3,b4,b5,b6,b7,b8\r\n\r\n"
	var r Request
	if _, err := r.Parse([]byte(in)); !errors.Is(err, ErrTooManyConnOptions) {
		t.Fatalf("got %v, want ErrTooManyConnOptions", err)
	}
}

func TestSwitchNeedsUpgrade(t *testing.T) {
	var r Response
	if _, err := r.Parse([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); !errors.Is(err, ErrBadSwitch) {
		t.Fatalf("got %v, want ErrBadSwitch", err)
	}
	r.Reset()
	if _, err := r.Parse([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")); err != nil || r.Framing() != FramingTunnel {
		t.Fatalf("got %v %v, want tunnel", err, r.Framing())
	}
}

func TestFragmentInTargetRejected(t *testing.T) {
	var r Request
	if _, err := r.Parse([]byte("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n")); !errors.Is(err, ErrBadTarget) {
		t.Fatalf("got %v, want ErrBadTarget", err)
	}
}

func TestViewsFollowTheLastBuffer(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nHost: abc\r\n\r\n")
	var r Request
	if _, err := r.Parse(in); err != nil {
		t.Fatal(err)
	}
	moved := append([]byte(nil), in...)
	for i := range in {
		in[i] = 'X'
	}
	if _, err := r.Parse(moved); err != nil || string(r.Get(HdrHost)) != "abc" {
		t.Fatalf("after re-Parse: %v %q", err, r.Get(HdrHost))
	}
	if _, err := r.Parse(moved[:5]); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("shorter buffer: got %v, want ErrShortBuffer", err)
	}
}

func TestFoldStaysUnfoldedInAFreshCopy(t *testing.T) {
	// A caller that rebuilds the buffer from the bytes as received gets
	// the fold replaced again, so no CR or LF can reach the serializer.
	raw := "HTTP/1.1 200 OK\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
	var r Response
	if _, err := r.Parse([]byte(raw[:60])); err != ErrNeedMore {
		t.Fatalf("first part: %v", err)
	}
	if _, err := r.Parse([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if got := string(r.Peek([]byte("X"))); got != "a   Transfer-Encoding: chunked" {
		t.Fatalf("X = %q", got)
	}
}

func TestEditsAreValidated(t *testing.T) {
	var r Request
	if _, err := r.Parse([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)
	for name, e := range map[string]*Edits{
		"CRLF in value": func() *Edits { var e Edits; e.Add("X", []byte("a\r\nTransfer-Encoding: chunked")); return &e }(),
		"bad name":      func() *Edits { var e Edits; e.Add("X Y", []byte("a")); return &e }(),
		"bad target":    {Target: []byte("/ HTTP/1.1\r\nHost: evil")},
		"bad method":    {Method: []byte("GE T")},
	} {
		bb.Reset()
		if err := WriteRequestHead(bb, &r, e); !errors.Is(err, ErrBadEdit) || len(bb.B) != 0 {
			t.Errorf("%s: got %v and %q, want ErrBadEdit and nothing written", name, err, bb.B)
		}
	}
	// A framing edit replaces every parsed framing field: one framing.
	var e Edits
	e.Add("Transfer-Encoding", []byte("chunked"))
	bb.Reset()
	if err := WriteRequestHead(bb, &r, &e); err != nil {
		t.Fatal(err)
	}
	if want := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"; string(bb.B) != want {
		t.Fatalf("got %q, want %q", bb.B, want)
	}
	// So does a later framing edit replace an earlier one: a caller's
	// Content-Length, then the framing of the body actually sent (what the
	// engine adds to a copy of the caller's edits), is one framing, the
	// last; a Remove drops an earlier Set of its field.
	for _, c := range []struct {
		edit func(*Edits)
		want string
	}{
		{func(e *Edits) { e.Set("Content-Length", []byte("999")); e.Set("Content-Length", []byte("3")) }, "Content-Length: 3\r\n"},
		{func(e *Edits) { e.Set("Content-Length", []byte("999")); e.Set("Transfer-Encoding", []byte("chunked")) }, "Transfer-Encoding: chunked\r\n"},
		{func(e *Edits) { e.Add("Transfer-Encoding", []byte("gzip")); e.Set("Content-Length", []byte("0")) }, "Content-Length: 0\r\n"},
		{func(e *Edits) { e.Set("Content-Length", []byte("999")); e.Remove("Content-Length") }, ""},
	} {
		var e Edits
		c.edit(&e)
		bb.Reset()
		if err := WriteRequestHead(bb, &r, &e); err != nil {
			t.Fatal(err)
		}
		if want := "POST / HTTP/1.1\r\nHost: a\r\n" + c.want + "\r\n"; string(bb.B) != want {
			t.Errorf("got %q, want %q", bb.B, want)
		}
	}
}
