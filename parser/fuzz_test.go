package parser_test

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"github.com/valyala/bytebufferpool"

	"github.com/serverside-go/serverside/parser"
)

// Seeds shared by the fuzz targets and the differential targets.
var (
	fzRequestSeeds = []string{
		// A typical browser request.
		"GET /search?q=serverside&lang=en HTTP/1.1\r\n" +
			"Host: www.example.com\r\n" +
			"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
			"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
			"Accept-Language: en-US,en;q=0.5\r\n" +
			"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
			"Connection: keep-alive\r\n" +
			"Cookie: session=4f1b2c; theme=dark\r\n" +
			"Upgrade-Insecure-Requests: 1\r\n\r\n",
		// Absolute-form request to a forward proxy.
		"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n" +
			"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n",
		// CONNECT for a TLS tunnel.
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nTrailer: X-Sum\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 3, 3\r\n\r\n",
		// Smuggling vectors, all of which must be rejected.
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://user@evil/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	}
	fzResponseSeeds = []string{
		// A typical origin response.
		"HTTP/1.1 200 OK\r\nDate: Mon, 25 Nov 2024 09:30:00 GMT\r\nServer: origin\r\n" +
			"Content-Type: text/html; charset=utf-8\r\nContent-Length: 1234\r\n" +
			"Cache-Control: max-age=60\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=\"v\"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
		"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until close",
		"HTTP/1.1 200 OK\nX-Folded: a\n  b\r\n\tc\nContent-Length: 0\n\n",
		"HTTP/1.1 200\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n",
		// Smuggling and splitting vectors.
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\rContent-Length: 0\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
	}
	fzChunkedSeeds = []string{
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"4;name=value;flag;q=\"quoted \\\" str\"\r\nwiki\r\n0 ; last\r\nExpires: never\r\nX-Sum: abc\r\n\r\n",
		"A\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
		"000010\r\n0123456789abcdef\r\n0\r\n\r\n",
		// Malformed framing that smuggling relies on.
		"5\nhello\n0\n\n",
		"5\r\nhelloX\r\n0\r\n\r\n",
		"fffffffffffffffff\r\n",
		"-1\r\n",
		"0x5\r\nhello\r\n",
		"5 ;a=b\r\nhello\r\n0\r\n\r\n",
		"1;a=\"unterminated\r\nx\r\n",
		"0\r\nBad Name: v\r\n\r\n",
		"0\r\n\r\r\n",
	}
)

// fzOptions turns a fuzzed byte into parser options, so the fuzzer also
// explores strict mode and tiny limits.
func fzOptions(o byte) parser.Options {
	var opts parser.Options
	opts.StrictCRLF = o&1 != 0
	opts.RejectObsFold = o&2 != 0
	if o&4 != 0 {
		opts.MaxHeadBytes = 24 + int(o>>4)*8
	}
	if o&8 != 0 {
		opts.MaxFields = 1 + int(o>>4)%4
	}
	return opts
}

var fzMethods = [...]parser.Method{parser.MethodGet, parser.MethodHead, parser.MethodConnect}

// fzField is one field line as seen through the public API.
type fzField struct {
	Name, Value string
	ID          parser.HeaderID
	Hop         bool
}

// fzHead is everything observable about one parse, for comparison.
type fzHead struct {
	N      int
	Err    string // rule message, "need more", or ""
	Offset int
	State  parser.State

	HeadLen                                 int
	Version                                 parser.Version
	Method, Target, Scheme, Authority, Path string
	MethodID                                parser.Method
	Form                                    parser.TargetForm
	Status                                  int
	Reason                                  string
	Fields                                  []fzField
	Framing                                 parser.Framing
	ContentLength                           int64
	Close, KeepAlive, Upgrade, E100, EOther bool
	KATimeout, KAMax                        int
}

func fzCopy(b []byte) []byte { return append(make([]byte, 0, len(b)), b...) }

// fzErr records the error part of a parse and checks that rule errors are
// well formed.
func fzErr(t *testing.T, s *fzHead, err error) {
	t.Helper()
	switch {
	case err == nil:
	case err == parser.ErrNeedMore:
		s.Err = "need more"
	default:
		r := parser.Rule(err)
		if r == nil {
			t.Fatalf("error %v is neither ErrNeedMore nor a rule", err)
		}
		if !errors.Is(err, r) {
			t.Fatalf("errors.Is(%v, its rule) is false", err)
		}
		var se *parser.SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("rule error %v is not a *SyntaxError", err)
		}
		switch r.Status {
		case 400, 414, 431, 501, 505:
		default:
			t.Fatalf("rule %q has status %d", r.Msg, r.Status)
		}
		s.Err, s.Offset, s.State = r.Msg, se.Offset, se.State
	}
}

