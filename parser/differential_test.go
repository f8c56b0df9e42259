package parser_test

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/serverside-go/serverside/parser"
)

// The differential targets parse the same bytes with this package and with
// net/http (http.ReadRequest, http.ReadResponse). Where both accept, the
// method, target, status, fields and body framing must agree once net/http's
// documented rewrites are undone. Where one accepts and the other rejects,
// the disagreement must match one of the known cases below, each of which
// says which side follows RFC 9110 / RFC 9112 and why. Anything else fails.

// dfCase is one parse of the same input by both parsers.
type dfCase struct {
	input []byte
	buf   []byte // our copy of input, as Parse left it

	ours     error // nil, ErrNeedMore or a rule error
	oursRule *parser.Error
	req      *parser.Request  // valid when ours == nil (requests)
	res      *parser.Response // valid when ours == nil (responses)
	method   parser.Method    // request method a response answers

	goErr error
	goReq *http.Request
	goRes *http.Response
}

func (c *dfCase) oursOK() bool { return c.ours == nil }
func (c *dfCase) goOK() bool   { return c.goErr == nil }
func (c *dfCase) is(r *parser.Error) bool {
	return c.oursRule == r
}
func (c *dfCase) goSays(s string) bool { return c.goErr != nil && strings.Contains(c.goErr.Error(), s) }

// dfKnown is a documented disagreement: where one side accepts what the
// other rejects, or both accept with a difference the comparison allows.
type dfKnown struct {
	name  string
	match func(c *dfCase) bool
}

// dfRequestLine splits the first request line of the input the way
// net/http does (after leading empty lines, which net/http rejects).
func dfRequestLine(in []byte) (method, target, version []byte) {
	line, _, _ := bytes.Cut(in, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	method, rest, _ := bytes.Cut(line, []byte(" "))
	target, version, _ = bytes.Cut(rest, []byte(" "))
	return method, target, version
}

// dfAuthority returns the authority of an absolute-form target, as far as
// the input lets us find it.
func dfAuthority(target []byte) ([]byte, bool) {
	i := bytes.Index(target, []byte("://"))
	if i <= 0 {
		return nil, false
	}
	a := target[i+3:]
	if j := bytes.IndexAny(a, "/?#"); j >= 0 {
		a = a[:j]
	}
	return a, true
}

// dfHostChar is RFC 3986 reg-name / port / IP-literal characters.
func dfHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~!$&'()*+,;=:[]%", c) >= 0
}

// dfStrictIPLiteral reports whether a bracketed host (port allowed) is an
// IPv6 address, optionally with an RFC 6874 zone: "%25" then unreserved
// or pct-encoded octets.
func dfStrictIPLiteral(a []byte) bool {
	end := bytes.IndexByte(a, ']')
	if end < 0 {
		return false
	}
	inner := string(a[1:end])
	addr, zone, hasZone := strings.Cut(inner, "%25")
	if hasZone {
		if zone == "" {
			return false
		}
		for i := 0; i < len(zone); i++ {
			c := zone[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~", c) >= 0:
			case c == '%' && i+2 < len(zone) && dfIsHex(zone[i+1]) && dfIsHex(zone[i+2]):
				i += 2
			default:
				return false
			}
		}
	}
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.Is6() && ip.Zone() == ""
}

func dfIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// dfOddHost reports an authority with a character no RFC 3986 host or
// port may hold, or brackets other than around an IP literal.
func dfOddHost(a []byte) bool {
	for _, c := range a {
		if !dfHostChar(c) {
			return true
		}
	}
	open, close := bytes.IndexByte(a, '['), bytes.LastIndexByte(a, ']')
	return (open >= 0 || close >= 0) && (open != 0 || close < 0 ||
		bytes.Count(a, []byte("[")) != 1 || bytes.Count(a, []byte("]")) != 1)
}

// dfOtherTE reports whether the parsed head carries Transfer-Encoding lines
// other than exactly one whose value is "chunked" in any case: the only
// form net/http supports.
func dfOtherTE(h *parser.Header) bool {
	n, plain := 0, false
	h.Each(parser.HdrTransferEncoding, func(v []byte) bool {
		n++
		plain = strings.EqualFold(string(v), "chunked")
		return true
	})
	return n > 1 || n == 1 && !plain
}

