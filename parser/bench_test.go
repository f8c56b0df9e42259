package parser_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"

	"github.com/serverside-go/serverside/parser"
)

// Benchmark inputs, shared with the allocation test.
var (
	// A typical browser request, about 500 bytes.
	bnBrowser = []byte("GET /assets/js/app.min.js?v=20241125 HTTP/1.1\r\n" +
		"Host: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
		"Accept: */*\r\n" +
		"Accept-Language: en-US,en;q=0.9\r\n" +
		"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
		"Referer: https://www.example.com/products/widgets?page=2\r\n" +
		"Cookie: _ga=GA1.2.1234567890.1700000000; session=eyJhbGciOiJIUzI1NiJ9.e30; theme=dark\r\n" +
		"Sec-Fetch-Dest: script\r\n" +
		"Sec-Fetch-Mode: no-cors\r\n" +
		"Sec-Fetch-Site: same-origin\r\n" +
		"Connection: keep-alive\r\n\r\n")

	// An origin response, about 300 bytes.
	bnResponse = []byte("HTTP/1.1 200 OK\r\n" +
		"Date: Mon, 25 Nov 2024 09:30:00 GMT\r\n" +
		"Server: nginx/1.27.2\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"Content-Length: 18734\r\n" +
		"Connection: keep-alive\r\n" +
		"Cache-Control: public, max-age=300\r\n" +
		"ETag: \"6743c2a8-492e\"\r\n" +
		"Last-Modified: Sun, 24 Nov 2024 18:12:24 GMT\r\n" +
		"Vary: Accept-Encoding\r\n\r\n")

	// A request with 40 fields.
	bnFields40 = func() []byte {
		var b strings.Builder
		b.WriteString("POST /api/v2/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 0\r\n")
		for i := 0; i < 38; i++ {
			fmt.Fprintf(&b, "X-Custom-Header-%02d: value-%02d-abcdefghijklmnop\r\n", i, i)
		}
		b.WriteString("\r\n")
		return []byte(b.String())
	}()

	// A 64 KiB body in 4 KiB chunks.
	bnChunked = func() []byte {
		var b bytes.Buffer
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096/16)
		for i := 0; i < 16; i++ {
			fmt.Fprintf(&b, "%x\r\n", len(chunk))
			b.Write(chunk)
			b.WriteString("\r\n")
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}()
)

var (
	bnSinkBytes []byte
	bnSinkInt   int64
)

func BenchmarkParser(b *testing.B) {
	cases := []struct {
		name  string
		input []byte
		resp  bool
	}{
		{"browser", bnBrowser, false},
		{"response", bnResponse, true},
		{"fields40", bnFields40, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.Run("serverside", func(b *testing.B) {
				if c.resp {
					bnServersideResponse(b, c.input)
				} else {
					bnServersideRequest(b, c.input)
				}
			})
			b.Run("nethttp", func(b *testing.B) {
				if c.resp {
					bnNetHTTPResponse(b, c.input)
				} else {
					bnNetHTTPRequest(b, c.input)
				}
			})
			b.Run("fasthttp", func(b *testing.B) {
				if c.resp {
					bnFastHTTPResponse(b, c.input)
				} else {
					bnFastHTTPRequest(b, c.input)
				}
			})
		})
	}
}

func bnServersideRequest(b *testing.B, in []byte) {
	var r parser.Request
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.Reset()
		if _, err := r.Parse(in); err != nil {
			b.Fatal(err)
		}
		// The lookups net/http and fasthttp do while parsing.
		bnSinkBytes = r.Get(parser.HdrHost)
		bnSinkInt = r.ContentLength()
	}
}

func bnServersideResponse(b *testing.B, in []byte) {
	var r parser.Response
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.Reset()
		if _, err := r.Parse(in); err != nil {
			b.Fatal(err)
		}
		bnSinkInt = r.ContentLength()
	}
}

func bnNetHTTPRequest(b *testing.B, in []byte) {
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		req, err := http.ReadRequest(br)
		if err != nil {
			b.Fatal(err)
		}
		bnSinkBytes = []byte(nil)
		bnSinkInt = req.ContentLength + int64(len(req.Host))
	}
}

func bnNetHTTPResponse(b *testing.B, in []byte) {
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		bnSinkInt = res.ContentLength
	}
}

func bnFastHTTPRequest(b *testing.B, in []byte) {
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	var h fasthttp.RequestHeader
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		h.Reset()
		rd.Reset(in)
		br.Reset(rd)
		if err := h.Read(br); err != nil {
			b.Fatal(err)
		}
		bnSinkBytes = h.Host()
		bnSinkInt = int64(h.ContentLength())
	}
}

func bnFastHTTPResponse(b *testing.B, in []byte) {
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	var h fasthttp.ResponseHeader
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		h.Reset()
		rd.Reset(in)
		br.Reset(rd)
		if err := h.Read(br); err != nil {
			b.Fatal(err)
		}
		bnSinkInt = int64(h.ContentLength())
	}
}

// bnDecodeChunked decodes a whole chunked body and returns the body length.
func bnDecodeChunked(d *parser.ChunkedDecoder, in []byte) (int64, error) {
	d.Reset()
	for off := 0; !d.Done(); {
		_, n, err := d.Next(in[off:])
		if err != nil {
			return 0, err
		}
		if n == 0 && off == len(in) {
			return 0, parser.ErrNeedMore
		}
		off += n
	}
	return d.BodyLen(), nil
}

func BenchmarkChunked(b *testing.B) {
	var d parser.ChunkedDecoder
	b.ReportAllocs()
	b.SetBytes(int64(len(bnChunked)))
	for b.Loop() {
		n, err := bnDecodeChunked(&d, bnChunked)
		if err != nil || n != 64<<10 {
			b.Fatal(n, err)
		}
		bnSinkInt = n
	}
}

var bnVia = []byte("1.1 serverside")

func BenchmarkWriteRequestHead(b *testing.B) {
	var r parser.Request
	if _, err := r.Parse(bnBrowser); err != nil {
		b.Fatal(err)
	}
	bb := bytebufferpool.Get()
	defer bytebufferpool.Put(bb)
	var e parser.Edits
	b.ReportAllocs()
	b.SetBytes(int64(len(bnBrowser)))
	for b.Loop() {
		bb.Reset()
		e.Reset()
		e.StripHopByHop = true
		e.Add("Via", bnVia)
		parser.WriteRequestHead(bb, &r, &e)
	}
	bnSinkBytes = bb.B
}