func fzSnapHeader(h *parser.Header, s *fzHead) {
	s.HeadLen = h.HeadLen()
	s.Version = h.Version()
	for i := 0; i < h.Len(); i++ {
		s.Fields = append(s.Fields, fzField{string(h.Name(i)), string(h.Value(i)), h.ID(i), h.IsHopByHop(i)})
	}
	s.Framing = h.Framing()
	s.ContentLength = h.ContentLength()
	s.Close = h.ConnectionClose()
	s.Upgrade = h.Upgrade()
	s.E100 = h.ExpectContinue()
	s.EOther = h.ExpectOther()
}

func fzSnapRequest(t *testing.T, r *parser.Request, n int, err error) fzHead {
	t.Helper()
	s := fzHead{N: n}
	fzErr(t, &s, err)
	if err != nil {
		return s
	}
	fzSnapHeader(&r.Header, &s)
	s.Method, s.Target = string(r.Method()), string(r.Target())
	s.Scheme, s.Authority, s.Path = string(r.Scheme()), string(r.Authority()), string(r.Path())
	s.MethodID, s.Form = r.MethodID(), r.Form()
	s.KeepAlive = r.KeepAlive()
	return s
}

func fzSnapResponse(t *testing.T, r *parser.Response, n int, err error) fzHead {
	t.Helper()
	s := fzHead{N: n}
	fzErr(t, &s, err)
	if err != nil {
		return s
	}
	fzSnapHeader(&r.Header, &s)
	s.Status, s.Reason = r.Status(), string(r.Reason())
	s.KeepAlive = r.KeepAlive()
	s.KATimeout, s.KAMax = r.KeepAliveHint()
	return s
}

// fzSplit derives a split point in [0, len(b)] from the input itself, so
// a failing input reproduces with the same split.
func fzSplit(b []byte) int {
	h := fnv.New32a()
	h.Write(b)
	return int(h.Sum32() % uint32(len(b)+1))
}

// fzParser abstracts over Request and Response for the three parse modes.
type fzParser interface {
	Reset()
	Parse([]byte) (int, error)
}

// fzResponse re-arms the request method after each Reset, as a caller
// does for every exchange.
type fzResponse struct {
	*parser.Response
	m parser.Method
}

func (r fzResponse) Reset() {
	r.Response.Reset()
	r.SetRequestMethod(r.m)
}

// fzModes parses input whole, byte by byte (growing prefix of one buffer)
// and in two calls at a derived split point (the second call on a new,
// larger buffer holding the first one's bytes, as after a buffer grows), and
// returns the buffer each mode parsed last. Every parse works on its own
// copy: Response.Parse may rewrite obs-fold bytes in place.
func fzModes(t *testing.T, p fzParser, input []byte, snap func(n int, err error) fzHead) (fzHead, []byte) {
	t.Helper()

	// Whole.
	p.Reset()
	whole := fzCopy(input)
	n, err := p.Parse(whole)
	want := snap(n, err)
	fzSticky(t, p, whole, n, err)

	// Byte by byte.
	p.Reset()
	bb := fzCopy(input)
	n, err = 0, parser.ErrNeedMore
	for k := 0; k <= len(bb) && err == parser.ErrNeedMore; k++ {
		n, err = p.Parse(bb[:k])
		if err == parser.ErrNeedMore && n != 0 {
			t.Fatalf("ErrNeedMore with n = %d", n)
		}
	}
	if got := snap(n, err); !reflect.DeepEqual(got, want) {
		t.Fatalf("byte-by-byte differs from whole parse\nwhole: %+v\nbytes: %+v", want, got)
	}

	// Two calls at a derived split point.
	p.Reset()
	k := fzSplit(input)
	first := fzCopy(input[:k])
	n, err = p.Parse(first)
	second := make([]byte, len(input))
	copy(second, first) // keeps any in-place rewrite of the first call
	copy(second[k:], input[k:])
	if err == parser.ErrNeedMore {
		n, err = p.Parse(second)
	} else {
		second = first
	}
	if got := snap(n, err); !reflect.DeepEqual(got, want) {
		t.Fatalf("split at %d differs from whole parse\nwhole: %+v\nsplit: %+v", k, want, got)
	}
	// In-place rewrites (obs-fold) must not depend on how input arrived.
	if !bytes.Equal(bb, whole) || !bytes.Equal(second, whole[:len(second)]) {
		t.Fatalf("buffers differ after parsing\nwhole: %q\nbytes: %q\nsplit: %q", whole, bb, second)
	}

	// Leave p holding a parse of a fresh copy for the caller's checks.
	p.Reset()
	final := fzCopy(input)
	n, err = p.Parse(final)
	if got := snap(n, err); !reflect.DeepEqual(got, want) {
		t.Fatalf("second whole parse differs\nfirst:  %+v\nsecond: %+v", want, got)
	}
	return want, final
}