// dfCLSpelling reports Content-Length lines that are equal in value but
// not in spelling (a list "5, 5", leading zeros, several lines).
func dfCLSpelling(h *parser.Header) bool {
	var first string
	odd := false
	h.Each(parser.HdrContentLength, func(v []byte) bool {
		if first == "" {
			first = string(v)
		}
		odd = odd || string(v) != first || bytes.IndexByte(v, ',') >= 0
		return true
	})
	return odd
}

// dfTrailerForbidden reports a Trailer field that names a framing field,
// which net/http refuses in a chunked message.
func dfTrailerForbidden(h *parser.Header) bool {
	bad := false
	h.Each(parser.HdrTrailer, func(v []byte) bool {
		for _, e := range strings.Split(string(v), ",") {
			switch http.CanonicalHeaderKey(strings.TrimSpace(e)) {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				bad = true
			}
		}
		return true
	})
	return bad
}

// The known disagreements for requests.
var dfRequestKnown = []dfKnown{
	// --- We reject, net/http's ReadRequest accepts. ---

	// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
	// without Host. ReadRequest leaves that to net/http's server
	// (conn.readRequest rejects it too); we follow the RFC in the parser.
	{"missing Host (RFC 9112 §3.2 MUST 400; ReadRequest defers to its server)", func(c *dfCase) bool {
		return c.is(parser.ErrMissingHost) && c.goOK()
	}},
	// RFC 9112 §3.2: a server MUST answer 400 to a Host field with an
	// invalid value. ReadRequest does not validate Host at all (its server
	// applies the looser httpguts.ValidHostHeader); we follow the RFC.
	{"invalid Host (RFC 9112 §3.2 MUST 400; ReadRequest does not check)", func(c *dfCase) bool {
		return c.is(parser.ErrBadHost) && c.goOK()
	}},
	// RFC 9112 §6.3 rule 3: a message with both Transfer-Encoding and
	// Content-Length "ought to be handled as an error" (§6.1: a server MAY
	// reject it). net/http processes the chunked body and drops
	// Content-Length, which is permitted but lets two hops disagree; we
	// take the recommended, smuggling-proof reading.
	{"Transfer-Encoding with Content-Length (RFC 9112 §6.3 rule 3: ought to be an error)", func(c *dfCase) bool {
		return c.is(parser.ErrTEAndCL) && c.goOK()
	}},
	// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding MUST be
	// treated as having faulty framing. net/http ignores the field and
	// frames by Content-Length (go.dev/issue/12785), against the RFC; we
	// reject.
	{"Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1 MUST treat framing as faulty; net/http ignores it)", func(c *dfCase) bool {
		return c.is(parser.ErrTEInHTTP10) && c.goOK()
	}},
	// RFC 9112 §5.1: a server MUST reject whitespace between a field name
	// and the colon with 400. net/http accepts it and keeps the name
	// uncanonicalized (go.dev/issue/34540), against the RFC.
	{"whitespace before colon (RFC 9112 §5.1 MUST 400; net/http accepts)", func(c *dfCase) bool {
		return c.is(parser.ErrSpaceBeforeColon) && c.goOK()
	}},
	// RFC 9112 §5.2: a server receiving obs-fold in a request MUST either
	// reject it with 400 or replace each fold with SP. net/http unfolds, we
	// reject: both conform.
	{"obs-fold in a request (RFC 9112 §5.2 allows reject or unfold)", func(c *dfCase) bool {
		return c.is(parser.ErrObsFold) && c.goOK()
	}},
	// RFC 9112 §2.3 / RFC 9110 §15.6.6: a major version other than 1 is
	// not HTTP/1 and gets 505. ReadRequest parses any "HTTP/d.d" and leaves
	// the check to its server (which answers 505); we reject in the parser.
	{"HTTP major version other than 1 (505; ReadRequest defers to its server)", func(c *dfCase) bool {
		return c.is(parser.ErrVersionNotHTTP1) && c.goOK()
	}},
	// RFC 9112 §3.2.4: asterisk-form is only for OPTIONS. net/http takes
	// "*" with any method; we follow the RFC.
	{"asterisk-form with a method other than OPTIONS (RFC 9112 §3.2.4)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		return c.is(parser.ErrBadTarget) && c.goOK() && string(target) == "*"
	}},
	// RFC 9112 §3.2.3: CONNECT takes authority-form, host ":" port, and
	// nothing else. net/http also takes a path (for net/rpc), a missing
	// port and even an empty target ("CONNECT  HTTP/1.1", which no form
	// allows, RFC 9112 §3); we follow the RFC.
	{"CONNECT without authority-form host:port (RFC 9112 §3.2.3)", func(c *dfCase) bool {
		return (c.is(parser.ErrBadTarget) || c.is(parser.ErrBadRequestLine)) && c.goOK() && c.goReq.Method == "CONNECT"
	}},
	// RFC 9110 §4.2.4: a recipient SHOULD treat userinfo in an http(s)
	// target as an error. net/http accepts it; we follow the RFC.
	{"userinfo in absolute-form (RFC 9110 §4.2.4)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		a, ok := dfAuthority(target)
		return c.is(parser.ErrBadTarget) && c.goOK() && ok && bytes.IndexByte(a, '@') >= 0
	}},
	// RFC 9110 §4.2.1: an http URI with an empty host MUST be rejected
	// as invalid; an absolute-form target without "//" authority names no
	// host at all. net/http accepts them ("http:x", "http:///x",
	// "http://:80/"); we follow the RFC.
	{"absolute-form without a host (RFC 9110 §4.2.1 MUST reject)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		return c.is(parser.ErrBadTarget) && c.goOK() && c.goReq.URL.Hostname() == "" && target[0] != '/'
	}},
	// RFC 3986 §3.2.3 puts no bound on port digits, but a port above
	// 65535 cannot be connected to; we reject ports of more than five
	// digits, net/http's URL parser takes any number. Stricter, harmless.
	{"port of more than five digits (RFC 3986 §3.2.3; we bound it)", func(c *dfCase) bool {
		return c.is(parser.ErrBadTarget) && c.goOK() && len(c.goReq.URL.Port()) > 5
	}},
	// RFC 3986 §3.2.2: reg-name is unreserved / pct-encoded / sub-delims,
	// and brackets only enclose an IP literal. net/http's URL parser also
	// takes '<', '>', '"', non-ASCII bytes and a stray ']' in a host; we
	// follow the RFC.
	{"host with characters outside RFC 3986 reg-name", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		a, ok := dfAuthority(target)
		return c.is(parser.ErrBadTarget) && c.goOK() && ok && dfOddHost(a)
	}},
	// RFC 3986 §3.2.2 and RFC 6874: an IP literal holds an IPv6 address,
	// optionally with a zone of unreserved or pct-encoded octets after
	// "%25". net/http's URL parser accepts other zone characters ("!",
	// "<") and loose addresses; we follow the grammar. Nothing dialable is
	// lost: the engine never resolves such a host.
	{"IP literal outside RFC 3986 / RFC 6874 (zone or address)", func(c *dfCase) bool {
		if !(c.is(parser.ErrBadTarget) || c.is(parser.ErrBadHost)) || !c.goOK() {
			return false
		}
		_, target, _ := dfRequestLine(c.input)
		a, ok := dfAuthority(target)
		if !ok || len(a) == 0 || a[0] != '[' {
			a = []byte(c.goReq.Host)
		}
		return len(a) > 0 && a[0] == '[' && !dfStrictIPLiteral(a)
	}},
	// RFC 9112 §3.2: no form of request-target carries a fragment
	// (origin-form is absolute-path ["?" query]; absolute-URI excludes
	// one, RFC 3986 §4.3). net/http keeps "#..." in the path; we follow
	// the RFC and reject it.
	{"fragment in the request target (RFC 9112 §3.2)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		return c.is(parser.ErrBadTarget) && c.goOK() && bytes.IndexByte(target, '#') >= 0
	}},
	// RFC 3986 §2: a URI is ASCII; RFC 9112 §3: an invalid request-line
	// SHOULD get 400 (or a redirect), not an autocorrection. net/http
	// takes raw bytes beyond ASCII in the target; we reject them.
	{"non-ASCII byte in the request target (RFC 9112 §3.2)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		return c.is(parser.ErrBadTarget) && c.goOK() && bytes.ContainsFunc(target, func(r rune) bool { return r >= 0x80 })
	}},
	// RFC 9110 §5.4: a server may limit the head and answer 431 (or 414
	// for the request line). Our limits are 64 KiB, 100 fields and 16
	// field names in Connection (each one costs a pass over the fields);
	// ReadRequest has none.
	{"head size, field count or Connection option limit (RFC 9110 §5.4)", func(c *dfCase) bool {
		return dfLimit(c) && c.goOK()
	}},

	// --- net/http rejects, we accept. ---

	// RFC 9112 §2.2: a server SHOULD ignore at least one empty line
	// before the request line. We do; net/http rejects the empty line as
	// a malformed request.
	{"empty lines before the request line (RFC 9112 §2.2 SHOULD ignore)", func(c *dfCase) bool {
		return c.oursOK() && !c.goOK() && len(c.input) > 0 && (c.input[0] == '\r' || c.input[0] == '\n')
	}},
	// RFC 3986 §2.1: pct-encoded is "%" HEXDIG HEXDIG, and a reg-name may
	// hold pct-encoded octets. net/http rejects a malformed escape in the
	// path, and also a valid escape of an ASCII octet in a host ("%41",
	// which RFC 3986 allows and we accept). We forward an origin-form path
	// verbatim and check only what could break framing (controls, SP, DEL,
	// "#"): RFC 9112 §3.2 lets a recipient of an invalid request-line
	// answer 400 (SHOULD), so net/http is stricter on paths and we are
	// lenient; the origin sees exactly what the client sent.
	{"percent-encoding in the target (RFC 3986 §2.1; we pass it through)", func(c *dfCase) bool {
		_, target, _ := dfRequestLine(c.input)
		return c.oursOK() && c.goSays("invalid URL escape") && bytes.IndexByte(target, '%') >= 0
	}},
	// RFC 3986 §3.2.2: an IP-literal is "[" IPv6address / IPvFuture "]".
	// Both sides check the IPv6 grammar; net/http (net/netip) has no
	// IPvFuture ("[v1.x]"), which we accept as the grammar says. Nothing
	// can be dialled at such an address, so the difference is harmless.
	{"IPvFuture literal (RFC 3986 §3.2.2; net/http does not know it)", func(c *dfCase) bool {
		a := c.req.Authority()
		return c.oursOK() && c.goSays("invalid host") && len(a) > 1 && a[0] == '[' && (a[1] == 'v' || a[1] == 'V')
	}},
	// RFC 9112 §6.1: Transfer-Encoding is a list of codings, chunked
	// last. net/http supports only a single field line "chunked" by
	// design; we accept the registered codings with chunked last, as
	// the RFC defines them. Both conform (§6.1 lets a server answer 501).
	{"Transfer-Encoding other than one line \"chunked\" (RFC 9112 §6.1; net/http supports only that)", func(c *dfCase) bool {
		return c.oursOK() && c.goSays("transfer encoding") && dfOtherTE(&c.req.Header)
	}},
	// RFC 9110 §8.6: a recipient MAY accept a Content-Length list of
	// identical values ("5, 5") or repeated identical lines as one value.
	// We accept any spelling of one value; net/http compares spellings and
	// rejects lists. Both conform.
	{"Content-Length list or spellings of one value (RFC 9110 §8.6 MAY accept)", func(c *dfCase) bool {
		return c.oursOK() && (c.goSays("Content-Length") || c.goSays("content length")) && dfCLSpelling(&c.req.Header)
	}},
	// RFC 9110 §6.6.2 tells senders not to put framing fields in a
	// trailer, but a Trailer field naming one is not an error for a
	// recipient; net/http rejects it. Both conform.
	{"Trailer naming a framing field (RFC 9110 §6.6.2; net/http rejects)", func(c *dfCase) bool {
		return c.oursOK() && c.goSays("bad trailer key") && dfTrailerForbidden(&c.req.Header)
	}},
}

