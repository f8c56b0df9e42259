package parser

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/bytebufferpool"
)

// Conformance tables: each case names the RFC 9112 / RFC 9110 section of
// the rule it checks. Accepted inputs are checked against the exact parse,
// rejected ones against the exact rule and offset, and every input is run
// whole, byte by byte and at random split points (split_test.go).

// Start lines and fields the tables build on.
const (
	cfGetLine  = "GET / HTTP/1.1\r\n"
	cfPostLine = "POST / HTTP/1.1\r\n"
	cfHostX    = "Host: x\r\n"
	cfOKLine   = "HTTP/1.1 200 OK\r\n"
)

var (
	cfHTTP10 = Version{1, 0}
	cfHTTP11 = Version{1, 1}
)

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

type reqCase struct {
	name string
	ref  string
	in   string // the head, or the whole input when it is rejected
	tail string // bytes after the head (body, next message): not consumed
	opts Options

	err  *Error // rule broken; nil when the head parses
	off  int    // SyntaxError.Offset when err is set
	more bool   // in is an incomplete head: ErrNeedMore

	method   string
	mid      Method
	target   string
	form     TargetForm
	scheme   string
	auth     string
	path     string
	ver      Version // zero means HTTP/1.1
	fields   []string
	framing  Framing
	cl       int64
	ka       bool
	upgrade  bool
	exp100   bool
	expOther bool
}

// reqView is the part of a parsed request a reqCase states.
type reqView struct {
	N                       int
	Method                  string
	MethodID                Method
	Target                  string
	Form                    TargetForm
	Scheme, Authority, Path string
	Version                 Version
	Fields                  []string
	Framing                 Framing
	CL                      int64
	KeepAlive, Upgrade      bool
	Expect100, ExpectOther  bool
	Raw                     string
}

func (c *reqCase) check(t *testing.T, o headObs) {
	t.Helper()
	cfCheckOutcome(t, c.err, c.off, c.more, o)
	if c.err != nil || c.more {
		return
	}
	ver := c.ver
	if ver == (Version{}) {
		ver = cfHTTP11
	}
	want := reqView{
		N: len(c.in), Method: c.method, MethodID: c.mid, Target: c.target, Form: c.form,
		Scheme: c.scheme, Authority: c.auth, Path: c.path, Version: ver, Fields: c.fields,
		Framing: c.framing, CL: c.cl, KeepAlive: c.ka, Upgrade: c.upgrade,
		Expect100: c.exp100, ExpectOther: c.expOther, Raw: c.in,
	}
	got := reqView{
		N: o.N, Method: o.Method, MethodID: o.MethodID, Target: o.Target, Form: o.Form,
		Scheme: o.Scheme, Authority: o.Authority, Path: o.Path, Version: o.Version, Fields: o.Fields,
		Framing: o.Framing, CL: o.CL, KeepAlive: o.KeepAlive, Upgrade: o.Upgrade,
		Expect100: o.Expect100, ExpectOther: o.ExpectOther, Raw: o.Raw,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parse of %s\n got: %+v\nwant: %+v", splitQuote(c.in), got, want)
	}
}

// cfCheckOutcome checks the error part of a result.
func cfCheckOutcome(t *testing.T, rule *Error, off int, more bool, o headObs) {
	t.Helper()
	switch {
	case rule != nil:
		if o.Rule != rule || o.Offset != off {
			t.Fatalf("got rule %q at offset %d (err %q), want %q at %d", cfMsgOf(o.Rule), o.Offset, o.Err, rule.Msg, off)
		}
		if !o.Sticky {
			t.Errorf("error is not sticky")
		}
	case more:
		if o.Err != "need more" {
			t.Fatalf("got %q, want ErrNeedMore", o.Err)
		}
	case o.Err != "":
		t.Fatalf("unexpected error %q at offset %d", o.Err, o.Offset)
	}
}

func cfMsgOf(e *Error) string {
	if e == nil {
		return "<nil>"
	}
	return e.Msg
}

// cfFieldList is "X-i: v" for i in [from, to).
func cfFieldList(from, to int) []string {
	var f []string
	for i := from; i < to; i++ {
		f = append(f, "X-"+strconv.Itoa(i)+": v")
	}
	return f
}

func cfFieldLines(from, to int) string {
	var b strings.Builder
	for _, f := range cfFieldList(from, to) {
		b.WriteString(f + "\r\n")
	}
	return b.String()
}

// cfGet builds the common accepted case "<method> / HTTP/1.1" with Host: x.
func cfGet(name, ref, method string, mid Method) reqCase {
	return reqCase{
		name: name, ref: ref, in: method + " / HTTP/1.1\r\n" + cfHostX + "\r\n",
		method: method, mid: mid, target: "/", form: FormOrigin, auth: "x", path: "/",
		fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true,
	}
}

// cfPost builds an accepted POST / HTTP/1.1 with Host: x and the given
// extra field lines, framed as stated.
func cfPost(name, ref, fields, tail string, framing Framing, cl int64, want ...string) reqCase {
	return reqCase{
		name: name, ref: ref, in: cfPostLine + cfHostX + fields + "\r\n", tail: tail,
		method: "POST", mid: MethodPost, target: "/", form: FormOrigin, auth: "x", path: "/",
		fields: append([]string{"Host: x"}, want...), framing: framing, cl: cl, ka: true,
	}
}

// cfBad builds a rejected request.
func cfBad(name, ref, in string, rule *Error, off int) reqCase {
	return reqCase{name: name, ref: ref, in: in, err: rule, off: off}
}