// fzSticky checks that calling Parse again after a result repeats it.
func fzSticky(t *testing.T, p fzParser, buf []byte, n int, err error) {
	t.Helper()
	if err == parser.ErrNeedMore {
		return
	}
	n2, err2 := p.Parse(buf)
	if n2 != n && err == nil || err2 != err {
		t.Fatalf("second Parse: (%d, %v), first: (%d, %v)", n2, err2, n, err)
	}
}

// fzWithin reports whether view v lies inside head (nil views are absent
// values and always pass).
func fzWithin(head, v []byte) bool {
	if v == nil {
		return true
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(head)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	return p >= base && p+uintptr(len(v)) <= base+uintptr(len(head))
}

func fzIsToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte("\"(),/:;<=>?@[\\]{}"), c) >= 0 {
			return false
		}
	}
	return true
}

// fzCheckHeader checks the invariants of a successful parse common to both
// directions.
func fzCheckHeader(t *testing.T, h *parser.Header, buf []byte, n int, opts parser.Options) {
	t.Helper()
	if n != h.HeadLen() || n <= 0 || n > len(buf) {
		t.Fatalf("head length %d, HeadLen %d, input %d", n, h.HeadLen(), len(buf))
	}
	if !h.Done() || h.State() != parser.StateDone {
		t.Fatalf("success but state %v", h.State())
	}
	head := h.Raw()
	if len(head) != n || !fzWithin(buf[:n], head) || head[n-1] != '\n' {
		t.Fatalf("Raw() is not the head: %q", head)
	}
	if opts.StrictCRLF && (n < 4 || string(head[n-4:]) != "\r\n\r\n") {
		t.Fatalf("strict head does not end in CRLF CRLF: %q", head)
	}
	if v := h.Version(); v.Major != 1 || v.Minor > 1 {
		t.Fatalf("version %v", v)
	}
	max := opts.MaxFields
	if max == 0 {
		max = parser.DefaultMaxFields
	}
	if h.Len() > max {
		t.Fatalf("%d fields, limit %d", h.Len(), max)
	}
	seen := map[parser.HeaderID]bool{}
	for i := 0; i < h.Len(); i++ {
		name, val := h.Name(i), h.Value(i)
		if !fzWithin(head, name) || !fzWithin(head, val) {
			t.Fatalf("field %d view outside the head", i)
		}
		if !fzIsToken(name) {
			t.Fatalf("field name %q is not a token", name)
		}
		if id := parser.LookupHeaderID(name); id != h.ID(i) {
			t.Fatalf("field %q: ID %v, LookupHeaderID %v", name, h.ID(i), id)
		}
		if len(val) > 0 && (val[0] == ' ' || val[0] == '\t' || val[len(val)-1] == ' ' || val[len(val)-1] == '\t') {
			t.Fatalf("value %q not trimmed", val)
		}
		for _, c := range val {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Fatalf("value %q holds control byte %#x", val, c)
			}
		}
		if id := h.ID(i); id != parser.HdrOther && !seen[id] {
			seen[id] = true
			if !h.Has(id) || !bytes.Equal(h.Get(id), val) || !fzWithin(head, h.Get(id)) {
				t.Fatalf("Get(%v) = %q, first field says %q", id, h.Get(id), val)
			}
		}
		if got := h.Peek(name); !bytes.Equal(got, h.Peek(bytes.ToUpper(name))) {
			t.Fatalf("Peek is case-sensitive for %q", name)
		}
	}
	for id := parser.HeaderID(1); id.String() != ""; id++ {
		if h.Has(id) != seen[id] {
			t.Fatalf("Has(%v) = %v, fields say %v", id, h.Has(id), seen[id])
		}
	}
	switch h.Framing() {
	case parser.FramingLength:
		if h.ContentLength() < 0 || !h.Has(parser.HdrContentLength) || h.Has(parser.HdrTransferEncoding) {
			t.Fatalf("length framing with CL %d", h.ContentLength())
		}
	case parser.FramingChunked:
		if !h.Has(parser.HdrTransferEncoding) || h.Has(parser.HdrContentLength) || !h.Version().AtLeast11() {
			t.Fatalf("chunked framing without a sole Transfer-Encoding on HTTP/1.1")
		}
	}
	if h.Framing() != parser.FramingLength && h.Framing() != parser.FramingNone && h.ContentLength() != -1 {
		t.Fatalf("framing %v with content length %d", h.Framing(), h.ContentLength())
	}
}