// The known disagreements for responses.
var dfResponseKnown = []dfKnown{
	// --- We reject, net/http's ReadResponse accepts. ---

	// RFC 9112 §4: status-line = HTTP-version SP status-code SP
	// [reason-phrase], one SP each. net/http skips any spaces before the
	// code; we follow the grammar (whitespace leniency is where parsers
	// disagree).
	{"extra spaces in the status line (RFC 9112 §4)", func(c *dfCase) bool {
		return (c.is(parser.ErrBadStatusCode) || c.is(parser.ErrBadStatusLine)) && c.goOK() && len(c.input) > 9 && bytes.HasPrefix(c.input[8:], []byte("  "))
	}},
	// RFC 9110 §15 / RFC 9112 §4: status-code is 3DIGIT; codes below 100
	// do not exist. net/http parses the code with strconv.Atoi, taking
	// "099" or "+99"; we follow the grammar.
	{"status code below 100 or not three digits (RFC 9110 §15)", func(c *dfCase) bool {
		return c.is(parser.ErrBadStatusCode) && c.goOK() && (c.goRes.StatusCode < 100 || !dfDigits3(c.input))
	}},
	// RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ).
	// net/http does not check the reason and keeps a bare CR in it
	// (RFC 9112 §2.2: bare CR is invalid); we reject control characters.
	{"control characters in the reason phrase (RFC 9112 §4, §2.2)", func(c *dfCase) bool {
		return (c.is(parser.ErrBadStatusLine) || c.is(parser.ErrBadStatusCode) || c.is(parser.ErrBareCR)) &&
			c.goOK() && dfCTL([]byte(c.goRes.Status))
	}},
	// As for requests: not HTTP/1.
	{"HTTP major version other than 1 (RFC 9112 §2.3)", func(c *dfCase) bool {
		return c.is(parser.ErrVersionNotHTTP1) && c.goOK()
	}},
	// RFC 9112 §5.1: a proxy MUST remove whitespace between a field name
	// and the colon before forwarding a response. We refuse the response
	// (502) rather than repair it; net/http keeps the field with the
	// space in its name. Ours forwards nothing malformed; net/http's
	// keeps a name no other field lookup will find.
	{"whitespace before colon in a response (RFC 9112 §5.1; we refuse rather than repair)", func(c *dfCase) bool {
		return c.is(parser.ErrSpaceBeforeColon) && c.goOK()
	}},
	// As for requests: RFC 9112 §6.3 rule 3.
	{"Transfer-Encoding with Content-Length (RFC 9112 §6.3 rule 3: ought to be an error)", func(c *dfCase) bool {
		return c.is(parser.ErrTEAndCL) && c.goOK()
	}},
	// As for requests: RFC 9112 §6.1, faulty framing; net/http ignores
	// Transfer-Encoding in HTTP/1.0.
	{"Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1 MUST treat framing as faulty)", func(c *dfCase) bool {
		return c.is(parser.ErrTEInHTTP10) && c.goOK()
	}},
	{"head size, field count or Connection option limit (RFC 9110 §5.4)", func(c *dfCase) bool {
		return dfLimit(c) && c.goOK()
	}},
	// RFC 9110 §15.2.2: a server sending 101 MUST send Upgrade naming
	// the protocol it switches to. We refuse a 101 without it (the
	// connection would turn into an unknown protocol); net/http's
	// ReadResponse accepts it and leaves the switch to its Transport.
	{"101 without Upgrade (RFC 9110 §15.2.2 MUST send Upgrade)", func(c *dfCase) bool {
		return c.is(parser.ErrBadSwitch) && c.goOK() && c.goRes.StatusCode == 101 && c.goRes.Header["Upgrade"] == nil
	}},

	// --- net/http rejects, we accept. ---

	// RFC 9112 §6.3 rule 1: a response to HEAD and a 1xx, 204 or 304
	// response end at the empty line "regardless of the header fields";
	// rule 2: after a 2xx to CONNECT the connection is a tunnel and "a
	// client MUST ignore any Content-Length or Transfer-Encoding". The
	// first matching rule decides, so we ignore an invalid Content-Length
	// or Transfer-Encoding there; net/http validates them anyway and
	// rejects the response (it does not know CONNECT tunnels at all). Ours
	// follows the RFC.
	{"framing fields on a response without body or a tunnel (RFC 9112 §6.3 rules 1, 2)", func(c *dfCase) bool {
		st := c.res.Status()
		return c.oursOK() && (c.method == parser.MethodHead || st < 200 || st == 204 || st == 304 ||
			c.res.Framing() == parser.FramingTunnel) &&
			(c.res.Has(parser.HdrContentLength) || c.res.Has(parser.HdrTransferEncoding))
	}},
	// RFC 9112 §6.3 rule 4: in a response whose final coding is not
	// chunked the body runs to the close. net/http supports only
	// "chunked" and rejects the rest; ours follows the rule.
	{"Transfer-Encoding other than one line \"chunked\" (RFC 9112 §6.1, §6.3 rule 4)", func(c *dfCase) bool {
		return c.oursOK() && c.goSays("transfer encoding") && dfOtherTE(&c.res.Header)
	}},
	{"Content-Length list or spellings of one value (RFC 9110 §8.6 MAY accept)", func(c *dfCase) bool {
		return c.oursOK() && (c.goSays("Content-Length") || c.goSays("content length")) && dfCLSpelling(&c.res.Header)
	}},
	{"Trailer naming a framing field (RFC 9110 §6.6.2; net/http rejects)", func(c *dfCase) bool {
		return c.oursOK() && c.goSays("bad trailer key") && dfTrailerForbidden(&c.res.Header)
	}},
	// RFC 9112 §5.2: obs-fold is replaced by SP before the value is
	// interpreted, and RFC 9110 §5.5 excludes surrounding whitespace from
	// the value. net/http's unfolding keeps the SP it adds for a blank
	// continuation line ("chunked" + fold + "" becomes "chunked "), and
	// its exact-match checks then reject the value. We unfold and trim
	// as the RFC says.
	{"value ending in a blank obs-fold line (RFC 9112 §5.2, RFC 9110 §5.5)", func(c *dfCase) bool {
		return c.oursOK() && dfHasFold(c.input) &&
			(c.goSays("transfer encoding") || c.goSays("Content-Length") || c.goSays("content length"))
	}},
}

