package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/serverside-go/serverside/parser"
)

// The proxy's Via and forwarding loops.
//
// Every message the proxy forwards gets a Via element "1.1 NAME
// (serverside)" (RFC 9110 §7.6.3; "1.0" for one received in HTTP/1.0),
// the shape of Squid's "1.1 host (squid/6.x)". NAME, the received-by, is
// -via-name, by default the host's name and the listening port, which
// tells two proxies apart even on one host. A request whose Via already
// has an element received by NAME went round back to this proxy (A with
// parent B, B with parent A): it is answered 508 Loop Detected and goes
// no further, instead of going round until its head is too large.

// maxViaName bounds -via-name: a host name's length.
const maxViaName = 255

// viaComment is the comment of the proxy's Via elements: what it is.
const viaComment = " (serverside)"

// checkViaName checks a received-by name (-via-name): a token, or a
// host[:port] (an IPv6 literal in brackets), which a Via element can
// carry as its second word; no space, comma or parenthesis, which would
// end it or start the comment.
func checkViaName(s string) error {
	if s == "" {
		return errors.New("empty; want a host[:port] or a token, e.g. proxy1.example.com:3128")
	}
	if len(s) > maxViaName {
		return fmt.Errorf("%d bytes, more than %d", len(s), maxViaName)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !parser.IsTokenChar(c) && c != ':' && c != '[' && c != ']' {
			return fmt.Errorf("%q has %q; want a host[:port] or a token, e.g. proxy1.example.com:3128, with no space, comma or parenthesis", s, c)
		}
	}
	return nil
}

// defaultViaName is the received-by name of a proxy listening on addr
// without -via-name: the host's name and the port, unique among the
// proxies that can reach each other (RFC 9110 §7.6.3 received-by is
// host[:port]). A host name that cannot be had, or is no valid name,
// gives way to the listening address.
func defaultViaName(addr net.Addr) string {
	host, port := "", "0"
	if ta, ok := addr.(*net.TCPAddr); ok {
		host, port = ta.IP.String(), strconv.Itoa(ta.Port)
	} else if h, p, err := net.SplitHostPort(addr.String()); err == nil {
		host, port = h, p
	}
	if h, err := os.Hostname(); err == nil && h != "" && checkViaName(h) == nil {
		host = h
	}
	return net.JoinHostPort(host, port)
}

// setViaName makes name the proxy's received-by: the Via elements it
// adds and the field line of its own responses, built once here so that
// no request allocates them.
func (p *proxy) setViaName(name string) {
	p.viaName = []byte(name)
	p.via11 = []byte("1.1 " + name + viaComment)
	p.via10 = []byte("1.0 " + name + viaComment)
	p.viaLine = "Via: " + string(p.via11) + "\r\n"
	p.loopMsg = "forwarding loop: this request already passed through " + name
}

// nameVia gives the proxy its default received-by name for the listener
// at addr, unless it has one (clientConfig.ViaName). Serve calls it
// before the first connection is accepted; run calls it first, to log
// the name.
func (p *proxy) nameVia(addr net.Addr) {
	if p.viaName == nil {
		p.setViaName(defaultViaName(addr))
	}
}

// viaFor is the Via element for a message received in version v: its
// received-protocol is v's (RFC 9110 §7.6.3).
func (p *proxy) viaFor(v parser.Version) []byte {
	if v.AtLeast11() {
		return p.via11
	}
	return p.via10
}

// viaHas reports whether a Via line of h has an element whose
// received-by is name, without case: a message that passed through the
// proxy named so. Each element is "protocol received-by [comment]"
// (protocol "1.1" or "HTTP/1.1"); the elements are separated by commas
// outside comments, which nest and may escape a parenthesis with a
// backslash. The name inside a comment, or as a part of another
// received-by, is not it.
func viaHas(h *parser.Header, name []byte) bool {
	for i := range h.Len() {
		if h.ID(i) == parser.HdrVia && viaListHas(h.Value(i), name) {
			return true
		}
	}
	return false
}

// viaListHas is viaHas for one field line's value.
func viaListHas(v, name []byte) bool {
	for len(v) > 0 {
		// Empty elements and the whitespace around one are allowed
		// (RFC 9110 §5.6.1).
		for len(v) > 0 && (v[0] == ',' || v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		proto := viaWord(v)
		v = v[proto:]
		ws := 0
		for ws < len(v) && (v[ws] == ' ' || v[ws] == '\t') {
			ws++
		}
		v = v[ws:]
		by := viaWord(v)
		if proto > 0 && ws > 0 && by == len(name) && bytes.EqualFold(v[:by], name) {
			return true
		}
		v = v[by:]
		// The rest of the element, its comment included, up to the
		// comma that ends it.
		depth := 0
	rest:
		for len(v) > 0 {
			switch c := v[0]; {
			case c == '\\' && depth > 0 && len(v) > 1:
				v = v[1:] // a quoted-pair: the next byte is taken as is
			case c == '(':
				depth++
			case c == ')' && depth > 0:
				depth--
			case c == ',' && depth == 0:
				break rest
			}
			v = v[1:]
		}
	}
	return false
}

// viaWord is the length of the word v starts with: up to whitespace, a
// comma or a comment.
func viaWord(v []byte) int {
	for i, c := range v {
		if c == ' ' || c == '\t' || c == ',' || c == '(' {
			return i
		}
	}
	return len(v)
}

// forwardedVia is the Via of a CONNECT sent on to a parent: the
// client's elements, then the proxy's own.
func (cc *clientConn) forwardedVia(req *parser.Request) string {
	var b []byte
	for i := range req.Len() {
		if req.ID(i) != parser.HdrVia {
			continue
		}
		if v := bytes.Trim(req.Value(i), " \t"); len(v) > 0 {
			b = append(append(b, v...), ", "...)
		}
	}
	return string(append(b, cc.p.viaFor(req.Version())...))
}