func fzCheckRequest(t *testing.T, r *parser.Request, buf []byte, n int, opts parser.Options) {
	t.Helper()
	fzCheckHeader(t, &r.Header, buf, n, opts)
	head := r.Raw()
	for _, v := range [][]byte{r.Method(), r.Target(), r.Scheme(), r.Authority(), r.Path()} {
		if !fzWithin(head, v) {
			t.Fatalf("request view %q outside the head", v)
		}
	}
	if !fzIsToken(r.Method()) || len(r.Target()) == 0 {
		t.Fatalf("method %q target %q", r.Method(), r.Target())
	}
	for _, c := range r.Target() {
		if c <= ' ' || c == 0x7f {
			t.Fatalf("target %q holds %#x", r.Target(), c)
		}
	}
	switch r.Form() {
	case parser.FormOrigin:
		if r.Target()[0] != '/' || !bytes.Equal(r.Path(), r.Target()) {
			t.Fatalf("origin-form target %q path %q", r.Target(), r.Path())
		}
	case parser.FormAbsolute:
		want := string(r.Scheme()) + "://" + string(r.Authority()) + string(r.Path())
		if want != string(r.Target()) || len(r.Authority()) == 0 || bytes.IndexByte(r.Authority(), '@') >= 0 {
			t.Fatalf("absolute-form target %q split as %q", r.Target(), want)
		}
	case parser.FormAuthority:
		if r.MethodID() != parser.MethodConnect || !bytes.Equal(r.Authority(), r.Target()) {
			t.Fatalf("authority-form target %q for %q", r.Target(), r.Method())
		}
	case parser.FormAsterisk:
		if r.MethodID() != parser.MethodOptions || string(r.Target()) != "*" {
			t.Fatalf("asterisk-form for %q %q", r.Method(), r.Target())
		}
	}
	if r.MethodID() == parser.MethodConnect && r.Form() != parser.FormAuthority {
		t.Fatalf("CONNECT with %v", r.Form())
	}
	hosts := 0
	r.Each(parser.HdrHost, func([]byte) bool { hosts++; return true })
	if hosts > 1 || hosts == 0 && r.Version().AtLeast11() {
		t.Fatalf("%d Host fields in %v", hosts, r.Version())
	}
	switch r.Framing() {
	case parser.FramingNone, parser.FramingLength, parser.FramingChunked:
	default:
		t.Fatalf("request framing %v", r.Framing())
	}
	// A CONNECT request has no content (RFC 9110 §9.3.6): what follows
	// its head is tunnel data, whatever a length field says.
	if r.Framing() == parser.FramingNone && r.MethodID() != parser.MethodConnect &&
		(r.Has(parser.HdrContentLength) || r.Has(parser.HdrTransferEncoding)) {
		t.Fatalf("request with framing fields but no body")
	}
	if r.MethodID() == parser.MethodConnect && (r.Framing() != parser.FramingNone || r.ContentLength() != -1) {
		t.Fatalf("CONNECT with framing %v length %d", r.Framing(), r.ContentLength())
	}
}