func dfLimit(c *dfCase) bool {
	return c.is(parser.ErrTooManyFields) || c.is(parser.ErrHeadTooLarge) || c.is(parser.ErrStartLineTooLong) ||
		c.is(parser.ErrTooManyConnOptions)
}

func dfDigits3(in []byte) bool {
	return len(in) >= 12 && dfIsDigit(in[9]) && dfIsDigit(in[10]) && dfIsDigit(in[11])
}

func dfIsDigit(c byte) bool { return '0' <= c && c <= '9' }

func dfCTL(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// dfClassify finds the known case for a disagreement, or fails.
func dfClassify(t *testing.T, c *dfCase, known []dfKnown) string {
	t.Helper()
	for _, k := range known {
		if k.match(c) {
			return k.name
		}
	}
	t.Fatalf("unclassified disagreement on %q\nours:     %v\nnet/http: %v", c.input, c.ours, c.goErr)
	return ""
}

// dfFields builds the canonical name -> values map net/http would build
// from our fields.
func dfFields(h *parser.Header) map[string][]string {
	m := map[string][]string{}
	for i := 0; i < h.Len(); i++ {
		k := textproto.CanonicalMIMEHeaderKey(string(h.Name(i)))
		m[k] = append(m[k], string(h.Value(i)))
	}
	return m
}

// dfNormalize applies net/http's documented rewrites of the header map to
// ours, so that the rest compares exactly: framing fields are compared as
// framing, Host as req.Host, and Pragma implies Cache-Control.
func dfNormalize(ours, theirs map[string][]string, chunked bool) {
	for _, k := range []string{"Host", "Transfer-Encoding", "Content-Length"} {
		delete(ours, k)
		delete(theirs, k)
	}
	if chunked {
		// net/http moves Trailer to Request/Response.Trailer when it
		// reads Transfer-Encoding as chunked, whatever the status.
		delete(ours, "Trailer")
	}
	// RFC 9111 §5.4: net/http treats "Pragma: no-cache" as
	// "Cache-Control: no-cache" and adds the latter.
	// Its check is an exact match on the first Pragma value, so a blank
	// obs-fold line after it (net/http keeps a trailing SP) defeats it:
	// go by what net/http did.
	if p := ours["Pragma"]; len(p) > 0 && p[0] == "no-cache" && ours["Cache-Control"] == nil &&
		reflect.DeepEqual(theirs["Cache-Control"], []string{"no-cache"}) {
		ours["Cache-Control"] = []string{"no-cache"}
	}
}

// dfFoldSpaces collapses runs of SP and HTAB and trims them: obs-fold is
// replaced by one SP in net/http and by as many SP as the fold's bytes here
// (RFC 9112 §5.2 allows "one or more").
func dfFoldSpaces(m map[string][]string) {
	for k, vs := range m {
		for i, v := range vs {
			vs[i] = strings.Join(strings.Fields(strings.ReplaceAll(v, "\t", " ")), " ")
		}
		m[k] = vs
	}
}

func dfHasFold(in []byte) bool {
	return bytes.Contains(in, []byte("\n ")) || bytes.Contains(in, []byte("\n\t"))
}

func FuzzDiffRequest(f *testing.F) {
	for _, s := range fzRequestSeeds {
		f.Add([]byte(s))
	}
	// One seed per known disagreement, so each class stays exercised.
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
		"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT /rpc HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\n",
		"GET http:x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a:1234567/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a<b/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://[fe80::1%25eth0]/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a%41/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://[zz]/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 101) + "\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n\r\n",
		"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a]/ HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		c := &dfCase{input: input, buf: fzCopy(input), req: &parser.Request{}}
		_, c.ours = c.req.Parse(c.buf)
		c.oursRule = parser.Rule(c.ours)
		c.goReq, c.goErr = http.ReadRequest(bufio.NewReader(bytes.NewReader(input)))

		switch {
		case !c.oursOK() && !c.goOK():
			return // both reject (or the head is incomplete for both)
		case c.ours == parser.ErrNeedMore:
			t.Fatalf("net/http accepts %q, we need more input", input)
		case !c.oursOK() || !c.goOK():
			dfClassify(t, c, dfRequestKnown)
			return
		}
		dfCompareRequest(t, c)
	})
}

