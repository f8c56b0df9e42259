package parser

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Every conformance vector is run three ways: the whole input in one call,
// one byte at a time, and cut at random points. An incremental parser must
// reach the same result however its input is split, so each way's full
// observable result is compared with the whole-input one.

// randomCuttings is how many random ways to cut each input are tried.
const randomCuttings = 8

// splitCutting is one way to split an input of length n: the growing prefix
// lengths handed to the parser, the last one being n.
type splitCutting struct {
	name string
	ends []int
}

// splitCuttings returns the whole, byte-by-byte and random cuttings of an input
// of length n. The random ones are seeded from the test name, so a failure
// reproduces exactly.
func splitCuttings(t *testing.T, n int) []splitCutting {
	cs := []splitCutting{{name: "whole", ends: []int{n}}}
	if n <= 1 {
		return cs
	}
	bytewise := make([]int, n)
	for i := range bytewise {
		bytewise[i] = i + 1
	}
	cs = append(cs, splitCutting{name: "bytewise", ends: bytewise})
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(n)))
	for k := 0; k < randomCuttings; k++ {
		ends := []int{n}
		for j := rng.IntN(5) + 1; j > 0; j-- {
			ends = append(ends, rng.IntN(n-1)+1)
		}
		slices.Sort(ends)
		ends = slices.Compact(ends)
		cs = append(cs, splitCutting{name: fmt.Sprintf("random %v", ends), ends: ends})
	}
	return cs
}

// headParser is what Request and Response have in common for feeding.
type headParser interface {
	Parse(buf []byte) (int, error)
	Reset()
}

// feedHead parses the head that starts at buf[start:], calling Parse with
// the growing prefixes buf[start:end] for each end of the cutting that lies
// beyond start, as long as Parse asks for more.
func feedHead(p headParser, buf []byte, start int, ends []int) (int, error) {
	n, err := 0, ErrNeedMore
	for _, end := range ends {
		if end <= start && end != len(buf) {
			continue
		}
		n, err = p.Parse(buf[start:end])
		if err != ErrNeedMore {
			break
		}
	}
	return n, err
}

// headObs is everything a caller can observe of one parsed head.
type headObs struct {
	N      int
	Err    string // "" on success, "need more", or the rule's message
	Rule   *Error
	Offset int
	State  State
	Sticky bool // a failed parser keeps returning the same error

	Version     Version
	Fields      []string // "Name: value"
	IDs         []HeaderID
	Hop         []bool
	Framing     Framing
	CL          int64
	KeepAlive   bool
	Close       bool
	Upgrade     bool
	Expect100   bool
	ExpectOther bool
	Raw         string

	// Requests.
	Method, Target, Scheme, Authority, Path string
	MethodID                                Method
	Form                                    TargetForm

	// Responses.
	Status    int
	Reason    string
	Interim   bool
	KAHint    string // "timeout,max" from KeepAliveHint
	ReqMethod Method
}

// observeErr fills the outcome part of o from a Parse result.
func observeErr(t *testing.T, o *headObs, p headParser, buf []byte, n int, err error) {
	t.Helper()
	o.N = n
	switch {
	case err == nil:
		return
	case err == ErrNeedMore:
		o.Err = "need more"
		if n != 0 {
			t.Errorf("ErrNeedMore with n = %d", n)
		}
		return
	}
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *SyntaxError", err, err)
	}
	if n != 0 {
		t.Errorf("error with n = %d", n)
	}
	if Rule(err) != se.Err || !errors.Is(err, se.Err) {
		t.Errorf("Rule(err) = %v, errors.Is failed for %v", Rule(err), se.Err)
	}
	o.Err, o.Rule, o.Offset, o.State = se.Err.Msg, se.Err, se.Offset, se.State
	n2, err2 := p.Parse(buf)
	o.Sticky = n2 == 0 && err2 == err
}

// observeHeader fills the parts common to requests and responses.
func observeHeader(o *headObs, h *Header) {
	o.Version = h.Version()
	o.Framing = h.Framing()
	o.CL = h.ContentLength()
	o.Close = h.ConnectionClose()
	o.Upgrade = h.Upgrade()
	o.Expect100 = h.ExpectContinue()
	o.ExpectOther = h.ExpectOther()
	o.Raw = string(h.Raw())
	for i := 0; i < h.Len(); i++ {
		o.Fields = append(o.Fields, string(h.Name(i))+": "+string(h.Value(i)))
		o.IDs = append(o.IDs, h.ID(i))
		o.Hop = append(o.Hop, h.IsHopByHop(i))
	}
}