func fzCheckResponse(t *testing.T, r *parser.Response, buf []byte, n int, opts parser.Options, m parser.Method) {
	t.Helper()
	fzCheckHeader(t, &r.Header, buf, n, opts)
	if !fzWithin(r.Raw(), r.Reason()) {
		t.Fatalf("reason outside the head")
	}
	st := r.Status()
	if st < 100 || st > 999 {
		t.Fatalf("status %d", st)
	}
	f := r.Framing()
	switch {
	case st == 101 || m == parser.MethodConnect && st/100 == 2:
		if f != parser.FramingTunnel {
			t.Fatalf("status %d to %v: framing %v", st, m, f)
		}
	case m == parser.MethodHead || st < 200 || st == 204 || st == 304:
		if f != parser.FramingNone {
			t.Fatalf("status %d to %v: framing %v", st, m, f)
		}
	case f == parser.FramingNone || f == parser.FramingTunnel:
		t.Fatalf("status %d to %v: framing %v", st, m, f)
	}
	if r.KeepAlive() && (f == parser.FramingUntilClose || f == parser.FramingTunnel || r.ConnectionClose()) {
		t.Fatalf("keep-alive with framing %v", f)
	}
}

// fzFieldsOf lists name/value/id of every field, the part serialization
// must preserve.
func fzFieldsOf(h *parser.Header, skip func(i int) bool) []fzField {
	var out []fzField
	sawCL := false
	for i := 0; i < h.Len(); i++ {
		if skip != nil && skip(i) {
			continue
		}
		f := fzField{Name: string(h.Name(i)), Value: string(h.Value(i)), ID: h.ID(i)}
		if f.ID == parser.HdrContentLength {
			// The serializer forwards the parsed length once, normalized,
			// and drops one that frames nothing and did not parse.
			if sawCL || h.ContentLength() < 0 {
				continue
			}
			sawCL, f.Value = true, strconv.FormatInt(h.ContentLength(), 10)
		}
		out = append(out, f)
	}
	return out
}

// fzReparseOpts are the options a serialized head is parsed back with: the
// serializer must emit CRLF and never fold.
var fzReparseOpts = parser.Options{StrictCRLF: true, RejectObsFold: true, Limits: parser.Limits{MaxHeadBytes: 1 << 20, MaxFields: 1000}}

