package parser_test

import (
	"testing"

	"github.com/valyala/bytebufferpool"

	"github.com/serverside-go/serverside/parser"
)

// TestZeroAllocs holds the hot paths to zero allocations once their
// reusable state (the field slice, the trailer buffer, the edit list, the
// output buffer) has grown: AllocsPerRun runs each function once before
// measuring, which is the warm-up.
func TestZeroAllocs(t *testing.T) {
	var req parser.Request
	var res parser.Response
	var d parser.ChunkedDecoder
	chunkedTrailer := append(append([]byte(nil), bnChunked[:len(bnChunked)-2]...), "X-Sum: 1\r\n\r\n"...)

	var fwd parser.Request
	if _, err := fwd.Parse(bnBrowser); err != nil {
		t.Fatal(err)
	}
	var e parser.Edits
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)

	cases := []struct {
		name string
		fn   func()
	}{
		{"Request Reset+Parse", func() {
			req.Reset()
			if _, err := req.Parse(bnBrowser); err != nil {
				t.Fatal(err)
			}
			bnSinkBytes = req.Get(parser.HdrHost)
		}},
		{"Request Reset+Parse 40 fields", func() {
			req.Reset()
			if _, err := req.Parse(bnFields40); err != nil {
				t.Fatal(err)
			}
		}},
		{"Request incremental", func() {
			req.Reset()
			for k := 1; k <= len(bnBrowser); k += 64 {
				req.Parse(bnBrowser[:k])
			}
			if _, err := req.Parse(bnBrowser); err != nil {
				t.Fatal(err)
			}
		}},
		{"Response Reset+Parse", func() {
			res.Reset()
			if _, err := res.Parse(bnResponse); err != nil {
				t.Fatal(err)
			}
			bnSinkInt = res.ContentLength()
		}},
		{"ChunkedDecoder", func() {
			if _, err := bnDecodeChunked(&d, bnChunked); err != nil {
				t.Fatal(err)
			}
		}},
		{"ChunkedDecoder with trailer", func() {
			if _, err := bnDecodeChunked(&d, chunkedTrailer); err != nil {
				t.Fatal(err)
			}
		}},
		{"WriteRequestHead", func() {
			bb.Reset()
			e.Reset()
			e.StripHopByHop = true
			e.Add("Via", bnVia)
			e.Set("X-Forwarded-For", bnVia)
			e.Remove("Cookie")
			parser.WriteRequestHead(bb, &fwd, &e)
		}},
		{"Edits.ConnectionClose", func() {
			e.Reset()
			e.Add("Connection", bnVia)
			if e.ConnectionClose(&fwd.Header) {
				t.Fatal("close found in keep-alive and 1.1 serverside")
			}
		}},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(100, c.fn); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, n)
		}
	}
}