func observeRequest(t *testing.T, r *Request, buf []byte, n int, err error) headObs {
	t.Helper()
	var o headObs
	observeErr(t, &o, r, buf, n, err)
	if err != nil {
		return o
	}
	observeHeader(&o, &r.Header)
	o.KeepAlive = r.KeepAlive()
	o.Method, o.Target = string(r.Method()), string(r.Target())
	o.Scheme, o.Authority, o.Path = string(r.Scheme()), string(r.Authority()), string(r.Path())
	o.MethodID, o.Form = r.MethodID(), r.Form()
	return o
}

func observeResponse(t *testing.T, r *Response, buf []byte, n int, err error) headObs {
	t.Helper()
	var o headObs
	observeErr(t, &o, r, buf, n, err)
	o.ReqMethod = r.reqMethod
	if err != nil {
		return o
	}
	observeHeader(&o, &r.Header)
	o.KeepAlive = r.KeepAlive()
	o.Status, o.Reason, o.Interim = r.Status(), string(r.Reason()), r.IsInterim()
	to, mx := r.KeepAliveHint()
	o.KAHint = fmt.Sprintf("%d,%d", to, mx)
	return o
}

// checkHeadInvariants checks what must hold for any successfully parsed
// head, whatever the input.
func checkHeadInvariants(t *testing.T, h *Header) {
	t.Helper()
	for i := 0; i < h.Len(); i++ {
		if id := LookupHeaderID(h.Name(i)); id != h.ID(i) {
			t.Errorf("field %d %q: ID %v, LookupHeaderID %v", i, h.Name(i), h.ID(i), id)
		}
	}
	for id := HdrOther + 1; id < numHeaderIDs; id++ {
		first := -1
		for i := 0; i < h.Len(); i++ {
			if h.ID(i) == id {
				first = i
				break
			}
		}
		if h.Has(id) != (first >= 0) {
			t.Errorf("Has(%v) = %v, first index %d", id, h.Has(id), first)
		}
		if first >= 0 && string(h.Get(id)) != string(h.Value(first)) {
			t.Errorf("Get(%v) = %q, want %q", id, h.Get(id), h.Value(first))
		}
	}
}

// runRequest parses in as a request in every cutting and returns the
// whole-input result after checking that all cuttings agree with it.
func runRequest(t *testing.T, opts Options, in string) headObs {
	t.Helper()
	var whole headObs
	for k, c := range splitCuttings(t, len(in)) {
		buf := []byte(in)
		r := Request{Header: Header{Opts: opts}}
		n, err := feedHead(&r, buf, 0, c.ends)
		o := observeRequest(t, &r, buf, n, err)
		if err == nil {
			checkHeadInvariants(t, &r.Header)
		}
		if k == 0 {
			whole = o
			continue
		}
		if !reflect.DeepEqual(o, whole) {
			t.Fatalf("%s: result differs from the whole-input parse\n got: %+v\nwant: %+v", c.name, o, whole)
		}
	}
	return whole
}

// runResponse is runRequest for responses answering a request with method m.
func runResponse(t *testing.T, opts Options, m Method, in string) headObs {
	t.Helper()
	var whole headObs
	for k, c := range splitCuttings(t, len(in)) {
		buf := []byte(in)
		r := Response{Header: Header{Opts: opts}}
		r.SetRequestMethod(m)
		n, err := feedHead(&r, buf, 0, c.ends)
		o := observeResponse(t, &r, buf, n, err)
		if err == nil {
			checkHeadInvariants(t, &r.Header)
		}
		if k == 0 {
			whole = o
			continue
		}
		if !reflect.DeepEqual(o, whole) {
			t.Fatalf("%s: result differs from the whole-input parse\n got: %+v\nwant: %+v", c.name, o, whole)
		}
	}
	return whole
}

// chunkObs is everything a caller can observe of one chunked body.
type chunkObs struct {
	Data     string
	Consumed int // sum of the n returned by Next
	Done     bool
	BodyLen  int64
	Trailer  string
	Err      string
	Rule     *Error
	Offset   int
	State    State
	Sticky   bool
}