func fzRoundTripRequest(t *testing.T, r *parser.Request) {
	t.Helper()
	bb := &bytebufferpool.ByteBuffer{}
	parser.WriteRequestHead(bb, r, nil)
	var r2 parser.Request
	r2.Opts = fzReparseOpts
	n, err := r2.Parse(bb.B)
	if !r.Version().AtLeast11() && !r.Has(parser.HdrHost) {
		// Forwarded as HTTP/1.1, the request now needs a Host field
		// (RFC 9112 §3.2), which the caller must add.
		if !errors.Is(err, parser.ErrMissingHost) {
			t.Fatalf("HTTP/1.0 request without Host re-serialized as %q: %v", bb.B, err)
		}
		var e parser.Edits
		e.Add("Host", r.Authority())
		bb.Reset()
		parser.WriteRequestHead(bb, r, &e)
		r2.Reset()
		n, err = r2.Parse(bb.B)
	}
	if err != nil || n != len(bb.B) {
		t.Fatalf("re-parse of %q: n=%d err=%v", bb.B, n, err)
	}
	if !bytes.Equal(r2.Method(), r.Method()) || !bytes.Equal(r2.Target(), r.Target()) || r2.Form() != r.Form() ||
		!bytes.Equal(r2.Authority(), r.Authority()) || r2.Framing() != r.Framing() || r2.ContentLength() != r.ContentLength() {
		t.Fatalf("re-parse of %q changed the request line or framing", bb.B)
	}
	got, want := fzFieldsOf(&r2.Header, nil), fzFieldsOf(&r.Header, nil)
	if r.MethodID() == parser.MethodConnect {
		// CONNECT has no content: its framing fields are not forwarded.
		want = slices.DeleteFunc(want, func(f fzField) bool { return f.ID == parser.HdrTransferEncoding })
	}
	if !r.Version().AtLeast11() {
		// An HTTP/1.0 request's Expect is ignored, and not forwarded.
		want = slices.DeleteFunc(want, func(f fzField) bool { return f.ID == parser.HdrExpect })
	}
	if !r.Has(parser.HdrHost) && !r.Version().AtLeast11() {
		want = append(want, fzField{Name: "Host", Value: string(r.Authority()), ID: parser.HdrHost})
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("re-parse of %q changed the fields\nwant %+v\ngot  %+v", bb.B, want, got)
	}

	// Hop-by-hop stripping drops exactly the hop-by-hop fields.
	e := parser.Edits{StripHopByHop: true}
	bb.Reset()
	parser.WriteRequestHead(bb, r, &e)
	r2.Reset()
	if _, err := r2.Parse(bb.B); err != nil && !errors.Is(err, parser.ErrMissingHost) {
		t.Fatalf("re-parse of stripped %q: %v", bb.B, err)
	} else if err == nil {
		skip := func(i int) bool {
			return r.IsHopByHop(i) || r.ID(i) == parser.HdrExpect && !r.Version().AtLeast11()
		}
		if got, want := fzFieldsOf(&r2.Header, nil), fzFieldsOf(&r.Header, skip); !reflect.DeepEqual(got, want) {
			t.Fatalf("stripped head %q\nwant %+v\ngot  %+v", bb.B, want, got)
		}
	}
}

func fzRoundTripResponse(t *testing.T, r *parser.Response, m parser.Method) {
	t.Helper()
	bb := &bytebufferpool.ByteBuffer{}
	parser.WriteResponseHead(bb, r, nil)
	var r2 parser.Response
	r2.Opts = fzReparseOpts
	r2.SetRequestMethod(m)
	n, err := r2.Parse(bb.B)
	if err != nil || n != len(bb.B) {
		t.Fatalf("re-parse of %q: n=%d err=%v", bb.B, n, err)
	}
	if r2.Status() != r.Status() || !bytes.Equal(r2.Reason(), r.Reason()) || r2.Framing() != r.Framing() ||
		r2.ContentLength() != r.ContentLength() {
		t.Fatalf("re-parse of %q changed status, reason or framing: %d %q %v %d", bb.B,
			r2.Status(), r2.Reason(), r2.Framing(), r2.ContentLength())
	}
	if got, want := fzFieldsOf(&r2.Header, nil), fzFieldsOf(&r.Header, nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("re-parse of %q changed the fields\nwant %+v\ngot  %+v", bb.B, want, got)
	}
}

func FuzzRequest(f *testing.F) {
	for _, s := range fzRequestSeeds {
		f.Add([]byte(s), byte(0))
	}
	f.Add([]byte(fzRequestSeeds[0]), byte(1))    // strict CRLF
	f.Add([]byte(fzRequestSeeds[0]), byte(0x3c)) // tiny limits
	f.Fuzz(func(t *testing.T, input []byte, o byte) {
		opts := fzOptions(o)
		r := &parser.Request{}
		r.Opts = opts
		snap := func(n int, err error) fzHead { return fzSnapRequest(t, r, n, err) }
		want, buf := fzModes(t, r, input, snap)
		if want.Err != "" {
			return
		}
		fzCheckRequest(t, r, buf, want.N, opts)
		fzRoundTripRequest(t, r)
	})
}

func FuzzResponse(f *testing.F) {
	for _, s := range fzResponseSeeds {
		for m := range fzMethods {
			f.Add([]byte(s), byte(m), byte(0))
		}
	}
	f.Add([]byte(fzResponseSeeds[8]), byte(0), byte(2)) // folded, RejectObsFold
	f.Fuzz(func(t *testing.T, input []byte, mb, o byte) {
		opts := fzOptions(o)
		m := fzMethods[int(mb)%len(fzMethods)]
		r := &parser.Response{}
		r.Opts = opts
		r.SetRequestMethod(m)
		snap := func(n int, err error) fzHead { return fzSnapResponse(t, r, n, err) }
		want, buf := fzModes(t, fzResponse{r, m}, input, snap)
		if want.Err != "" {
			return
		}
		fzCheckResponse(t, r, buf, want.N, opts, m)
		fzRoundTripResponse(t, r, m)
	})
}