func dfCompareRequest(t *testing.T, c *dfCase) {
	t.Helper()
	r, g := c.req, c.goReq
	if string(r.Method()) != g.Method || string(r.Target()) != g.RequestURI {
		t.Fatalf("%q: request line %q %q, net/http %q %q", c.input, r.Method(), r.Target(), g.Method, g.RequestURI)
	}
	if int(r.Version().Minor) != min(g.ProtoMinor, 1) {
		t.Fatalf("%q: version %v, net/http %s", c.input, r.Version(), g.Proto)
	}
	// net/http takes the host from an absolute-form or authority-form
	// target, else from Host; so does Authority. From a target, net/http
	// decodes pct-encoding ("%25" of a zone ID); Authority is the raw view.
	auth := string(r.Authority())
	if r.Form() == parser.FormAbsolute || r.Form() == parser.FormAuthority {
		if u, err := url.PathUnescape(auth); err == nil {
			auth = u
		}
	}
	if auth != g.Host {
		t.Fatalf("%q: authority %q, net/http Host %q", c.input, r.Authority(), g.Host)
	}
	ours := dfFields(&r.Header)
	theirs := map[string][]string(g.Header.Clone())
	dfNormalize(ours, theirs, len(g.TransferEncoding) > 0)
	if !reflect.DeepEqual(ours, theirs) {
		t.Fatalf("%q: fields\nours:     %q\nnet/http: %q", c.input, ours, theirs)
	}

	// Proxy-Connection decides keep-alive here when Connection is absent
	// (old clients talking to proxies); net/http ignores it.
	if !(r.Has(parser.HdrProxyConnection) && !r.Has(parser.HdrConnection)) && r.KeepAlive() == g.Close {
		t.Fatalf("%q: keep-alive %v, net/http Close %v", c.input, r.KeepAlive(), g.Close)
	}

	// RFC 9110 §9.3.6: a CONNECT request has no content; the bytes after
	// its head are tunnel data, so we ignore a length field there.
	// net/http frames CONNECT like any request. Known, nothing to compare.
	if r.MethodID() == parser.MethodConnect {
		return
	}
	var framing string
	switch {
	case len(g.TransferEncoding) > 0:
		framing = "chunked"
	case g.ContentLength > 0 || g.Header["Content-Length"] != nil:
		framing = "length"
	default:
		framing = "none"
	}
	if framing != r.Framing().String() || framing == "length" && g.ContentLength != r.ContentLength() {
		t.Fatalf("%q: framing %v %d, net/http %s %d", c.input, r.Framing(), r.ContentLength(), framing, g.ContentLength)
	}
}