// feedChunked decodes in with d, offering it as the growing prefixes of
// the cutting: each call gets what has arrived and is not consumed yet.
func feedChunked(t *testing.T, d *ChunkedDecoder, in []byte, ends []int) chunkObs {
	t.Helper()
	var o chunkObs
	var data []byte
	pos := 0
	for _, end := range ends {
		for calls := 0; pos < end; calls++ {
			if calls > len(in)+1 {
				t.Fatalf("Next makes no progress at %d", pos)
			}
			avail := in[pos:end]
			b, n, err := d.Next(avail)
			if n < 0 || n > len(avail) {
				t.Fatalf("Next(%q) consumed %d of %d bytes", avail, n, len(avail))
			}
			if len(b) > 0 {
				// Zero copy: data is a sub-slice of the consumed input.
				off := cap(avail) - cap(b)
				if off < 0 || off+len(b) > n || &avail[off] != &b[0] {
					t.Fatalf("data %q is not within the %d consumed bytes of the input", b, n)
				}
			}
			data = append(data, b...)
			pos += n
			if err != nil {
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("error %v (%T) is not a *SyntaxError", err, err)
				}
				if len(b) != 0 {
					t.Errorf("error with data %q", b)
				}
				o.Err, o.Rule, o.Offset, o.State = se.Err.Msg, se.Err, se.Offset, se.State
				b2, n2, err2 := d.Next(in[pos:])
				o.Sticky = b2 == nil && n2 == 0 && err2 == err
				return finishChunkObs(t, o, d, data, pos)
			}
			if n == 0 {
				if !d.Done() {
					t.Fatalf("Next consumed nothing of %q before done", avail)
				}
				break
			}
		}
	}
	return finishChunkObs(t, o, d, data, pos)
}

func finishChunkObs(t *testing.T, o chunkObs, d *ChunkedDecoder, data []byte, pos int) chunkObs {
	t.Helper()
	o.Data, o.Consumed, o.Done, o.BodyLen = string(data), pos, d.Done(), d.BodyLen()
	o.Trailer = string(d.Trailer())
	if d.Consumed() != int64(pos) {
		t.Errorf("Consumed() = %d, sum of n = %d", d.Consumed(), pos)
	}
	if d.BodyLen() != int64(len(data)) {
		t.Errorf("BodyLen() = %d, data handed out = %d", d.BodyLen(), len(data))
	}
	return o
}

// runChunked decodes in in every cutting, the byte-by-byte one handing
// Next one byte at a time, and returns the whole-input result after
// checking that all cuttings agree with it.
func runChunked(t *testing.T, maxLine, maxTrailer int, in string) chunkObs {
	t.Helper()
	var whole chunkObs
	for k, c := range splitCuttings(t, len(in)) {
		d := ChunkedDecoder{MaxChunkLine: maxLine, MaxTrailerBytes: maxTrailer}
		o := feedChunked(t, &d, []byte(in), c.ends)
		if k == 0 {
			whole = o
			continue
		}
		if !reflect.DeepEqual(o, whole) {
			t.Fatalf("%s: result differs from the whole-input decode\n got: %+v\nwant: %+v", c.name, o, whole)
		}
	}
	return whole
}

// splitQuote quotes a test input for messages, shortening long ones.
func splitQuote(s string) string {
	if len(s) > 120 {
		return fmt.Sprintf("%q...(%d bytes)", s[:100], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// splitFieldsOf splits the field lines of a serialized head (CRLF line ends,
// "Name: value") independently of the parser.
func splitFieldsOf(head string) []string {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	if len(lines) == 1 {
		return nil
	}
	return lines[1:]
}

// TestRequestLineRejectedBeforeItsEnd: bytes that cannot begin a request
// line are refused as they arrive, with the error the whole line would
// give, without waiting for a line end that may never come (a TLS
// ClientHello sent to a plain HTTP port has none). A CR may still start
// the line's end, so it waits.
func TestRequestLineRejectedBeforeItsEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error // nil: ErrNeedMore
		off  int
	}{
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ErrBadRequestLine, 0},
		{"GE\x00", ErrBadMethod, 2},
		{"\r\n\r\nG(", ErrBadMethod, 5},
		{"GET", nil, 0},
		{"GET /x", nil, 0},
		{"GET\r", nil, 0},
		{"\r\n\r", nil, 0},
		{"", nil, 0},
	} {
		var r Request
		_, err := r.Parse([]byte(tc.in))
		if tc.want == nil {
			if err != ErrNeedMore {
				t.Errorf("%q: %v, want ErrNeedMore", tc.in, err)
			}
			continue
		}
		var se *SyntaxError
		if !errors.Is(err, tc.want) || !errors.As(err, &se) || se.Offset != tc.off {
			t.Errorf("%q: %v, want %v at %d", tc.in, err, tc.want, tc.off)
		}
		// The whole line, when it comes, gives the same error.
		var whole Request
		if _, werr := whole.Parse([]byte(tc.in + " / HTTP/1.1\r\nHost: x\r\n\r\n")); !errors.Is(werr, tc.want) {
			t.Errorf("%q as a whole line: %v, want %v", tc.in, werr, tc.want)
		}
	}
}