// fzChunkResult is everything observable about one chunked decode.
type fzChunkResult struct {
	Body     string
	Trailer  string
	Done     bool
	Consumed int64
	BodyLen  int64
	Err      string
	Offset   int
	State    parser.State
}

// fzDecode feeds in to d in pieces whose sizes next returns, checking the
// contract of Next on every call.
func fzDecode(t *testing.T, d *parser.ChunkedDecoder, in []byte, next func() int) fzChunkResult {
	t.Helper()
	var body []byte
	off, avail := 0, 0
	var err error
	for {
		if avail < len(in) {
			avail = min(len(in), avail+max(1, next()))
		}
		piece := in[off:avail]
		data, n, e := d.Next(piece)
		if n < 0 || n > len(piece) {
			t.Fatalf("Next consumed %d of %d", n, len(piece))
		}
		if len(data) > 0 {
			if len(data) > n || &data[0] != &piece[n-len(data)] {
				t.Fatalf("data is not the last %d consumed bytes", len(data))
			}
		}
		body = append(body, data...)
		off += n
		if e != nil {
			err = e
			if data != nil {
				t.Fatalf("data with an error")
			}
			if _, n2, e2 := d.Next(in[off:]); n2 != 0 || e2 != e {
				t.Fatalf("error not sticky: %d %v", n2, e2)
			}
			break
		}
		if d.Done() {
			if data2, n2, e2 := d.Next(in[off:]); data2 != nil || n2 != 0 || e2 != nil {
				t.Fatalf("Next after Done: %q %d %v", data2, n2, e2)
			}
			break
		}
		if len(data) == 0 && off == avail && avail == len(in) {
			break // need more input
		}
		if len(data) == 0 && n != len(piece) {
			t.Fatalf("Next stopped at %d of %d with no data, no error and not done", n, len(piece))
		}
	}
	if d.Consumed() != int64(off) {
		t.Fatalf("Consumed() = %d, calls consumed %d", d.Consumed(), off)
	}
	if d.BodyLen() != int64(len(body)) {
		t.Fatalf("BodyLen() = %d, data handed out %d", d.BodyLen(), len(body))
	}
	res := fzChunkResult{Body: string(body), Trailer: string(d.Trailer()), Done: d.Done(), Consumed: d.Consumed(), BodyLen: d.BodyLen()}
	if err != nil {
		var se *parser.SyntaxError
		if !errors.As(err, &se) || parser.Rule(err) == nil || !errors.Is(err, se.Err) {
			t.Fatalf("chunked error %v is not a rule", err)
		}
		res.Err, res.Offset, res.State = se.Err.Msg, se.Offset, se.State
		// The offence is the byte that stopped decoding, except for a
		// malformed trailer line, found at its end.
		if se.Offset > off || se.Offset < 0 || se.Offset != off && !errors.Is(err, parser.ErrBadFieldName) &&
			!errors.Is(err, parser.ErrNoColon) && !errors.Is(err, parser.ErrSpaceBeforeColon) &&
			!errors.Is(err, parser.ErrBadFieldValue) && !errors.Is(err, parser.ErrBareCR) {
			t.Fatalf("error %v at offset %d, consumed %d", err, se.Offset, off)
		}
	}
	return res
}