var dfMethodNames = map[parser.Method]string{parser.MethodGet: "GET", parser.MethodHead: "HEAD", parser.MethodConnect: "CONNECT"}

func FuzzDiffResponse(f *testing.F) {
	for _, s := range fzResponseSeeds {
		for m := range fzMethods {
			f.Add([]byte(s), byte(m))
		}
	}
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 Bad\x01Reason\r\n\r\n",
		"HTTP/1.1 +99 Plus\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Transfer-Encoding\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n \r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
	} {
		for m := range fzMethods {
			f.Add([]byte(s), byte(m))
		}
	}
	f.Fuzz(func(t *testing.T, input []byte, mb byte) {
		m := fzMethods[int(mb)%len(fzMethods)]
		c := &dfCase{input: input, buf: fzCopy(input), res: &parser.Response{}, method: m}
		c.res.SetRequestMethod(m)
		_, c.ours = c.res.Parse(c.buf)
		c.oursRule = parser.Rule(c.ours)
		c.goRes, c.goErr = http.ReadResponse(bufio.NewReader(bytes.NewReader(input)), &http.Request{Method: dfMethodNames[m]})

		switch {
		case !c.oursOK() && !c.goOK():
			return
		case c.ours == parser.ErrNeedMore:
			t.Fatalf("net/http accepts %q, we need more input", input)
		case !c.oursOK() || !c.goOK():
			dfClassify(t, c, dfResponseKnown)
			return
		}
		dfCompareResponse(t, c)
	})
}