func cfRequestCases() []reqCase {
	const (
		clAt   = len(cfPostLine + cfHostX)           // start of a third line in a POST
		clVal  = clAt + len("Content-Length: ")      // its value when it is Content-Length
		teVal  = clAt + len("Transfer-Encoding: ")   // its value when it is Transfer-Encoding
		field3 = len(cfGetLine + cfHostX)            // start of a third line in a GET
		hostAt = len(cfGetLine) + len("Host: ")      // value of a Host second line
		line2  = len(cfGetLine)                      // start of the second line
		max64K = DefaultMaxHeadBytes                 // default head limit
		host11 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n" // the smallest valid HTTP/1.1 request
	)
	big := "X: " + strings.Repeat("a", max64K-len(cfGetLine+cfHostX)-len("X: \r\n\r\n")) + "\r\n"
	cases := []reqCase{
		// Request targets, RFC 9112 §3.2.
		{name: "origin-form", ref: "RFC 9112 §3.2.1",
			in:     "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/a/b?c=d", form: FormOrigin, auth: "example.com", path: "/a/b?c=d",
			fields: []string{"Host: example.com"}, framing: FramingNone, cl: -1, ka: true},
		{name: "origin-form with double slash", ref: "RFC 9112 §3.2.1",
			in:     "GET //a HTTP/1.1\r\nHost: x\r\n\r\n",
			method: "GET", mid: MethodGet, target: "//a", form: FormOrigin, auth: "x", path: "//a",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form", ref: "RFC 9112 §3.2.2",
			in:     "GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://example.com:8080/p?q=1", form: FormAbsolute,
			scheme: "http", auth: "example.com:8080", path: "/p?q=1",
			fields: []string{"Host: example.com:8080"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form without path", ref: "RFC 9112 §3.2.2",
			in:     "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://example.com", form: FormAbsolute,
			scheme: "http", auth: "example.com", path: "",
			fields: []string{"Host: example.com"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form with query and no path", ref: "RFC 9112 §3.2.2",
			in:     "GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://example.com?q", form: FormAbsolute,
			scheme: "http", auth: "example.com", path: "?q",
			fields: []string{"Host: example.com"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form https with IP literal", ref: "RFC 9112 §3.2.2",
			in:     "GET https://[2001:db8::1]:8443/x HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n",
			method: "GET", mid: MethodGet, target: "https://[2001:db8::1]:8443/x", form: FormAbsolute,
			scheme: "https", auth: "[2001:db8::1]:8443", path: "/x",
			fields: []string{"Host: [2001:db8::1]:8443"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form scheme is case-insensitive", ref: "RFC 9110 §4.2.3",
			in:     "GET HTTP://Example.COM/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", mid: MethodGet, target: "HTTP://Example.COM/", form: FormAbsolute,
			scheme: "HTTP", auth: "Example.COM", path: "/",
			fields: []string{"Host: example.com"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form authority wins over Host", ref: "RFC 9112 §3.2.2",
			in:     "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://a.example/", form: FormAbsolute,
			scheme: "http", auth: "a.example", path: "/",
			fields: []string{"Host: b.example"}, framing: FramingNone, cl: -1, ka: true},
		{name: "absolute-form with empty Host", ref: "RFC 9112 §3.2",
			in:     "GET http://example.com/ HTTP/1.1\r\nHost:\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://example.com/", form: FormAbsolute,
			scheme: "http", auth: "example.com", path: "/",
			fields: []string{"Host: "}, framing: FramingNone, cl: -1, ka: true},
		{name: "authority-form for CONNECT", ref: "RFC 9112 §3.2.3",
			in:     "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			method: "CONNECT", mid: MethodConnect, target: "example.com:443", form: FormAuthority,
			auth: "example.com:443", fields: []string{"Host: example.com:443"}, framing: FramingNone, cl: -1, ka: true},
		{name: "authority-form for CONNECT with IP literal", ref: "RFC 9112 §3.2.3",
			in:     "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
			method: "CONNECT", mid: MethodConnect, target: "[::1]:8443", form: FormAuthority,
			auth: "[::1]:8443", fields: []string{"Host: [::1]:8443"}, framing: FramingNone, cl: -1, ka: true},
		{name: "asterisk-form for OPTIONS", ref: "RFC 9112 §3.2.4",
			in:     "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
			method: "OPTIONS", mid: MethodOptions, target: "*", form: FormAsterisk, auth: "x",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		cfBad("CONNECT with origin-form", "RFC 9112 §3.2.3", "CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("CONNECT without port", "RFC 9112 §3.2.3", "CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("CONNECT with empty port", "RFC 9112 §3.2.3", "CONNECT example.com: HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("CONNECT with absolute-form", "RFC 9112 §3.2.3", "CONNECT http://example.com:443/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("CONNECT with userinfo", "RFC 9112 §3.2.3", "CONNECT u@example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("CONNECT with asterisk", "RFC 9112 §3.2.3", "CONNECT * HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("authority-form for GET", "RFC 9112 §3.2.3", "GET example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET example.com")),
		cfBad("authority-form for OPTIONS", "RFC 9112 §3.2.3", "OPTIONS example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("OPTIONS example.com")),
		cfBad("asterisk-form for GET", "RFC 9112 §3.2.4", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 4),
		cfBad("asterisk followed by more", "RFC 9112 §3.2.4", "OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("absolute-form with userinfo", "RFC 9110 §4.2.4", "GET http://user@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("absolute-form with user and password", "RFC 9110 §4.2.4", "GET http://u:pw@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("absolute-form with empty authority", "RFC 9110 §4.2.1", "GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("absolute-form with bad port", "RFC 9110 §4.2.1", "GET http://example.com:8o/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("absolute-form with six-digit port", "RFC 9110 §4.2.1", "GET http://example.com:123456/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("absolute-form with quote in host", "RFC 9110 §4.2.1", "GET http://exa\"mple/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http://")),
		cfBad("scheme without //", "RFC 9112 §3.2.2", "GET http:/p HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET http")),
		cfBad("URI without authority", "RFC 9112 §3.2.2", "GET mailto:a HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, len("GET mailto")),
		cfBad("scheme starting with a digit", "RFC 9112 §3.2.2", "GET 1http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 4),
		cfBad("control character in target", "RFC 9112 §3.2", "GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 6),
		cfBad("DEL in target", "RFC 9112 §3.2", "GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 6),
		cfBad("HTAB in target", "RFC 9112 §3.2", "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 6),
		// A URI is ASCII (RFC 3986 §2): raw UTF-8 or Latin-1 is for the
		// client to percent-encode, and a hop that passed it on would
		// leave each next one to guess at it (RFC 9112 §3: 400, not an
		// autocorrection).
		cfBad("raw UTF-8 in target", "RFC 9112 §3.2", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 8),
		cfBad("raw Latin-1 in query", "RFC 9112 §3.2", "GET /a?q=\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 9),
		cfBad("raw non-ASCII in absolute-form path", "RFC 9112 §3.2", "GET http://x/\xff HTTP/1.1\r\nHost: x\r\n\r\n", ErrBadTarget, 13),

		// Host, RFC 9112 §3.2.
		{name: "HTTP/1.0 without Host", ref: "RFC 9112 §3.2",
			in:     "GET / HTTP/1.0\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			framing: FramingNone, cl: -1, ka: false},
		{name: "HTTP/1.0 with Host", ref: "RFC 9112 §3.2",
			in:     "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/", ver: cfHTTP10,
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: false},
		{name: "Host name is case-insensitive", ref: "RFC 9110 §5.1",
			in:     "GET / HTTP/1.1\r\nhOsT: x\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"hOsT: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "Host with IP literal and empty port", ref: "RFC 9112 §3.2",
			in:     "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]:\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "[fe80::1%25eth0]:", path: "/",
			fields: []string{"Host: [fe80::1%25eth0]:"}, framing: FramingNone, cl: -1, ka: true},
		{name: "Host with sub-delims and pct-encoding", ref: "RFC 9112 §3.2",
			in:     "GET / HTTP/1.1\r\nHost: a-b.c_d~e!$&'()*+,;=%41:80\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "a-b.c_d~e!$&'()*+,;=%41:80", path: "/",
			fields: []string{"Host: a-b.c_d~e!$&'()*+,;=%41:80"}, framing: FramingNone, cl: -1, ka: true},
		cfBad("HTTP/1.1 without Host", "RFC 9112 §3.2", "GET / HTTP/1.1\r\n\r\n", ErrMissingHost, line2),
		cfBad("HTTP/1.1 without Host, other fields", "RFC 9112 §3.2", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", ErrMissingHost, len("GET / HTTP/1.1\r\nAccept: */*\r\n")),
		cfBad("HTTP/1.1 absolute-form without Host", "RFC 9112 §3.2", "GET http://x/ HTTP/1.1\r\n\r\n", ErrMissingHost, len("GET http://x/ HTTP/1.1\r\n")),
		cfBad("HTTP/1.2 without Host", "RFC 9112 §3.2", "GET / HTTP/1.2\r\n\r\n", ErrMissingHost, line2),
		cfBad("duplicate Host", "RFC 9112 §3.2", cfGetLine+"Host: a\r\nHost: b\r\n\r\n", ErrDuplicateHost, line2),
		cfBad("duplicate identical Host", "RFC 9112 §3.2", cfGetLine+"Host: a\r\nX: y\r\nhost: a\r\n\r\n", ErrDuplicateHost, line2),
		cfBad("duplicate Host in HTTP/1.0", "RFC 9112 §3.2", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", ErrDuplicateHost, len("GET / HTTP/1.0\r\n")),
		cfBad("Host with space", "RFC 9112 §3.2", cfGetLine+"Host: a b\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with userinfo", "RFC 9112 §3.2", cfGetLine+"Host: u@x\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with bad port", "RFC 9112 §3.2", cfGetLine+"Host: x:y\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with six-digit port", "RFC 9112 §3.2", cfGetLine+"Host: x:123456\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with two colons", "RFC 9112 §3.2", cfGetLine+"Host: x:1:2\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with port only", "RFC 9112 §3.2", cfGetLine+"Host: :80\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with unclosed IP literal", "RFC 9112 §3.2", cfGetLine+"Host: [::1\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with empty IP literal", "RFC 9112 §3.2", cfGetLine+"Host: []\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with text after IP literal", "RFC 9112 §3.2", cfGetLine+"Host: [::1]x\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with bracket in reg-name", "RFC 9112 §3.2", cfGetLine+"Host: a[b\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with closing bracket in reg-name", "RFC 9112 §3.2", cfGetLine+"Host: ab]:80\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with bracket inside IP literal", "RFC 9112 §3.2", cfGetLine+"Host: [::[1]\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with truncated pct-encoding", "RFC 9112 §3.2", cfGetLine+"Host: a%4\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with bad pct-encoding", "RFC 9112 §3.2", cfGetLine+"Host: a%zz\r\n\r\n", ErrBadHost, hostAt),
		cfBad("Host with slash", "RFC 9112 §3.2", cfGetLine+"Host: x/y\r\n\r\n", ErrBadHost, hostAt),

		// Request line, RFC 9112 §2.2, §3.
		{name: "empty lines before the request line", ref: "RFC 9112 §2.2",
			in:     "\r\n\r\n" + host11,
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "bare LF empty lines before the request line", ref: "RFC 9112 §2.2",
			in:     "\n\r\n\n" + host11,
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		cfBad("bare LF empty line before the request line, strict", "RFC 9112 §2.2", "\r\n\n"+host11, ErrBareLF, 2),
		{name: "methods are case-sensitive", ref: "RFC 9110 §9.1",
			in:     "get / HTTP/1.1\r\nHost: x\r\n\r\n",
			method: "get", mid: MethodOther, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		cfGet("method HEAD", "RFC 9110 §9.3.2", "HEAD", MethodHead),
		cfGet("method PUT", "RFC 9110 §9.3.4", "PUT", MethodPut),
		cfGet("method DELETE", "RFC 9110 §9.3.5", "DELETE", MethodDelete),
		cfGet("method OPTIONS", "RFC 9110 §9.3.7", "OPTIONS", MethodOptions),
		cfGet("method TRACE", "RFC 9110 §9.3.8", "TRACE", MethodTrace),
		cfGet("method PATCH", "RFC 5789 §2", "PATCH", MethodPatch),
		cfGet("extension method", "RFC 9110 §9.1", "M-SEARCH", MethodOther),
		cfGet("method of every tchar", "RFC 9110 §5.6.2", "!#$%&'*+-.^_`|~09azAZ", MethodOther),
		cfGet("method prefix of a known one", "RFC 9110 §9.1", "GE", MethodOther),
		cfGet("known method as prefix", "RFC 9110 §9.1", "GETS", MethodOther),
		cfBad("method with non-tchar", "RFC 9110 §9.1", "GE(T / HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadMethod, 2),
		cfBad("method with NUL", "RFC 9110 §9.1", "G\x00T / HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadMethod, 1),
		cfBad("method with obs-text", "RFC 9110 §9.1", "G\xc9T / HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadMethod, 1),
		cfBad("HTAB after method", "RFC 9112 §3", "GET\t/ HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadMethod, 3),
		cfBad("leading space", "RFC 9112 §3", " GET / HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadRequestLine, 0),
		cfBad("two spaces after method", "RFC 9112 §3", "GET  / HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadRequestLine, 4),
		cfBad("two spaces after target", "RFC 9112 §3", "GET /  HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("trailing space", "RFC 9112 §3", "GET / HTTP/1.1 \r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("HTTP/0.9 request line", "RFC 9112 §3", "GET /\r\n\r\n", ErrBadRequestLine, 5),
		cfBad("method only", "RFC 9112 §3", "GET\r\n\r\n", ErrBadRequestLine, 3),
		cfBad("method and space only", "RFC 9112 §3", "GET \r\n\r\n", ErrBadRequestLine, 4),
		cfBad("TLS handshake on a plain port", "RFC 9112 §3", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", ErrBadRequestLine, 0),
		cfBad("lower-case HTTP-name", "RFC 9112 §2.3", "GET / http/1.1\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("version without minor", "RFC 9112 §2.3", "GET / HTTP/1\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("version with letter", "RFC 9112 §2.3", "GET / HTTP/1.x\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("version with two-digit minor", "RFC 9112 §2.3", "GET / HTTP/1.10\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("version with two-digit major", "RFC 9112 §2.3", "GET / HTTP/11.1\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("version with comma", "RFC 9112 §2.3", "GET / HTTP/1,1\r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("missing version", "RFC 9112 §2.3", "GET / \r\n"+cfHostX+"\r\n", ErrBadVersion, 6),
		cfBad("HTTP/2.0", "RFC 9112 §2.3", "GET / HTTP/2.0\r\n"+cfHostX+"\r\n", ErrVersionNotHTTP1, 11),
		cfBad("HTTP/0.9 version", "RFC 9112 §2.3", "GET / HTTP/0.9\r\n"+cfHostX+"\r\n", ErrVersionNotHTTP1, 11),
		cfBad("HTTP/3.0", "RFC 9112 §2.3", "GET / HTTP/3.0\r\n"+cfHostX+"\r\n", ErrVersionNotHTTP1, 11),
		{name: "HTTP/1.2 is processed as HTTP/1.1", ref: "RFC 9112 §2.3",
			in:     "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HTTP/1.9 is processed as HTTP/1.1", ref: "RFC 9112 §2.3",
			in:     "GET / HTTP/1.9\r\nHost: x\r\nConnection: close\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: close"}, framing: FramingNone, cl: -1, ka: false},
		cfBad("bare CR after method", "RFC 9112 §2.2", "GET\r/ HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBareCR, 3),
		cfBad("bare CR in target", "RFC 9112 §2.2", "GET /\rx HTTP/1.1\r\n"+cfHostX+"\r\n", ErrBareCR, 5),
		cfBad("bare CR in version", "RFC 9112 §2.2", "GET / HTTP/1.1\rHost: x\r\n\r\n", ErrBareCR, 14),
		cfBad("CR CR LF ending the request line", "RFC 9112 §2.2", "GET / HTTP/1.1\r\r\n"+cfHostX+"\r\n", ErrBareCR, 14),

		// Framing, RFC 9112 §6.
		cfPost("Content-Length", "RFC 9112 §6.2", "Content-Length: 5\r\n", "hello",
			FramingLength, 5, "Content-Length: 5"),
		cfPost("Content-Length zero", "RFC 9112 §6.2", "Content-Length: 0\r\n", "",
			FramingLength, 0, "Content-Length: 0"),
		cfPost("Content-Length with leading zeros", "RFC 9110 §8.6", "Content-Length: 007\r\n", "1234567",
			FramingLength, 7, "Content-Length: 007"),
		cfPost("Content-Length at the int64 limit", "RFC 9110 §8.6", "Content-Length: 9223372036854775807\r\n", "",
			FramingLength, 1<<63-1, "Content-Length: 9223372036854775807"),
		cfPost("identical Content-Length lines fold", "RFC 9110 §8.6", "Content-Length: 5\r\ncontent-length: 5\r\n", "hello",
			FramingLength, 5, "Content-Length: 5", "content-length: 5"),
		cfPost("identical Content-Length list folds", "RFC 9110 §8.6", "Content-Length: 5, 5\r\n", "hello",
			FramingLength, 5, "Content-Length: 5, 5"),
		cfPost("identical Content-Length list without spaces", "RFC 9110 §8.6", "Content-Length: 5,5,5\r\n", "hello",
			FramingLength, 5, "Content-Length: 5,5,5"),
		cfPost("identical Content-Length lists over lines", "RFC 9110 §8.6", "Content-Length: 5 ,\t5\r\nContent-Length: 5\r\n", "hello",
			FramingLength, 5, "Content-Length: 5 ,\t5", "Content-Length: 5"),
		cfPost("Transfer-Encoding chunked", "RFC 9112 §6.1", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n",
			FramingChunked, -1, "Transfer-Encoding: chunked"),
		cfPost("Transfer-Encoding is case-insensitive", "RFC 9112 §7", "transfer-encoding: Chunked\r\n", "",
			FramingChunked, -1, "transfer-encoding: Chunked"),
		cfPost("Transfer-Encoding with OWS", "RFC 9110 §5.6.1", "Transfer-Encoding:\t chunked \t\r\n", "",
			FramingChunked, -1, "Transfer-Encoding: chunked"),
		cfPost("Transfer-Encoding with empty list elements", "RFC 9110 §5.6.1", "Transfer-Encoding: ,chunked,\r\n", "",
			FramingChunked, -1, "Transfer-Encoding: ,chunked,"),
		cfPost("gzip then chunked", "RFC 9112 §6.1", "Transfer-Encoding: gzip, chunked\r\n", "",
			FramingChunked, -1, "Transfer-Encoding: gzip, chunked"),
		cfPost("codings over two lines", "RFC 9112 §6.1", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "",
			FramingChunked, -1, "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
		cfPost("every known coding then chunked", "RFC 9112 §7", "Transfer-Encoding: x-gzip, deflate, compress, x-compress, chunked\r\n", "",
			FramingChunked, -1, "Transfer-Encoding: x-gzip, deflate, compress, x-compress, chunked"),
		cfPost("Transfer_Encoding is another field", "RFC 9110 §5.1", "Transfer_Encoding: chunked\r\nContent-Length: 3\r\n", "abc",
			FramingLength, 3, "Transfer_Encoding: chunked", "Content-Length: 3"),
		cfPost("no length: no body", "RFC 9112 §6.3", "", "",
			FramingNone, -1),

		// Smuggling vectors, RFC 9112 §6.3 and RFC 9110 §8.6.
		cfBad("Content-Length and Transfer-Encoding", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEAndCL, clAt),
		cfBad("Transfer-Encoding and Content-Length", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ErrTEAndCL, clAt+len("Transfer-Encoding: chunked\r\n")),
		cfBad("Content-Length with non-chunked Transfer-Encoding", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Content-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n", ErrTEAndCL, clAt),
		cfBad("Content-Length and Transfer-Encoding in HTTP/1.0", "RFC 9112 §6.3",
			"POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEAndCL, len("POST / HTTP/1.0\r\n")),
		cfBad("differing Content-Length lines", "RFC 9110 §8.6",
			cfPostLine+cfHostX+"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", ErrCLMismatch, clVal+len("5\r\nContent-Length: ")),
		cfBad("differing Content-Length list", "RFC 9110 §8.6",
			cfPostLine+cfHostX+"Content-Length: 5, 6\r\n\r\n", ErrCLMismatch, clVal),
		cfBad("Content-Length zero then five", "RFC 9110 §8.6",
			cfPostLine+cfHostX+"Content-Length: 0\r\nContent-Length: 5\r\n\r\n", ErrCLMismatch, clVal+len("0\r\nContent-Length: ")),
		cfBad("Content-Length with plus sign", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: +5\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("negative Content-Length", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: -1\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with letter", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 5a\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("hexadecimal Content-Length", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 0x5\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with exponent", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 1e3\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with space inside", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 5 5\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("empty Content-Length", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length:\r\n\r\n", ErrBadContentLength, clVal-1),
		cfBad("blank Content-Length", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length:  \r\n\r\n", ErrBadContentLength, clVal+1),
		cfBad("Content-Length with trailing comma", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 5,\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with leading comma", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: ,5\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with empty element", "RFC 9110 §8.6", cfPostLine+cfHostX+"Content-Length: 5,,5\r\n\r\n", ErrBadContentLength, clVal),
		cfBad("Content-Length with NUL", "RFC 9110 §5.5", cfPostLine+cfHostX+"Content-Length: 5\x00\r\n\r\n", ErrBadFieldValue, clVal+1),
		cfBad("Content-Length one past the int64 limit", "RFC 9110 §8.6",
			cfPostLine+cfHostX+"Content-Length: 9223372036854775808\r\n\r\n", ErrCLOverflow, clVal),
		cfBad("Content-Length of twenty digits", "RFC 9110 §8.6",
			cfPostLine+cfHostX+"Content-Length: 99999999999999999999\r\n\r\n", ErrCLOverflow, clVal),
		cfBad("final coding not chunked", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Transfer-Encoding: gzip\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked then gzip", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Transfer-Encoding: chunked, gzip\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked then gzip over two lines", "RFC 9112 §6.3",
			cfPostLine+cfHostX+"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked twice", "RFC 9112 §6.1",
			cfPostLine+cfHostX+"Transfer-Encoding: chunked, chunked\r\n\r\n", ErrChunkedTwice, teVal),
		cfBad("chunked twice over two lines", "RFC 9112 §6.1",
			cfPostLine+cfHostX+"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrChunkedTwice, teVal+len("chunked\r\nTransfer-Encoding: ")),
		cfBad("unknown coding", "RFC 9112 §6.1", cfPostLine+cfHostX+"Transfer-Encoding: foo, chunked\r\n\r\n", ErrUnknownTE, teVal),
		cfBad("unknown coding alone", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: foo\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("unknown coding after another", "RFC 9112 §6.1", cfPostLine+cfHostX+"Transfer-Encoding: gzip, foo, chunked\r\n\r\n", ErrUnknownTE, teVal),
		cfBad("identity coding", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: identity\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked with a parameter", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: chunked;q=1\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked misspelt", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: xchunked\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("chunked followed by unknown", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: chunked, identity\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("empty Transfer-Encoding", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding:\r\n\r\n", ErrTENotChunked, teVal-1),
		cfBad("Transfer-Encoding of commas", "RFC 9112 §6.3", cfPostLine+cfHostX+"Transfer-Encoding: , ,\r\n\r\n", ErrTENotChunked, teVal),
		cfBad("Transfer-Encoding with vertical tab", "RFC 9110 §5.5", cfPostLine+cfHostX+"Transfer-Encoding: chunked\x0b\r\n\r\n", ErrBadFieldValue, teVal+len("chunked")),
		cfBad("Transfer-Encoding in HTTP/1.0", "RFC 9112 §6.1",
			"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEInHTTP10, len("POST / HTTP/1.0\r\n")),
		cfBad("obs-fold in a request", "RFC 9112 §5.2", cfGetLine+cfHostX+"X: a\r\n b\r\n\r\n", ErrObsFold, field3+len("X: a\r\n")),
		cfBad("obs-fold with HTAB in a request", "RFC 9112 §5.2", cfGetLine+cfHostX+"X: a\r\n\tb\r\n\r\n", ErrObsFold, field3+len("X: a\r\n")),
		cfBad("obs-fold of Transfer-Encoding", "RFC 9112 §5.2", cfPostLine+cfHostX+"Transfer-Encoding:\r\n chunked\r\n\r\n", ErrObsFold, clAt+len("Transfer-Encoding:\r\n")),
		cfBad("whitespace-only line in a request", "RFC 9112 §5.2", cfGetLine+cfHostX+"X: a\r\n \r\n\r\n", ErrObsFold, field3+len("X: a\r\n")),
		cfBad("space before colon", "RFC 9112 §5.1", cfGetLine+"Host : x\r\n\r\n", ErrSpaceBeforeColon, line2+4),
		cfBad("HTAB before colon", "RFC 9112 §5.1", cfPostLine+cfHostX+"Transfer-Encoding\t: chunked\r\n\r\n", ErrSpaceBeforeColon, clAt+len("Transfer-Encoding")),
		cfBad("space inside name", "RFC 9112 §5.1", cfGetLine+cfHostX+"X Y: z\r\n\r\n", ErrSpaceBeforeColon, field3+1),
		cfBad("name with non-tchar", "RFC 9110 §5.1", cfGetLine+cfHostX+"X(a): b\r\n\r\n", ErrBadFieldName, field3+1),
		cfBad("name with NUL", "RFC 9110 §5.1", cfGetLine+cfHostX+"X\x00: b\r\n\r\n", ErrBadFieldName, field3+1),
		cfBad("name with DEL", "RFC 9110 §5.1", cfGetLine+cfHostX+"X\x7f: b\r\n\r\n", ErrBadFieldName, field3+1),
		cfBad("name with obs-text", "RFC 9110 §5.1", cfGetLine+cfHostX+"Ho\xc3st: b\r\n\r\n", ErrBadFieldName, field3+2),
		cfBad("empty name", "RFC 9110 §5.1", cfGetLine+cfHostX+": b\r\n\r\n", ErrBadFieldName, field3),
		cfBad("line of non-tchar", "RFC 9110 §5.1", cfGetLine+cfHostX+"@\r\n\r\n", ErrBadFieldName, field3),
		cfBad("no colon", "RFC 9112 §5", cfGetLine+cfHostX+"Hostx\r\n\r\n", ErrNoColon, field3+5),
		cfBad("NUL in value", "RFC 9110 §5.5", cfGetLine+cfHostX+"X: a\x00b\r\n\r\n", ErrBadFieldValue, field3+4),
		cfBad("control character in value", "RFC 9110 §5.5", cfGetLine+cfHostX+"X: a\x01b\r\n\r\n", ErrBadFieldValue, field3+4),
		cfBad("DEL in value", "RFC 9110 §5.5", cfGetLine+cfHostX+"X: a\x7f\r\n\r\n", ErrBadFieldValue, field3+4),
		cfBad("CR in value", "RFC 9110 §5.5", cfGetLine+cfHostX+"X: a\rb\r\n\r\n", ErrBareCR, field3+4),
		cfBad("CR ending a value", "RFC 9112 §2.2", cfGetLine+cfHostX+"X: a\r\r\n\r\n", ErrBareCR, field3+4),
		cfBad("LF in value ends the line", "RFC 9112 §2.2", cfGetLine+cfHostX+"X: a\nb\r\n\r\n", ErrNoColon, field3+6),
		cfBad("LF in value, strict", "RFC 9112 §2.2", cfGetLine+cfHostX+"X: a\nb\r\n\r\n", ErrBareLF, field3+4),
		cfBad("CR in name", "RFC 9112 §2.2", cfGetLine+cfHostX+"X\r: a\r\n\r\n", ErrBareCR, field3+1),
		cfBad("CR ending the field lines", "RFC 9112 §2.2", cfGetLine+cfHostX+"\r\r\n\r\n", ErrBareCR, field3),
		cfBad("bare LF, strict", "RFC 9112 §2.2", "GET / HTTP/1.1\n"+cfHostX+"\r\n", ErrBareLF, 14),
		cfBad("bare LF ending a field, strict", "RFC 9112 §2.2", cfGetLine+"Host: x\n\r\n", ErrBareLF, line2+7),
		cfBad("bare LF ending the head, strict", "RFC 9112 §2.2", cfGetLine+cfHostX+"\n", ErrBareLF, field3),
		{name: "bare LF line ends", ref: "RFC 9112 §2.2",
			in:     "GET / HTTP/1.1\nHost: x\nContent-Length: 0\n\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "mixed line ends", ref: "RFC 9112 §2.2",
			in:     "GET / HTTP/1.1\nHost: x\r\nX: y\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "X: y"}, framing: FramingNone, cl: -1, ka: true},
		cfBad("space before the first field", "RFC 9112 §2.2", cfGetLine+" Host: x\r\n\r\n", ErrLeadingSpace, line2),
		cfBad("HTAB before the first field", "RFC 9112 §2.2", cfGetLine+"\tHost: x\r\n\r\n", ErrLeadingSpace, line2),
		cfBad("whitespace line before the first field", "RFC 9112 §2.2", cfGetLine+" \r\n"+cfHostX+"\r\n", ErrLeadingSpace, line2),

		// Field values, RFC 9110 §5.5.
		{name: "OWS around values is not part of them", ref: "RFC 9110 §5.5",
			in:     "GET / HTTP/1.1\r\nHost: \t x \t\r\nX:y\r\nE:\r\nF: \t \r\nG: a \t b\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "X: y", "E: ", "F: ", "G: a \t b"}, framing: FramingNone, cl: -1, ka: true},
		{name: "obs-text in values", ref: "RFC 9110 §5.5",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9 \xff\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "X: caf\xc3\xa9 \xff"}, framing: FramingNone, cl: -1, ka: true},
		{name: "every tchar in a name", ref: "RFC 9110 §5.1",
			in:     "GET / HTTP/1.1\r\nHost: x\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "!#$%&'*+-.^_`|~09azAZ: v"}, framing: FramingNone, cl: -1, ka: true},
		{name: "pipelined request is not consumed", ref: "RFC 9112 §9.3.2",
			in: host11, tail: "GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "incomplete head", ref: "RFC 9112 §2.1", in: cfGetLine + cfHostX, more: true},
		{name: "head ending in CR", ref: "RFC 9112 §2.1", in: cfGetLine + cfHostX + "\r", more: true},
		{name: "incomplete request line", ref: "RFC 9112 §3", in: "GET / HTTP/1.", more: true},
		{name: "only empty lines", ref: "RFC 9112 §2.2", in: "\r\n\r\n\n", more: true},

		// Connection management, RFC 9112 §9.3.
		{name: "HTTP/1.1 persists by default", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: keep-alive"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HTTP/1.1 close", ref: "RFC 9112 §9.6",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: close"}, framing: FramingNone, cl: -1, ka: false},
		{name: "close wins over keep-alive", ref: "RFC 9112 §9.6",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, CLOSE\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: keep-alive, CLOSE"}, framing: FramingNone, cl: -1, ka: false},
		{name: "close on a second Connection line", ref: "RFC 9110 §7.6.1",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nConnection: x-a\r\nConnection: close\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: x-a", "Connection: close"}, framing: FramingNone, cl: -1, ka: false},
		{name: "HTTP/1.0 closes by default", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.0\r\nConnection: x-a\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Connection: x-a"}, framing: FramingNone, cl: -1, ka: false},
		{name: "HTTP/1.0 keep-alive", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Connection: Keep-Alive"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HTTP/1.0 keep-alive and close", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Connection: keep-alive, close"}, framing: FramingNone, cl: -1, ka: false},
		{name: "HTTP/1.0 Proxy-Connection keep-alive", ref: "RFC 9112 §9.3",
			in:     "GET http://x/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
			method: "GET", mid: MethodGet, target: "http://x/", form: FormAbsolute, scheme: "http", auth: "x", path: "/", ver: cfHTTP10,
			fields: []string{"Proxy-Connection: keep-alive"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HTTP/1.1 Proxy-Connection close", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Proxy-Connection: close"}, framing: FramingNone, cl: -1, ka: false},
		{name: "Connection overrides Proxy-Connection keep-alive", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.0\r\nConnection: x-a\r\nProxy-Connection: keep-alive\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Connection: x-a", "Proxy-Connection: keep-alive"}, framing: FramingNone, cl: -1, ka: false},
		{name: "Connection overrides Proxy-Connection close", ref: "RFC 9112 §9.3",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\nConnection: keep-alive\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Proxy-Connection: close", "Connection: keep-alive"}, framing: FramingNone, cl: -1, ka: true},

		// Expect, RFC 9110 §10.1.1.
		{name: "Expect 100-continue", ref: "RFC 9110 §10.1.1",
			in:     "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
			method: "POST", mid: MethodPost, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields:  []string{"Host: x", "Content-Length: 1", "Expect: 100-continue"},
			framing: FramingLength, cl: 1, ka: true, exp100: true},
		{name: "Expect is case-insensitive", ref: "RFC 9110 §10.1.1",
			in:     "PUT / HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n",
			method: "PUT", mid: MethodPut, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields:  []string{"Host: x", "expect: 100-Continue", "Transfer-Encoding: chunked"},
			framing: FramingChunked, cl: -1, ka: true, exp100: true},
		{name: "other expectation", ref: "RFC 9110 §10.1.1",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Expect: 200-ok"}, framing: FramingNone, cl: -1, ka: true, expOther: true},
		{name: "both expectations", ref: "RFC 9110 §10.1.1",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, ,foo\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Expect: 100-continue, ,foo"}, framing: FramingNone, cl: -1, ka: true, exp100: true, expOther: true},
		{name: "100-continue ignored in HTTP/1.0", ref: "RFC 9110 §10.1.1",
			in:     "POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
			method: "POST", mid: MethodPost, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Content-Length: 1", "Expect: 100-continue"}, framing: FramingLength, cl: 1, ka: false},
		{name: "other expectation in HTTP/1.0", ref: "RFC 9110 §10.1.1",
			in:     "GET / HTTP/1.0\r\nExpect: foo\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Expect: foo"}, framing: FramingNone, cl: -1, ka: false, expOther: true},

		// Upgrade, RFC 9110 §7.8.
		{name: "Upgrade", ref: "RFC 9110 §7.8",
			in:     "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/chat", form: FormOrigin, auth: "x", path: "/chat",
			fields: []string{"Host: x", "Connection: Upgrade", "Upgrade: websocket"}, framing: FramingNone, cl: -1, ka: true, upgrade: true},
		{name: "Upgrade among connection options", ref: "RFC 9110 §7.8",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: keep-alive, upgrade, HTTP2-Settings\r\nHTTP2-Settings: AA\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields:  []string{"Host: x", "Upgrade: h2c", "Connection: keep-alive, upgrade, HTTP2-Settings", "HTTP2-Settings: AA"},
			framing: FramingNone, cl: -1, ka: true, upgrade: true},
		{name: "Upgrade field without the connection option", ref: "RFC 9110 §7.8",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Upgrade: websocket"}, framing: FramingNone, cl: -1, ka: true},
		{name: "upgrade option without the Upgrade field", ref: "RFC 9110 §7.8",
			in:     "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "Connection: upgrade"}, framing: FramingNone, cl: -1, ka: true},
		{name: "Upgrade ignored in HTTP/1.0", ref: "RFC 9110 §7.8",
			in:     "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, path: "/", ver: cfHTTP10,
			fields: []string{"Connection: Upgrade", "Upgrade: websocket"}, framing: FramingNone, cl: -1, ka: false},

		// Limits, RFC 9110 §5.4.
		{name: "head exactly at the limit", ref: "RFC 9110 §5.4",
			in: host11, opts: Options{Limits: Limits{MaxHeadBytes: len(host11)}},
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x"}, framing: FramingNone, cl: -1, ka: true},
		{name: "head one over the limit", ref: "RFC 9110 §5.4", in: host11,
			opts: Options{Limits: Limits{MaxHeadBytes: len(host11) - 1}}, err: ErrHeadTooLarge, off: len(host11) - 1},
		{name: "incomplete head over the limit", ref: "RFC 9110 §5.4", in: cfGetLine + "Host: xxxxxxxx",
			opts: Options{Limits: Limits{MaxHeadBytes: len(cfGetLine) + 5}}, err: ErrHeadTooLarge, off: len(cfGetLine) + 5},
		{name: "start line over the limit", ref: "RFC 9112 §3", in: host11,
			opts: Options{Limits: Limits{MaxHeadBytes: 10}}, err: ErrStartLineTooLong, off: 10},
		{name: "start line ending at the limit", ref: "RFC 9112 §3", in: host11,
			opts: Options{Limits: Limits{MaxHeadBytes: len(cfGetLine) - 1}}, err: ErrStartLineTooLong, off: len(cfGetLine) - 1},
		{name: "start line within the limit", ref: "RFC 9112 §3", in: host11,
			opts: Options{Limits: Limits{MaxHeadBytes: len(cfGetLine)}}, err: ErrHeadTooLarge, off: len(cfGetLine)},
		{name: "empty lines count toward the limit", ref: "RFC 9112 §2.2", in: "\r\n\r\n\r\n\r\n\r\n\r\n" + host11,
			opts: Options{Limits: Limits{MaxHeadBytes: 11}}, err: ErrStartLineTooLong, off: 11},
		{name: "fields exactly at the limit", ref: "RFC 9110 §5.4",
			in: cfGetLine + cfHostX + "A: 1\r\nB: 2\r\n\r\n", opts: Options{Limits: Limits{MaxFields: 3}},
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", "A: 1", "B: 2"}, framing: FramingNone, cl: -1, ka: true},
		{name: "fields one over the limit", ref: "RFC 9110 §5.4",
			in: cfGetLine + cfHostX + "A: 1\r\nB: 2\r\n\r\n", opts: Options{Limits: Limits{MaxFields: 2}},
			err: ErrTooManyFields, off: field3 + len("A: 1\r\n")},
		{name: "default head limit exactly", ref: "RFC 9110 §5.4",
			in:     cfGetLine + cfHostX + big + "\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: []string{"Host: x", strings.TrimSuffix(big, "\r\n")}, framing: FramingNone, cl: -1, ka: true},
		{name: "default head limit plus one", ref: "RFC 9110 §5.4", in: cfGetLine + cfHostX + "Y" + big + "\r\n",
			err: ErrHeadTooLarge, off: max64K},
		{name: "default start line limit", ref: "RFC 9112 §3", in: "GET /" + strings.Repeat("a", max64K) + " HTTP/1.1\r\n" + cfHostX + "\r\n",
			err: ErrStartLineTooLong, off: max64K},
		{name: "default field limit exactly", ref: "RFC 9110 §5.4",
			in:     cfGetLine + cfHostX + cfFieldLines(1, DefaultMaxFields) + "\r\n",
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields: append([]string{"Host: x"}, cfFieldList(1, DefaultMaxFields)...), framing: FramingNone, cl: -1, ka: true},
		{name: "default field limit plus one", ref: "RFC 9110 §5.4",
			in:  cfGetLine + cfHostX + cfFieldLines(1, DefaultMaxFields+1) + "\r\n",
			err: ErrTooManyFields, off: field3 + len(cfFieldLines(1, DefaultMaxFields))},
		{name: "field limit above 32767", ref: "RFC 9110 §5.4",
			in:     cfGetLine + cfFieldLines(0, 1<<15) + cfHostX + "Content-Length: 0\r\n\r\n",
			opts:   Options{Limits: Limits{MaxHeadBytes: 1 << 20, MaxFields: 1<<15 + 2}},
			method: "GET", mid: MethodGet, target: "/", form: FormOrigin, auth: "x", path: "/",
			fields:  append(cfFieldList(0, 1<<15), "Host: x", "Content-Length: 0"),
			framing: FramingLength, cl: 0, ka: true},
	}
	// The strict variants of the bare LF cases.
	for i := range cases {
		if strings.HasSuffix(cases[i].name, ", strict") {
			cases[i].opts.StrictCRLF = true
		}
	}
	return cases
}

func TestConformanceRequest(t *testing.T) {
	for _, c := range cfRequestCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.ref == "" {
				t.Fatal("case names no RFC section")
			}
			o := runRequest(t, c.opts, c.in+c.tail)
			c.check(t, o)
		})
	}
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

type respCase struct {
	name string
	ref  string
	in   string // the head, or the whole input when it is rejected
	tail string // bytes after the head: not consumed
	opts Options
	req  Method // method of the request the response answers

	err  *Error
	off  int
	more bool

	ver     Version // zero means HTTP/1.1
	status  int
	reason  string
	fields  []string
	framing Framing
	cl      int64
	ka      bool
	interim bool
	upgrade bool
	hint    string // KeepAliveHint as "timeout,max"; "" means "-1,-1"
	raw     string // Raw(); "" means in, unchanged
}

type respView struct {
	N                           int
	Version                     Version
	Status                      int
	Reason                      string
	Fields                      []string
	Framing                     Framing
	CL                          int64
	KeepAlive, Interim, Upgrade bool
	KAHint, Raw                 string
}

func (c *respCase) check(t *testing.T, o headObs) {
	t.Helper()
	if o.ReqMethod != c.req {
		t.Errorf("request method %v, want %v", o.ReqMethod, c.req)
	}
	cfCheckOutcome(t, c.err, c.off, c.more, o)
	if c.err != nil || c.more {
		return
	}
	want := respView{
		N: len(c.in), Version: c.ver, Status: c.status, Reason: c.reason, Fields: c.fields,
		Framing: c.framing, CL: c.cl, KeepAlive: c.ka, Interim: c.interim, Upgrade: c.upgrade,
		KAHint: c.hint, Raw: c.raw,
	}
	if want.Version == (Version{}) {
		want.Version = cfHTTP11
	}
	if want.KAHint == "" {
		want.KAHint = "-1,-1"
	}
	if want.Raw == "" {
		want.Raw = c.in
	}
	got := respView{
		N: o.N, Version: o.Version, Status: o.Status, Reason: o.Reason, Fields: o.Fields,
		Framing: o.Framing, CL: o.CL, KeepAlive: o.KeepAlive, Interim: o.Interim, Upgrade: o.Upgrade,
		KAHint: o.KAHint, Raw: o.Raw,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parse of %s\n got: %+v\nwant: %+v", splitQuote(c.in), got, want)
	}
}

// cfOK200 builds an accepted "HTTP/1.1 200 OK" with the given field lines.
func cfOK200(name, ref string, req Method, fields, tail string, framing Framing, cl int64, ka bool, want ...string) respCase {
	return respCase{
		name: name, ref: ref, req: req, in: cfOKLine + fields + "\r\n", tail: tail,
		status: 200, reason: "OK", fields: want, framing: framing, cl: cl, ka: ka,
	}
}

func (c respCase) withHint(hint string) respCase { c.hint = hint; return c }

func cfBadResp(name, ref, in string, rule *Error, off int) respCase {
	return respCase{name: name, ref: ref, in: in, err: rule, off: off}
}

func cfResponseCases() []respCase {
	const (
		line2 = len(cfOKLine)
		clVal = line2 + len("Content-Length: ")
		teVal = line2 + len("Transfer-Encoding: ")
	)
	return []respCase{
		// Status line, RFC 9112 §4.
		{name: "status line", ref: "RFC 9112 §4", in: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
			status: 404, reason: "Not Found", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "empty reason after SP", ref: "RFC 9112 §4", in: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "no SP after the code", ref: "RFC 9112 §4", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "reason with HTAB, SP and obs-text", ref: "RFC 9112 §4", in: "HTTP/1.1 200 \tO K\xff \r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "\tO K\xff ", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "unregistered status code", ref: "RFC 9110 §15", in: "HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n",
			status: 599, reason: "Whatever", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "status code above 599", ref: "RFC 9110 §15", in: "HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n",
			status: 999, reason: "X", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "HTTP/1.2 is processed as HTTP/1.1", ref: "RFC 9112 §2.3", in: "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "bare LF line ends", ref: "RFC 9112 §2.2", in: "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		cfBadResp("bare LF, strict", "RFC 9112 §2.2", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", ErrBareLF, 15),
		cfBadResp("one-digit code", "RFC 9110 §15", "HTTP/1.1 2 OK\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("two-digit code", "RFC 9110 §15", "HTTP/1.1 20 OK\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("four-digit code", "RFC 9110 §15", "HTTP/1.1 2000 OK\r\n\r\n", ErrBadStatusCode, 12),
		cfBadResp("code below 100", "RFC 9110 §15", "HTTP/1.1 099 X\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("letters for the code", "RFC 9110 §15", "HTTP/1.1 abc OK\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("negative code", "RFC 9110 §15", "HTTP/1.1 -20 OK\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("reason glued to the code", "RFC 9112 §4", "HTTP/1.1 200OK\r\n\r\n", ErrBadStatusCode, 12),
		cfBadResp("two spaces before the code", "RFC 9112 §4", "HTTP/1.1  200 OK\r\n\r\n", ErrBadStatusCode, 9),
		cfBadResp("HTAB before the code", "RFC 9112 §4", "HTTP/1.1\t200 OK\r\n\r\n", ErrBadStatusLine, 8),
		cfBadResp("too short", "RFC 9112 §4", "HTTP/1.1 20\r\n\r\n", ErrBadStatusLine, 0),
		cfBadResp("version only", "RFC 9112 §4", "HTTP/1.1\r\n\r\n", ErrBadStatusLine, 0),
		cfBadResp("empty line before the status line", "RFC 9112 §4", "\r\nHTTP/1.1 200 OK\r\n\r\n", ErrBadStatusLine, 0),
		cfBadResp("bare CR in short status line", "RFC 9112 §2.2", "HTTP/1.1\r\r\n\r\n", ErrBareCR, 8),
		cfBadResp("bare CR in version", "RFC 9112 §2.2", "HTTP/1\r1 200\r\n\r\n", ErrBareCR, 6),
		cfBadResp("NUL in reason", "RFC 9112 §4", "HTTP/1.1 200 O\x00K\r\n\r\n", ErrBadStatusLine, 14),
		cfBadResp("bare CR in reason", "RFC 9112 §2.2", "HTTP/1.1 200 O\rK\r\n\r\n", ErrBareCR, 14),
		cfBadResp("lower-case HTTP-name", "RFC 9112 §2.3", "http/1.1 200 OK\r\n\r\n", ErrBadVersion, 0),
		cfBadResp("version without minor", "RFC 9112 §2.3", "HTTP/2 200 OK\r\n\r\n", ErrBadVersion, 0),
		cfBadResp("not HTTP", "RFC 9112 §2.3", "ICY 200 OK Radio\r\n\r\n", ErrBadVersion, 0),
		cfBadResp("HTTP/2.0", "RFC 9112 §2.3", "HTTP/2.0 200 OK\r\n\r\n", ErrVersionNotHTTP1, 5),
		cfBadResp("HTTP/0.9", "RFC 9112 §2.3", "HTTP/0.9 200 OK\r\n\r\n", ErrVersionNotHTTP1, 5),
		{name: "incomplete response head", ref: "RFC 9112 §2.1", in: cfOKLine + "Content-Length: 0\r\n", more: true},
		{name: "start line over the limit", ref: "RFC 9112 §4", in: "HTTP/1.1 200 " + strings.Repeat("a", 40) + "\r\n\r\n",
			opts: Options{Limits: Limits{MaxHeadBytes: 32}}, err: ErrStartLineTooLong, off: 32},

		// Framing, RFC 9112 §6.3.
		cfOK200("Content-Length", "RFC 9112 §6.3", MethodGet, "Content-Length: 5\r\n", "hello",
			FramingLength, 5, true, "Content-Length: 5"),
		cfOK200("identical Content-Length list", "RFC 9112 §6.3", MethodGet, "Content-Length: 5, 5\r\n", "hello",
			FramingLength, 5, true, "Content-Length: 5, 5"),
		cfOK200("chunked", "RFC 9112 §6.3", MethodGet, "Transfer-Encoding: chunked\r\n", "0\r\n\r\n",
			FramingChunked, -1, true, "Transfer-Encoding: chunked"),
		cfOK200("gzip then chunked", "RFC 9112 §6.3", MethodGet, "Transfer-Encoding: gzip, chunked\r\n", "",
			FramingChunked, -1, true, "Transfer-Encoding: gzip, chunked"),
		cfOK200("final coding not chunked: until close", "RFC 9112 §6.3", MethodGet, "Transfer-Encoding: gzip\r\n", "data",
			FramingUntilClose, -1, false, "Transfer-Encoding: gzip"),
		cfOK200("chunked then gzip: until close", "RFC 9112 §6.3", MethodGet, "Transfer-Encoding: chunked, gzip\r\n", "data",
			FramingUntilClose, -1, false, "Transfer-Encoding: chunked, gzip"),
		cfOK200("no length: until close", "RFC 9112 §6.3", MethodGet, "", "data",
			FramingUntilClose, -1, false),
		cfOK200("no length with keep-alive: until close", "RFC 9112 §6.3", MethodGet, "Connection: keep-alive\r\n", "",
			FramingUntilClose, -1, false, "Connection: keep-alive"),
		cfOK200("close", "RFC 9112 §9.6", MethodGet, "Content-Length: 0\r\nConnection: close\r\n", "",
			FramingLength, 0, false, "Content-Length: 0", "Connection: close"),
		cfOK200("Keep-Alive hint", "RFC 2068 §19.7.1.1", MethodGet, "Content-Length: 0\r\nKeep-Alive: timeout=5, max=100\r\n", "",
			FramingLength, 0, true, "Content-Length: 0", "Keep-Alive: timeout=5, max=100").withHint("5,100"),
		cfOK200("Keep-Alive hint over lines with OWS", "RFC 2068 §19.7.1.1", MethodGet, "Content-Length: 0\r\nKeep-Alive: foo, MAX = 7\r\nKeep-Alive: Timeout=30\r\n", "",
			FramingLength, 0, true, "Content-Length: 0", "Keep-Alive: foo, MAX = 7", "Keep-Alive: Timeout=30").withHint("30,7"),
		cfOK200("Keep-Alive hint with bad numbers", "RFC 2068 §19.7.1.1", MethodGet, "Content-Length: 0\r\nKeep-Alive: timeout=-5, max=9999999999\r\n", "",
			FramingLength, 0, true, "Content-Length: 0", "Keep-Alive: timeout=-5, max=9999999999"),
		{name: "HTTP/1.0 with length closes", ref: "RFC 9112 §9.3", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", tail: "ok",
			ver: cfHTTP10, status: 200, reason: "OK", fields: []string{"Content-Length: 2"}, framing: FramingLength, cl: 2, ka: false},
		{name: "HTTP/1.0 keep-alive", ref: "RFC 9112 §9.3", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
			ver: cfHTTP10, status: 200, reason: "OK", fields: []string{"Content-Length: 2", "Connection: keep-alive", "Keep-Alive: timeout=5, max=100"},
			framing: FramingLength, cl: 2, ka: true, hint: "5,100"},
		{name: "HTTP/1.0 keep-alive until close", ref: "RFC 9112 §9.3", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
			ver: cfHTTP10, status: 200, reason: "OK", fields: []string{"Connection: keep-alive"}, framing: FramingUntilClose, cl: -1, ka: false},
		{name: "HTTP/1.0 304 keep-alive", ref: "RFC 9112 §9.3", in: "HTTP/1.0 304 Not Modified\r\nConnection: keep-alive\r\n\r\n",
			ver: cfHTTP10, status: 304, reason: "Not Modified", fields: []string{"Connection: keep-alive"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HTTP/1.0 304", ref: "RFC 9112 §9.3", in: "HTTP/1.0 304 Not Modified\r\n\r\n",
			ver: cfHTTP10, status: 304, reason: "Not Modified", framing: FramingNone, cl: -1, ka: false},
		{name: "HEAD: no body", ref: "RFC 9112 §6.3", req: MethodHead, in: cfOKLine + "Content-Length: 42\r\n\r\n", tail: "HTTP/1.1 200 OK\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 42"}, framing: FramingNone, cl: 42, ka: true},
		{name: "HEAD with chunked: no body", ref: "RFC 9112 §6.3", req: MethodHead, in: cfOKLine + "Transfer-Encoding: chunked\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Transfer-Encoding: chunked"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HEAD with invalid Content-Length", ref: "RFC 9112 §6.3", req: MethodHead, in: cfOKLine + "Content-Length: abc\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: abc"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HEAD with differing Content-Length", ref: "RFC 9112 §6.3", req: MethodHead, in: cfOKLine + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 1", "Content-Length: 2"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HEAD with both framings", ref: "RFC 9112 §6.3", req: MethodHead, in: cfOKLine + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 1", "Transfer-Encoding: chunked"}, framing: FramingNone, cl: -1, ka: true},
		{name: "HEAD in HTTP/1.0 with chunked", ref: "RFC 9112 §6.3", req: MethodHead, in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			ver: cfHTTP10, status: 200, reason: "OK", fields: []string{"Transfer-Encoding: chunked"}, framing: FramingNone, cl: -1, ka: false},
		{name: "100 Continue", ref: "RFC 9110 §15.2.1", req: MethodPost, in: "HTTP/1.1 100 Continue\r\n\r\n", tail: cfOKLine,
			status: 100, reason: "Continue", framing: FramingNone, cl: -1, ka: true, interim: true},
		{name: "103 Early Hints", ref: "RFC 8297 §2", in: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
			status: 103, reason: "Early Hints", fields: []string{"Link: </s.css>; rel=preload"}, framing: FramingNone, cl: -1, ka: true, interim: true},
		{name: "1xx with Content-Length", ref: "RFC 9112 §6.3", in: "HTTP/1.1 199 X\r\nContent-Length: 5\r\n\r\n",
			status: 199, reason: "X", fields: []string{"Content-Length: 5"}, framing: FramingNone, cl: 5, ka: true, interim: true},
		{name: "101 Switching Protocols", ref: "RFC 9112 §6.3", in: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", tail: "\x81\x00",
			status: 101, reason: "Switching Protocols", fields: []string{"Connection: Upgrade", "Upgrade: websocket"},
			framing: FramingTunnel, cl: -1, ka: false, upgrade: true},
		{name: "101 with Content-Length", ref: "RFC 9112 §6.3", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n",
			status: 101, reason: "Switching Protocols", fields: []string{"Upgrade: h2c", "Content-Length: 5"},
			framing: FramingTunnel, cl: -1, ka: false},
		{name: "204 No Content", ref: "RFC 9112 §6.3", in: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
			status: 204, reason: "No Content", fields: []string{"Content-Length: 0"}, framing: FramingNone, cl: 0, ka: true},
		{name: "204 with chunked", ref: "RFC 9112 §6.3", in: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 204, reason: "No Content", fields: []string{"Transfer-Encoding: chunked"}, framing: FramingNone, cl: -1, ka: true},
		{name: "304 Not Modified", ref: "RFC 9112 §6.3", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
			status: 304, reason: "Not Modified", fields: []string{"Content-Length: 1234"}, framing: FramingNone, cl: 1234, ka: true},
		{name: "304 with Content-Length list", ref: "RFC 9112 §6.3", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 7, 7\r\n\r\n",
			status: 304, reason: "Not Modified", fields: []string{"Content-Length: 7, 7"}, framing: FramingNone, cl: 7, ka: true},
		{name: "304 with close", ref: "RFC 9112 §9.6", in: "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n",
			status: 304, reason: "Not Modified", fields: []string{"Connection: close"}, framing: FramingNone, cl: -1, ka: false},
		{name: "2xx to CONNECT: tunnel", ref: "RFC 9112 §6.3", req: MethodConnect, in: "HTTP/1.1 200 Connection established\r\n\r\n", tail: "\x16\x03\x01",
			status: 200, reason: "Connection established", framing: FramingTunnel, cl: -1, ka: false},
		{name: "2xx to CONNECT ignores the framing fields", ref: "RFC 9112 §6.3", req: MethodConnect,
			in:     "HTTP/1.1 206 X\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 206, reason: "X", fields: []string{"Content-Length: 5", "Transfer-Encoding: chunked"}, framing: FramingTunnel, cl: -1, ka: false},
		{name: "407 to CONNECT", ref: "RFC 9112 §6.3", req: MethodConnect,
			in:     "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n",
			status: 407, reason: "Proxy Authentication Required", fields: []string{"Proxy-Authenticate: Basic realm=\"p\"", "Content-Length: 0"},
			framing: FramingLength, cl: 0, ka: true},
		{name: "100 to CONNECT", ref: "RFC 9112 §6.3", req: MethodConnect, in: "HTTP/1.1 100 Continue\r\n\r\n",
			status: 100, reason: "Continue", framing: FramingNone, cl: -1, ka: true, interim: true},
		cfBadResp("Content-Length and Transfer-Encoding", "RFC 9112 §6.3",
			cfOKLine+"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEAndCL, line2),
		cfBadResp("differing Content-Length", "RFC 9110 §8.6",
			cfOKLine+"Content-Length: 5\r\nContent-Length: 50\r\n\r\n", ErrCLMismatch, clVal+len("5\r\nContent-Length: ")),
		cfBadResp("negative Content-Length", "RFC 9110 §8.6", cfOKLine+"Content-Length: -1\r\n\r\n", ErrBadContentLength, clVal),
		cfBadResp("Content-Length overflow", "RFC 9110 §8.6", cfOKLine+"Content-Length: 18446744073709551616\r\n\r\n", ErrCLOverflow, clVal),
		cfBadResp("unknown coding", "RFC 9112 §6.1", cfOKLine+"Transfer-Encoding: br\r\n\r\n", ErrUnknownTE, teVal),
		cfBadResp("chunked twice", "RFC 9112 §6.1", cfOKLine+"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrChunkedTwice,
			teVal+len("chunked\r\nTransfer-Encoding: ")),
		cfBadResp("Transfer-Encoding in HTTP/1.0", "RFC 9112 §6.1", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEInHTTP10, line2),

		// Field lines, RFC 9112 §5.
		{name: "obs-fold unfolded", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a\r\n b\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: a   b", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true,
			raw: cfOKLine + "X-F: a   b\r\nContent-Length: 0\r\n\r\n"},
		{name: "obs-fold with OWS unfolded", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a \r\n\t b \r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: a     b", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true,
			raw: cfOKLine + "X-F: a     b \r\nContent-Length: 0\r\n\r\n"},
		{name: "several obs-folds unfolded", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a\r\n b\r\n  c\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: a   b    c"}, framing: FramingUntilClose, cl: -1, ka: false,
			raw: cfOKLine + "X-F: a   b    c\r\n\r\n"},
		{name: "obs-fold after an empty value", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F:\r\n b\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: b", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "blank obs-fold line", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a\r\n \t\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: a", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true},
		{name: "obs-fold with bare LF", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a\n b\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"X-F: a  b", "Content-Length: 0"}, framing: FramingLength, cl: 0, ka: true,
			raw: cfOKLine + "X-F: a  b\nContent-Length: 0\r\n\r\n"},
		{name: "obs-fold of Connection", ref: "RFC 9112 §5.2", in: cfOKLine + "Content-Length: 0\r\nConnection: keep-alive,\r\n close\r\n\r\n",
			status: 200, reason: "OK", fields: []string{"Content-Length: 0", "Connection: keep-alive,   close"}, framing: FramingLength, cl: 0, ka: false,
			raw: cfOKLine + "Content-Length: 0\r\nConnection: keep-alive,   close\r\n\r\n"},
		cfBadResp("obs-fold inside Content-Length", "RFC 9112 §5.2", cfOKLine+"Content-Length: 1\r\n 0\r\n\r\n", ErrBadContentLength, clVal),
		cfBadResp("obs-fold with NUL", "RFC 9110 §5.5", cfOKLine+"X: a\r\n b\x00\r\n\r\n", ErrBadFieldValue, line2+len("X: a\r\n b")),
		{name: "obs-fold rejected by option", ref: "RFC 9112 §5.2", in: cfOKLine + "X-F: a\r\n b\r\n\r\n",
			opts: Options{RejectObsFold: true}, err: ErrObsFold, off: line2 + len("X-F: a\r\n")},
		cfBadResp("space before the first field", "RFC 9112 §2.2", cfOKLine+" X: a\r\n\r\n", ErrLeadingSpace, line2),
		cfBadResp("space before colon", "RFC 9112 §5.1", cfOKLine+"Content-Length : 5\r\n\r\n", ErrSpaceBeforeColon, line2+len("Content-Length")),
		cfBadResp("bad field name", "RFC 9110 §5.1", cfOKLine+"X\"Y: 5\r\n\r\n", ErrBadFieldName, line2+1),
		cfBadResp("no colon", "RFC 9112 §5", cfOKLine+"X\r\n\r\n", ErrNoColon, line2+1),
		cfBadResp("NUL in value", "RFC 9110 §5.5", cfOKLine+"X: \x00\r\n\r\n", ErrBadFieldValue, line2+3),
		cfBadResp("bare CR in value", "RFC 9112 §2.2", cfOKLine+"X: a\rb\r\n\r\n", ErrBareCR, line2+4),
		{name: "fields one over the limit", ref: "RFC 9110 §5.4", in: cfOKLine + "A: 1\r\nB: 2\r\n\r\n",
			opts: Options{Limits: Limits{MaxFields: 1}}, err: ErrTooManyFields, off: line2 + len("A: 1\r\n")},
		{name: "head over the limit", ref: "RFC 9110 §5.4", in: cfOKLine + "A: 1\r\nB: 2\r\n\r\n",
			opts: Options{Limits: Limits{MaxHeadBytes: line2 + 8}}, err: ErrHeadTooLarge, off: line2 + 8},
	}
}

func TestConformanceResponse(t *testing.T) {
	for _, c := range cfResponseCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.ref == "" {
				t.Fatal("case names no RFC section")
			}
			if strings.HasSuffix(c.name, ", strict") {
				c.opts.StrictCRLF = true
			}
			o := runResponse(t, c.opts, c.req, c.in+c.tail)
			c.check(t, o)
		})
	}
}

// TestConformanceInterimThenFinal parses interim responses and the final
// one from a single buffer, resetting between them: the request method
// set once must survive every Reset (RFC 9110 §15.2).
func TestConformanceInterimThenFinal(t *testing.T) {
	type msg struct {
		status  int
		interim bool
		framing Framing
		cl      int64
	}
	cases := []struct {
		name, ref string
		req       Method
		in        string
		rest      string // left after the last head
		want      []msg
	}{
		{"HEAD after 100 and 103", "RFC 9110 §15.2", MethodHead,
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
			"", []msg{{100, true, FramingNone, -1}, {103, true, FramingNone, -1}, {200, false, FramingNone, 5}}},
		{"CONNECT after 100", "RFC 9110 §15.2", MethodConnect,
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\n\x16\x03",
			"\x16\x03", []msg{{100, true, FramingNone, -1}, {200, false, FramingTunnel, -1}}},
		{"POST after 100", "RFC 9110 §15.2", MethodPost,
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			"0\r\n\r\n", []msg{{100, true, FramingNone, -1}, {201, false, FramingChunked, -1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, cut := range splitCuttings(t, len(c.in)) {
				buf := []byte(c.in)
				var r Response
				r.SetRequestMethod(c.req)
				start := 0
				var got []msg
				for range c.want {
					n, err := feedHead(&r, buf, start, cut.ends)
					if err != nil {
						t.Fatalf("%s (%s): message %d at %d: %v", cut.name, c.ref, len(got), start, err)
					}
					got = append(got, msg{r.Status(), r.IsInterim(), r.Framing(), r.ContentLength()})
					start += n
					r.ResetInterim()
				}
				if !reflect.DeepEqual(got, c.want) || c.in[start:] != c.rest {
					t.Errorf("%s (%s): got %+v rest %q, want %+v rest %q", cut.name, c.ref, got, c.in[start:], c.want, c.rest)
				}
			}
		})
	}
}

// TestConformancePipelined parses pipelined requests from one buffer with
// Reset between them (RFC 9112 §9.3.2).
func TestConformancePipelined(t *testing.T) {
	const in = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: y\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.0\r\n\r\n"
	for _, cut := range splitCuttings(t, len(in)) {
		buf := []byte(in)
		var r Request
		var got []string
		start := 0
		for start < len(in) {
			n, err := feedHead(&r, buf, start, cut.ends)
			if err != nil {
				t.Fatalf("%s: at %d: %v", cut.name, start, err)
			}
			got = append(got, string(r.Method())+" "+string(r.Target())+" "+r.Version().String()+" "+string(r.Authority()))
			start += n
			if r.Framing() == FramingLength {
				start += int(r.ContentLength())
			}
			r.Reset()
		}
		want := []string{"GET /a HTTP/1.1 x", "POST /b HTTP/1.1 y", "GET /c HTTP/1.0 "}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, want %q", cut.name, got, want)
		}
	}
}

// ---------------------------------------------------------------------------
// Hop-by-hop fields, RFC 9110 §7.6.1
// ---------------------------------------------------------------------------

func TestConformanceHopByHop(t *testing.T) {
	cases := []struct {
		name, ref string
		resp      bool
		in        string
		hop       []string // the fields (by line) that are hop-by-hop
	}{
		{name: "fixed hop-by-hop fields in a request", ref: "RFC 9110 §7.6.1",
			in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
				"TE: trailers\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eDp5\r\n" +
				"Accept: */*\r\nAuthorization: Basic eDp5\r\nVia: 1.1 p\r\nCookie: a=b\r\n\r\n",
			hop: []string{"Connection: keep-alive", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive", "TE: trailers",
				"Trailer: X-T", "Transfer-Encoding: chunked", "Upgrade: h2c", "Proxy-Authorization: Basic eDp5"}},
		{name: "fixed hop-by-hop fields in a response", ref: "RFC 9110 §7.6.1", resp: true,
			in: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nWWW-Authenticate: Basic\r\n" +
				"Proxy-Support: Session-Based-Authentication\r\nCONNECTION: Close\r\ncontent-length: 0\r\n\r\n",
			hop: []string{"Proxy-Authenticate: Basic realm=\"p\"", "CONNECTION: Close"}},
		{name: "fields named in Connection, any case", ref: "RFC 9110 §7.6.1",
			in:  "GET / HTTP/1.1\r\nHost: x\r\nx-foo: 1\r\nX-BAR: 2\r\nX-Baz: 3\r\nConnection: X-Foo, x-bar\r\nX-FOO: 4\r\n\r\n",
			hop: []string{"x-foo: 1", "X-BAR: 2", "Connection: X-Foo, x-bar", "X-FOO: 4"}},
		{name: "Connection over two lines", ref: "RFC 9110 §7.6.1", resp: true,
			in:  "HTTP/1.1 200 OK\r\nConnection: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nConnection: c,\r\nContent-Length: 0\r\n\r\n",
			hop: []string{"Connection: a", "A: 1", "C: 3", "Connection: c,"}},
		{name: "indexed field named in Connection", ref: "RFC 9110 §7.6.1",
			in:  "GET / HTTP/1.1\r\nHost: x\r\nVia: 1.1 a\r\nConnection: via\r\nExpect: foo\r\n\r\n",
			hop: []string{"Via: 1.1 a", "Connection: via"}},
		{name: "options of Proxy-Connection without Connection", ref: "RFC 9112 §9.3",
			in:  "GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
			hop: []string{"Proxy-Connection: keep-alive, X-A", "X-A: 1"}},
		{name: "close and keep-alive name no field", ref: "RFC 9110 §7.6.1",
			in:  "GET / HTTP/1.1\r\nHost: x\r\nClose: 1\r\nConnection: close, keep-alive\r\n\r\n",
			hop: []string{"Connection: close, keep-alive"}},
		{name: "end-to-end fields only", ref: "RFC 9110 §7.6.1",
			in:  "GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nContent-Length: 0\r\nConnectionX: y\r\n\r\n",
			hop: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var o headObs
			if c.resp {
				o = runResponse(t, Options{}, MethodGet, c.in)
			} else {
				o = runRequest(t, Options{}, c.in)
			}
			cfCheckOutcome(t, nil, 0, false, o)
			var hop []string
			for i, f := range o.Fields {
				if o.Hop[i] {
					hop = append(hop, f)
				}
			}
			if !reflect.DeepEqual(hop, c.hop) {
				t.Errorf("%s: hop-by-hop %q, want %q", c.ref, hop, c.hop)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Serializer
// ---------------------------------------------------------------------------

func TestConformanceSerialize(t *testing.T) {
	cases := []struct {
		name, ref string
		resp      bool
		req       Method // for responses
		in        string
		edit      func(e *Edits) // nil: no Edits at all
		out       string
	}{
		{name: "unchanged but the version", ref: "RFC 9110 §6.2",
			in:  "GET /a?b HTTP/1.0\r\nHost: x\r\nX-A:1\r\nx-b: \t2 \r\nX-E:\r\n\r\n",
			out: "GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-b: 2\r\nX-E: \r\n\r\n"},
		{name: "zero Edits", ref: "RFC 9110 §6.2",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			edit: func(e *Edits) {},
			out:  "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		{name: "strip hop-by-hop", ref: "RFC 9110 §7.6.1",
			in: "POST http://x/p HTTP/1.1\r\nHost: x\r\nConnection: X-A, keep-alive\r\nKeep-Alive: 5\r\nX-A: 1\r\nProxy-Connection: k\r\n" +
				"TE: trailers\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n",
			edit: func(e *Edits) { e.StripHopByHop = true },
			out:  "POST http://x/p HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"},
		{name: "keep Upgrade for a WebSocket handshake", ref: "RFC 9110 §7.8",
			in: "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
			edit: func(e *Edits) {
				e.StripHopByHop, e.Keep = true, HeaderSet(0).With(HdrUpgrade)
				e.Set("Connection", []byte("Upgrade"))
			},
			out: "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\n\r\n"},
		{name: "keep Proxy-Authorization", ref: "RFC 9110 §11.7.2",
			in:   "GET / HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\nHost: x\r\nTE: trailers\r\n\r\n",
			edit: func(e *Edits) { e.StripHopByHop, e.Keep = true, HeaderSet(0).With(HdrProxyAuthorization, HdrUpgrade) },
			out:  "GET / HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\nHost: x\r\n\r\n"},
		{name: "remove every line, any case", ref: "RFC 9110 §5.3",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nX-B: 1\r\nX-C: 2\r\nx-b: 3\r\n\r\n",
			edit: func(e *Edits) { e.Remove("X-b") },
			out:  "GET / HTTP/1.1\r\nHost: x\r\nX-C: 2\r\n\r\n"},
		{name: "remove an indexed field", ref: "RFC 9110 §5.3",
			in:   "GET / HTTP/1.1\r\nVia: 1.0 a\r\nHost: x\r\nvia: 1.1 b\r\n\r\n",
			edit: func(e *Edits) { e.Remove("Via") },
			out:  "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "set replaces in place and drops duplicates", ref: "RFC 9110 §5.3",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\na: 3\r\n\r\n",
			edit: func(e *Edits) { e.Set("A", []byte("new")) },
			out:  "GET / HTTP/1.1\r\nHost: x\r\nA: new\r\nB: 2\r\n\r\n"},
		{name: "set appends when absent", ref: "RFC 9110 §5.3",
			in:   "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			edit: func(e *Edits) { e.Set("X-Forwarded-Proto", []byte("https")); e.Set("Host", []byte("y")) },
			out:  "GET / HTTP/1.1\r\nHost: y\r\nX-Forwarded-Proto: https\r\n\r\n"},
		{name: "add appends after existing lines", ref: "RFC 9110 §7.6.3",
			in:   "GET / HTTP/1.1\r\nVia: 1.0 a\r\nHost: x\r\n\r\n",
			edit: func(e *Edits) { e.Add("Via", []byte("1.1 proxy")); e.Add("X-A", []byte("")) },
			out:  "GET / HTTP/1.1\r\nVia: 1.0 a\r\nHost: x\r\nVia: 1.1 proxy\r\nX-A: \r\n\r\n"},
		{name: "set a stripped hop-by-hop field appends it", ref: "RFC 9110 §7.6.1",
			in:   "GET / HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
			edit: func(e *Edits) { e.StripHopByHop = true; e.Set("Connection", []byte("keep-alive")) },
			out:  "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"},
		{name: "target and method override", ref: "RFC 9112 §3.2.1",
			in:   "GET http://x/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
			edit: func(e *Edits) { e.Method, e.Target = []byte("HEAD"), []byte("/p?q") },
			out:  "HEAD /p?q HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "HTTP/1.0 request becomes HTTP/1.1 with Host", ref: "RFC 9110 §6.2",
			in:   "GET http://x/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
			edit: func(e *Edits) { e.StripHopByHop, e.Target = true, []byte("/"); e.Set("Host", []byte("x")) },
			out:  "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "response unchanged but the version", ref: "RFC 9110 §6.2", resp: true, req: MethodGet,
			in:  "HTTP/1.0 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
			out: "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"},
		{name: "response strip hop-by-hop", ref: "RFC 9110 §7.6.1", resp: true, req: MethodGet,
			in:   "HTTP/1.0 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\r\n",
			edit: func(e *Edits) { e.StripHopByHop = true },
			out:  "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\n"},
		{name: "status and reason override", ref: "RFC 9112 §4", resp: true, req: MethodGet,
			in:   "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
			edit: func(e *Edits) { e.Status, e.Reason = 502, []byte("Bad Gateway") },
			out:  "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"},
		{name: "status override without reason", ref: "RFC 9112 §4", resp: true, req: MethodGet,
			in:   "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
			edit: func(e *Edits) { e.Status = 503 },
			out:  "HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n"},
		{name: "response without reason keeps the SP", ref: "RFC 9112 §4", resp: true, req: MethodGet,
			in:  "HTTP/1.1 204\r\n\r\n",
			out: "HTTP/1.1 204 \r\n\r\n"},
		{name: "obs-fold forwarded unfolded", ref: "RFC 9112 §5.2", resp: true, req: MethodGet,
			in:  "HTTP/1.1 200 OK\r\nX-F: a\r\n b\r\nContent-Length: 0\r\n\r\n",
			out: "HTTP/1.1 200 OK\r\nX-F: a   b\r\nContent-Length: 0\r\n\r\n"},
		{name: "bare LF forwarded as CRLF", ref: "RFC 9112 §2.2", resp: true, req: MethodHead,
			in:  "HTTP/1.1 200 OK\nContent-Length: 7\n\n",
			out: "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var e *Edits
			if c.edit != nil {
				e = new(Edits)
				c.edit(e)
			}
			bb := &bytebufferpool.ByteBuffer{B: []byte("prefix")}
			var req Request
			var resp Response
			if c.resp {
				resp.SetRequestMethod(c.req)
				if _, err := resp.Parse([]byte(c.in)); err != nil {
					t.Fatal(err)
				}
				WriteResponseHead(bb, &resp, e)
			} else {
				if _, err := req.Parse([]byte(c.in)); err != nil {
					t.Fatal(err)
				}
				WriteRequestHead(bb, &req, e)
			}
			out, ok := strings.CutPrefix(string(bb.B), "prefix")
			if !ok || out != c.out {
				t.Fatalf("%s: wrote %q, want %q after the existing %q", c.ref, bb.B, c.out, "prefix")
			}
			// The same Edits serialize the same way again.
			if c.resp {
				bb.Reset()
				WriteResponseHead(bb, &resp, e)
			} else {
				bb.Reset()
				WriteRequestHead(bb, &req, e)
			}
			if string(bb.B) != c.out {
				t.Fatalf("second write %q, want %q", bb.B, c.out)
			}

			// Re-parsing the output gives the head it spells.
			start := strings.SplitN(strings.SplitN(c.out, "\r\n", 2)[0], " ", 3)
			var o headObs
			if c.resp {
				o = runResponse(t, Options{StrictCRLF: true}, c.req, c.out)
				cfCheckOutcome(t, nil, 0, false, o)
				if got := []string{"HTTP/1.1", strconv.Itoa(o.Status), o.Reason}; !reflect.DeepEqual(got, start) {
					t.Errorf("re-parsed status line %q, want %q", got, start)
				}
			} else {
				o = runRequest(t, Options{StrictCRLF: true}, c.out)
				cfCheckOutcome(t, nil, 0, false, o)
				if got := []string{o.Method, o.Target, "HTTP/1.1"}; !reflect.DeepEqual(got, start) {
					t.Errorf("re-parsed request line %q, want %q", got, start)
				}
			}
			if o.N != len(c.out) || o.Version != cfHTTP11 || !reflect.DeepEqual(o.Fields, splitFieldsOf(c.out)) {
				t.Errorf("re-parsed: n %d version %v fields %q, want %d HTTP/1.1 %q", o.N, o.Version, o.Fields, len(c.out), splitFieldsOf(c.out))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Chunked decoder, RFC 9112 §7.1
// ---------------------------------------------------------------------------

type chunkCase struct {
	name       string
	ref        string
	in         string
	maxLine    int
	maxTrailer int

	err *Error // rule broken, nil when decoding succeeds or needs more
	off int    // SyntaxError.Offset when err is set

	data    string // body bytes handed out (before the error, if any)
	done    bool
	rest    string // unconsumed tail when done
	trailer string
}

func TestConformanceChunked(t *testing.T) {
	hex4095 := strings.Repeat("0", DefaultMaxChunkLine-2) + "5" // with CR: exactly the default limit
	trailer16K := "X: " + strings.Repeat("t", DefaultMaxTrailerBytes-len("X: \r\n")) + "\r\n"
	cases := []chunkCase{
		{name: "one chunk", ref: "RFC 9112 §7.1", in: "5\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "several chunks", ref: "RFC 9112 §7.1", in: "3\r\nabc\r\n1\r\nd\r\n2\r\nef\r\n0\r\n\r\n", data: "abcdef", done: true},
		{name: "empty body", ref: "RFC 9112 §7.1", in: "0\r\n\r\n", done: true},
		{name: "upper-case hex", ref: "RFC 9112 §7.1", in: "A\r\n0123456789\r\n1F\r\n" + strings.Repeat("x", 31) + "\r\n0\r\n\r\n",
			data: "0123456789" + strings.Repeat("x", 31), done: true},
		{name: "lower-case hex", ref: "RFC 9112 §7.1", in: "a\r\n0123456789\r\n1f\r\n" + strings.Repeat("y", 31) + "\r\n0\r\n\r\n",
			data: "0123456789" + strings.Repeat("y", 31), done: true},
		{name: "leading zeros", ref: "RFC 9112 §7.1", in: "0005\r\nhello\r\n000\r\n\r\n", data: "hello", done: true},
		{name: "data with CRLF inside", ref: "RFC 9112 §7.1", in: "4\r\n\r\n\r\n\r\n0\r\n\r\n", data: "\r\n\r\n", done: true},
		{name: "bytes after the last chunk are not consumed", ref: "RFC 9112 §7.1",
			in: "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", data: "hi", done: true, rest: "GET / HTTP/1.1\r\n"},
		{name: "truncated in data", ref: "RFC 9112 §7.1", in: "5\r\nhel", data: "hel"},
		{name: "truncated in size line", ref: "RFC 9112 §7.1", in: "5\r\nhello\r\n1f;a=\"b", data: "hello"},
		{name: "truncated before the final CRLF", ref: "RFC 9112 §7.1", in: "1\r\na\r\n0\r\nX: y\r\n", data: "a", trailer: "X: y\r\n"},
		{name: "largest chunk size", ref: "RFC 9112 §7.1", in: "7fffffffffffffff\r\nab", data: "ab"},

		// Extensions, RFC 9112 §7.1.1.
		{name: "extension name", ref: "RFC 9112 §7.1.1", in: "5;name\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "extension token value", ref: "RFC 9112 §7.1.1", in: "5;name=val!#$%&'*+-.^_`|~\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "extension quoted value", ref: "RFC 9112 §7.1.1", in: "5;n=\"a b;c=d\t\x80\"\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "extension quoted-pair", ref: "RFC 9112 §7.1.1", in: "5;n=\"a\\\"b\\\\\"\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "empty quoted value", ref: "RFC 9112 §7.1.1", in: "5;n=\"\"\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "several extensions", ref: "RFC 9112 §7.1.1", in: "5;a;b=1;c=\"2\"\r\nhello\r\n0;last\r\n\r\n", data: "hello", done: true},
		{name: "BWS around ; and =", ref: "RFC 9112 §7.1.1", in: "5 ; a = b\t;\tc =\t\"d\" ; e\r\nhello\r\n0 ;x\r\n\r\n", data: "hello", done: true},
		{name: "extension without name", ref: "RFC 9112 §7.1.1", in: "5;\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 2},
		{name: "extension with only a value", ref: "RFC 9112 §7.1.1", in: "5;=x\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 2},
		{name: "extension with empty value", ref: "RFC 9112 §7.1.1", in: "5;a=\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 4},
		{name: "unterminated quoted value", ref: "RFC 9112 §7.1.1", in: "5;a=\"x\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 6},
		{name: "escape before CR", ref: "RFC 9112 §7.1.1", in: "5;a=\"x\\\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 7},
		{name: "two names", ref: "RFC 9112 §7.1.1", in: "5;a b\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 4},
		{name: "two values", ref: "RFC 9112 §7.1.1", in: "5;a=b c\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 6},
		{name: "trailing BWS after the size", ref: "RFC 9112 §7.1.1", in: "5 \t\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 3},
		{name: "trailing BWS after an extension name", ref: "RFC 9112 §7.1.1", in: "5;a \r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 4},
		{name: "trailing BWS after a token value", ref: "RFC 9112 §7.1.1", in: "5;a=b \r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 6},
		{name: "BWS between extensions", ref: "RFC 9112 §7.1.1", in: "5;a=\"b\" ;c\r\nhello\r\n0\r\n\r\n", data: "hello", done: true},
		{name: "text after quoted value", ref: "RFC 9112 §7.1.1", in: "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 7},
		{name: "quote inside token value", ref: "RFC 9112 §7.1.1", in: "5;a=b\"c\"\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 5},
		{name: "non-tchar in name", ref: "RFC 9112 §7.1.1", in: "5;a@\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 3},
		{name: "control character in quoted value", ref: "RFC 9112 §7.1.1", in: "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 5},
		{name: "escaped NUL", ref: "RFC 9112 §7.1.1", in: "5;a=\"\\\x00\"\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 6},
		{name: "second size after BWS", ref: "RFC 9112 §7.1.1", in: "5 5\r\nhello\r\n0\r\n\r\n", err: ErrBadChunkExt, off: 2},
		{name: "bare LF ending an extension", ref: "RFC 9112 §7.1", in: "5;a\nhello\r\n0\r\n\r\n", err: ErrBareLF, off: 3},
		{name: "bare LF ending a quoted extension", ref: "RFC 9112 §7.1", in: "5;a=\"b\n", err: ErrBareLF, off: 6},

		// Chunk size, RFC 9112 §7.1.
		{name: "size not hex", ref: "RFC 9112 §7.1", in: "g\r\n", err: ErrBadChunkSize, off: 0},
		{name: "empty size", ref: "RFC 9112 §7.1", in: "\r\nhello\r\n", err: ErrBadChunkSize, off: 0},
		{name: "negative size", ref: "RFC 9112 §7.1", in: "-1\r\n", err: ErrBadChunkSize, off: 0},
		{name: "0x prefix", ref: "RFC 9112 §7.1", in: "0x5\r\nhello\r\n", err: ErrBadChunkSize, off: 1},
		{name: "whitespace before size", ref: "RFC 9112 §7.1", in: " 5\r\nhello\r\n", err: ErrBadChunkSize, off: 0},
		{name: "letter after size", ref: "RFC 9112 §7.1", in: "5g\r\nhello\r\n", err: ErrBadChunkSize, off: 1},
		{name: "second chunk size not hex", ref: "RFC 9112 §7.1", in: "1\r\na\r\nz\r\n", data: "a", err: ErrBadChunkSize, off: 6},
		{name: "size overflow", ref: "RFC 9112 §7.1", in: "8000000000000000\r\n", err: ErrChunkSizeOverflow, off: 15},
		{name: "size overflow with leading zeros", ref: "RFC 9112 §7.1", in: "00ffffffffffffffff\r\n", err: ErrChunkSizeOverflow, off: 17},
		{name: "bare LF after size", ref: "RFC 9112 §7.1", in: "5\nhello\r\n0\r\n\r\n", err: ErrBareLF, off: 1},
		{name: "bare CR after size", ref: "RFC 9112 §7.1", in: "5\rhello\r\n0\r\n\r\n", err: ErrBareCR, off: 2},
		{name: "size line at the limit", ref: "RFC 9112 §7.1", in: "001\r\na\r\n0;x\r\n\r\n", maxLine: 4, data: "a", done: true},
		{name: "size line over the limit", ref: "RFC 9112 §7.1", in: "0001\r\na\r\n0\r\n\r\n", maxLine: 4, err: ErrChunkLineTooLong, off: 4},
		{name: "extension over the limit", ref: "RFC 9112 §7.1", in: "1;abcdef\r\na\r\n0\r\n\r\n", maxLine: 4, err: ErrChunkLineTooLong, off: 4},
		{name: "every size line at the limit", ref: "RFC 9112 §7.1", in: "01\r\na\r\n01\r\nb\r\n01\r\nc\r\n00\r\n\r\n", maxLine: 3, data: "abc", done: true},
		{name: "later size line over the limit", ref: "RFC 9112 §7.1", in: "01\r\na\r\n001\r\nb\r\n", maxLine: 3, data: "a", err: ErrChunkLineTooLong, off: 10},
		{name: "default size line limit", ref: "RFC 9112 §7.1", in: hex4095 + "\r\nhello\r\n" + hex4095 + "\r\nworld\r\n0\r\n\r\n",
			data: "helloworld", done: true},
		{name: "default size line limit plus one", ref: "RFC 9112 §7.1", in: "0" + hex4095 + "\r\nhello\r\n",
			err: ErrChunkLineTooLong, off: DefaultMaxChunkLine},

		// Chunk data, RFC 9112 §7.1.
		{name: "data longer than the size", ref: "RFC 9112 §7.1", in: "5\r\nhelloX\r\n0\r\n\r\n", data: "hello", err: ErrChunkNoCRLF, off: 8},
		{name: "data shorter than the size", ref: "RFC 9112 §7.1", in: "5\r\nhell\r\n0\r\n\r\n", data: "hell\r", err: ErrChunkNoCRLF, off: 8},
		{name: "CR without LF after data", ref: "RFC 9112 §7.1", in: "5\r\nhello\rX", data: "hello", err: ErrChunkNoCRLF, off: 9},
		{name: "bare LF after data", ref: "RFC 9112 §7.1", in: "5\r\nhello\n0\r\n\r\n", data: "hello", err: ErrChunkNoCRLF, off: 8},

		// Trailer section, RFC 9112 §7.1.2.
		{name: "trailer fields", ref: "RFC 9112 §7.1.2", in: "1\r\na\r\n0\r\nX-A: 1\r\nx-b:2 \r\n\r\nnext",
			data: "a", done: true, trailer: "X-A: 1\r\nx-b:2 \r\n", rest: "next"},
		{name: "empty trailer value", ref: "RFC 9112 §7.1.2", in: "0\r\nX:\r\n\r\n", done: true, trailer: "X:\r\n"},
		{name: "trailer at the limit", ref: "RFC 9112 §7.1.2", in: "0\r\nA: 1\r\nB: 23\r\n\r\n", maxTrailer: 13,
			done: true, trailer: "A: 1\r\nB: 23\r\n"},
		{name: "trailer over the limit", ref: "RFC 9112 §7.1.2", in: "0\r\nA: 1\r\nB: 234\r\n\r\n", maxTrailer: 13,
			err: ErrTrailerTooLarge, off: len("0\r\nA: 1\r\nB: 23")},
		{name: "default trailer limit", ref: "RFC 9112 §7.1.2", in: "0\r\n" + trailer16K + "\r\n", done: true, trailer: trailer16K},
		{name: "default trailer limit plus one", ref: "RFC 9112 §7.1.2", in: "0\r\nY" + trailer16K + "\r\n",
			err: ErrTrailerTooLarge, off: 3 + DefaultMaxTrailerBytes - 2},
		{name: "space before colon in trailer", ref: "RFC 9112 §5.1", in: "0\r\nX-A : 1\r\n\r\n", err: ErrSpaceBeforeColon, off: 6},
		{name: "no colon in trailer", ref: "RFC 9112 §5", in: "0\r\nX-A\r\n\r\n", err: ErrNoColon, off: 6},
		{name: "obs-fold in trailer", ref: "RFC 9112 §5.2", in: "0\r\nX: a\r\n b\r\n\r\n", err: ErrObsFold, off: len("0\r\nX: a\r\n")},
		{name: "obs-fold with HTAB in trailer", ref: "RFC 9112 §5.2", in: "1\r\na\r\n0\r\nX: a\r\n\tb\r\n\r\n", data: "a",
			err: ErrObsFold, off: len("1\r\na\r\n0\r\nX: a\r\n")},
		{name: "whitespace before the first trailer field", ref: "RFC 9112 §2.2", in: "0\r\n X: a\r\n\r\n", err: ErrLeadingSpace, off: 3},
		{name: "empty trailer name", ref: "RFC 9110 §5.1", in: "0\r\nA: 1\r\n: 1\r\n\r\n", err: ErrBadFieldName, off: 9},
		{name: "bad trailer name", ref: "RFC 9110 §5.1", in: "0\r\nX{: 1\r\n\r\n", err: ErrBadFieldName, off: 4},
		{name: "NUL in trailer value", ref: "RFC 9110 §5.5", in: "0\r\nX: a\x00b\r\n\r\n", err: ErrBadFieldValue, off: 7},
		{name: "NUL in trailer value after a chunk", ref: "RFC 9110 §5.5", in: "2\r\nab\r\n0\r\nX: a\x00b\r\n\r\n",
			data: "ab", err: ErrBadFieldValue, off: len("2\r\nab\r\n0\r\nX: a")},
		{name: "bare CR in trailer", ref: "RFC 9112 §2.2", in: "0\r\nX: a\rb\r\n\r\n", err: ErrBareCR, off: 8},
		{name: "bare LF ending a trailer", ref: "RFC 9112 §2.2", in: "0\r\nX: a\n\r\n", err: ErrBareLF, off: 7},
		{name: "bare LF ending the trailer section", ref: "RFC 9112 §2.2", in: "0\r\n\n", err: ErrBareLF, off: 3},
		{name: "bare CR ending the trailer section", ref: "RFC 9112 §2.2", in: "0\r\n\rX", err: ErrBareCR, off: 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.ref == "" {
				t.Fatal("case names no RFC section")
			}
			o := runChunked(t, c.maxLine, c.maxTrailer, c.in)
			if c.err != nil {
				if o.Rule != c.err || o.Offset != c.off {
					t.Fatalf("got rule %q at offset %d, want %q at %d", cfMsgOf(o.Rule), o.Offset, c.err.Msg, c.off)
				}
				if !o.Sticky {
					t.Errorf("error is not sticky")
				}
				if o.Data != c.data || o.Done || o.BodyLen != int64(len(c.data)) {
					t.Errorf("before the error: data %q done %v body %d, want %q false %d", o.Data, o.Done, o.BodyLen, c.data, len(c.data))
				}
				return
			}
			want := chunkObs{Data: c.data, Consumed: len(c.in) - len(c.rest), Done: c.done,
				BodyLen: int64(len(c.data)), Trailer: c.trailer}
			if !reflect.DeepEqual(o, want) {
				t.Errorf("decode of %s\n got: %+v\nwant: %+v", splitQuote(c.in), o, want)
			}
		})
	}
}

// TestChunkedReset checks that Reset starts a new body and keeps the limits.
func TestChunkedReset(t *testing.T) {
	const in = "1\r\na\r\n0\r\nX: 1\r\n\r\nrest"
	d := ChunkedDecoder{MaxChunkLine: 3, MaxTrailerBytes: 8}
	o := feedChunked(t, &d, []byte(in), []int{len(in)})
	if want := (chunkObs{Data: "a", Consumed: len(in) - 4, Done: true, BodyLen: 1, Trailer: "X: 1\r\n"}); !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v, want %+v", o, want)
	}
	if b, n, err := d.Next([]byte("rest")); b != nil || n != 0 || err != nil {
		t.Fatalf("Next after done = %q, %d, %v; want nothing consumed", b, n, err)
	}
	d.Reset()
	if d.Done() || d.BodyLen() != 0 || d.Consumed() != 0 || len(d.Trailer()) != 0 || d.State() != StateChunkSize {
		t.Fatalf("after Reset: done %v body %d consumed %d trailer %q state %v", d.Done(), d.BodyLen(), d.Consumed(), d.Trailer(), d.State())
	}
	o = feedChunked(t, &d, []byte("0001\r\n"), []int{6})
	if o.Rule != ErrChunkLineTooLong || o.Offset != 3 {
		t.Fatalf("MaxChunkLine lost by Reset: %+v", o)
	}
	d.Reset()
	o = feedChunked(t, &d, []byte("0\r\nX: 1234\r\n\r\n"), []int{14})
	if o.Rule != ErrTrailerTooLarge || o.Offset != 9 {
		t.Fatalf("MaxTrailerBytes lost by Reset: %+v", o)
	}
}