func FuzzChunked(f *testing.F) {
	for _, s := range fzChunkedSeeds {
		f.Add([]byte(s), byte(0))
	}
	f.Add([]byte(fzChunkedSeeds[1]), byte(3)) // tiny limits
	f.Fuzz(func(t *testing.T, input []byte, o byte) {
		d := &parser.ChunkedDecoder{}
		if o&1 != 0 {
			d.MaxChunkLine = 4 + int(o>>4)
		}
		if o&2 != 0 {
			d.MaxTrailerBytes = 8 + int(o>>4)*2
		}
		all := func() int { return len(input) }
		want := fzDecode(t, d, input, all)

		d.Reset()
		one := func() int { return 1 }
		if got := fzDecode(t, d, input, one); !reflect.DeepEqual(got, want) {
			t.Fatalf("byte-by-byte differs\nwhole: %+v\nbytes: %+v", want, got)
		}

		d.Reset()
		seed := uint32(fzSplit(input)*2654435761 + 1)
		random := func() int {
			seed ^= seed << 13
			seed ^= seed >> 17
			seed ^= seed << 5
			return int(seed % 16)
		}
		if got := fzDecode(t, d, input, random); !reflect.DeepEqual(got, want) {
			t.Fatalf("random pieces differ\nwhole: %+v\npiece: %+v", want, got)
		}

		if !want.Done {
			return
		}
		if want.Err != "" || want.Consumed > int64(len(input)) {
			t.Fatalf("done with %+v", want)
		}
		// Re-encode the body and trailer and decode again.
		var enc []byte
		for b := []byte(want.Body); len(b) > 0; {
			k := min(len(b), 1+len(b)/3)
			enc = fmt.Appendf(enc, "%x\r\n", k)
			enc = append(append(enc, b[:k]...), "\r\n"...)
			b = b[k:]
		}
		enc = append(append(append(enc, "0\r\n"...), want.Trailer...), "\r\n"...)
		d.Reset()
		got := fzDecode(t, d, enc, all)
		if !got.Done || got.Body != want.Body || got.Trailer != want.Trailer || got.Consumed != int64(len(enc)) {
			t.Fatalf("re-encoded %q decodes to %+v", enc, got)
		}
	})
}

// TestFieldValueBytes puts every byte at every position of values of
// several lengths (so both the word-at-a-time path and the byte tail are
// hit) and checks the verdict and the offset of the offence.
func TestFieldValueBytes(t *testing.T) {
	const prefix = "GET / HTTP/1.1\r\nHost: a\r\nX: "
	for n := 1; n <= 26; n++ {
		for p := 0; p < n; p++ {
			for c := 0; c < 256; c++ {
				if c == '\n' {
					continue // ends the line
				}
				val := bytes.Repeat([]byte{'v'}, n)
				val[p] = byte(c)
				in := append(append([]byte(prefix), val...), "\r\n\r\n"...)
				var r parser.Request
				_, err := r.Parse(in)
				ok := c == '\t' || c >= 0x20 && c != 0x7f
				if c == '\r' && p == n-1 {
					continue // "v\r\r\n": the line ends at the last CR
				}
				var se *parser.SyntaxError
				switch {
				case ok && err != nil:
					t.Fatalf("byte %#x at %d of %d: %v", c, p, n, err)
				case ok:
				case !errors.As(err, &se) || se.Offset != len(prefix)+p:
					t.Fatalf("byte %#x at %d of %d: %v, want offence at %d", c, p, n, err, len(prefix)+p)
				case c == '\r' && se.Err != parser.ErrBareCR, c != '\r' && se.Err != parser.ErrBadFieldValue:
					t.Fatalf("byte %#x at %d of %d: rule %v", c, p, n, se.Err)
				}
			}
		}
	}
}

// TestResetForgetsFolds parses a response whose first field is folded,
// then reuses the Response for one whose first field holds a tab and whose
// second is folded: the first message's flags must not make the second
// one's unfolding touch its first field.
func TestResetForgetsFolds(t *testing.T) {
	var r parser.Response
	if _, err := r.Parse([]byte("HTTP/1.1 200 OK\r\nA: x\r\n\ty\r\nB: z\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	in := []byte("HTTP/1.1 200 OK\r\nC: p\tq\r\nD: r\r\n s\r\n\r\n")
	orig := fzCopy(in)
	r.Reset()
	for k := 0; k < 2; k++ { // the second call returns the parsed head again
		if _, err := r.Parse(in); err != nil {
			t.Fatal(err)
		}
	}
	if string(in[:22]) != string(orig[:22]) || string(r.Value(0)) != "p\tq" || string(r.Value(1)) != "r   s" {
		t.Fatalf("buffer %q, values %q %q", in, r.Value(0), r.Value(1))
	}
}