func dfCompareResponse(t *testing.T, c *dfCase) {
	t.Helper()
	r, g := c.res, c.goRes
	if r.Status() != g.StatusCode {
		t.Fatalf("%q: status %d, net/http %d", c.input, r.Status(), g.StatusCode)
	}
	// net/http's Status is the code, SP, and the reason.
	if _, reason, _ := strings.Cut(g.Status, " "); string(r.Reason()) != reason {
		t.Fatalf("%q: reason %q, net/http status %q", c.input, r.Reason(), g.Status)
	}
	if int(r.Version().Minor) != min(g.ProtoMinor, 1) {
		t.Fatalf("%q: version %v, net/http %s", c.input, r.Version(), g.Proto)
	}
	ours := dfFields(&r.Header)
	theirs := map[string][]string(g.Header.Clone())
	dfNormalize(ours, theirs, len(g.TransferEncoding) > 0)
	// net/http drops "Connection: close" from a response it reports as
	// Close.
	if theirs["Connection"] == nil && r.ConnectionClose() {
		delete(ours, "Connection")
	}
	if dfHasFold(c.input) {
		dfFoldSpaces(ours)
		dfFoldSpaces(theirs)
	}
	if !reflect.DeepEqual(ours, theirs) {
		t.Fatalf("%q: fields\nours:     %q\nnet/http: %q", c.input, ours, theirs)
	}

	// RFC 9112 §6.3 rule 2: a 2xx answer to CONNECT makes the connection
	// a tunnel. ReadResponse does not know tunnels (its Transport handles
	// CONNECT itself) and frames such a response like any other; there is
	// nothing to compare.
	if r.Framing() == parser.FramingTunnel && c.method == parser.MethodConnect && r.Status() != 101 {
		return
	}
	var framing string
	switch {
	case c.method == parser.MethodHead || g.StatusCode/100 == 1 || g.StatusCode == 204 || g.StatusCode == 304:
		framing = "none"
	case len(g.TransferEncoding) > 0:
		framing = "chunked"
	case g.ContentLength >= 0:
		framing = "length"
	default:
		framing = "until-close"
	}
	ourFraming := r.Framing().String()
	if r.Framing() == parser.FramingTunnel { // 101: no body, then the new protocol
		ourFraming = "none"
	}
	if framing != ourFraming || framing == "length" && g.ContentLength != r.ContentLength() {
		t.Fatalf("%q: framing %v %d, net/http %s %d", c.input, r.Framing(), r.ContentLength(), framing, g.ContentLength)
	}
	// For HEAD, both report the announced length (or -1); a 101 is a
	// tunnel first (rule 2) and reports none.
	if c.method == parser.MethodHead && r.Framing() == parser.FramingNone && !r.Has(parser.HdrTransferEncoding) &&
		g.ContentLength != r.ContentLength() {
		t.Fatalf("%q: HEAD content length %d, net/http %d", c.input, r.ContentLength(), g.ContentLength)
	}
	if r.Framing() != parser.FramingTunnel && r.KeepAlive() == g.Close {
		t.Fatalf("%q: keep-alive %v, net/http Close %v", c.input, r.KeepAlive(), g.Close)
	}
}

// TestIPLiteralAgainstNetip checks the IPv6 grammar of IP literals in
// Host against net/netip on random strings over the address alphabet:
// accepted exactly when netip parses an IPv6 address (RFC 3986 §3.2.2
// and netip agree: no leading zeros in an embedded IPv4 address, one
// "::" at most, eight groups).
func TestIPLiteralAgainstNetip(t *testing.T) {
	const alphabet = "0123456789abcdefABCDEF::::...."
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []string{"::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1", "1:",
		"::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5::1.2.3.4",
		"1:2:3:4:5:6::1.2.3.4", "::1.2.3.4", "::01.2.3.4", "::1.2.3.256", "1.2.3.4", "12345::", "1:2:3:4:5:6:7::"}
	for i := 0; i < 200000; i++ {
		b := make([]byte, 1+rng.IntN(24))
		for k := range b {
			b[k] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		a, err := netip.ParseAddr(s)
		want := err == nil && a.Is6()
		var r parser.Request
		_, perr := r.Parse([]byte("GET / HTTP/1.1\r\nHost: [" + s + "]:80\r\n\r\n"))
		if got := perr == nil; got != want {
			t.Fatalf("[%s]: parser %v, netip %v (%v)", s, perr, a, err)
		}
	}
}
