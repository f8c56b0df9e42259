package main

import (
	"bytes"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/serverside-go/serverside/parser"
)

var (
	maxForwardsName = []byte("Max-Forwards")
	cookieName      = []byte("Cookie")
)

// The Allow fields of the proxy's own answer to OPTIONS.
const (
	allowForward = "Allow: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH\r\n"
	allowReverse = "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH\r\n"
)

// maxForwards applies Max-Forwards to a TRACE or OPTIONS request (RFC
// 9110 §7.6.2). At 0 the proxy must not forward the request but answer
// it as its final recipient: done is true, and keep says whether the
// connection stays open (not after a request body, which is not read).
// Above 0 the request goes on with the value one lower, set in ed (a
// value over 2^31-1 counts as 2^31-1). A request
// without the field goes on unchanged. One whose field is not 1*DIGIT,
// or has lines that differ ("0, 5", "abc", "-1", "0x1"), is answered 400
// and the connection closes: the next hop may read such a value as 0
// (Squid does) and answer a request this proxy read as one to forward,
// or read it otherwise, so no reading of it is safe to pass on.
func (cc *clientConn) maxForwards(s *sink, ed *parser.Edits, hasBody bool) (done, keep bool) {
	req := &cc.rs.req
	n, present, valid := maxForwardsValue(&req.Header)
	if !present {
		return false, false
	}
	if !valid {
		s.keepAlive = false
		cc.writeErrorSink(s, 400, "invalid Max-Forwards")
		return true, false
	}
	if n > 0 {
		// A value beyond what every next hop can parse goes on as the
		// largest 32-bit signed one less one (RFC 9110 §7.6.2 lets a
		// recipient cap it): an int64 reader would refuse 2^64-2.
		n = min(n, math.MaxInt32)
		ed.Set("Max-Forwards", strconv.AppendUint(nil, n-1, 10))
		return false, false
	}
	return cc.answerHere(s, hasBody)
}

// answerHere answers a TRACE or OPTIONS request as its final recipient:
// OPTIONS with the methods the proxy takes, TRACE with the request
// reflected. keep says whether the connection stays open (not after a
// request body, which is not read).
func (cc *clientConn) answerHere(s *sink, hasBody bool) (done, keep bool) {
	req := &cc.rs.req
	keep = s.keepAlive && !hasBody
	var body []byte
	fields := ""
	if req.MethodID() == parser.MethodOptions {
		// What the proxy itself takes (RFC 9110 §9.3.7): every method
		// goes on to the upstream, CONNECT only in forward mode.
		fields = allowForward
		if !cc.p.forward() {
			fields = allowReverse
		}
	}
	if req.MethodID() == parser.MethodTrace {
		// The request as received, as the final recipient reflects it
		// (RFC 9110 §9.3.8), less the fields likely to carry secrets.
		fields = "Content-Type: message/http\r\n"
		body = append(body, req.Method()...)
		body = append(body, ' ')
		body = append(body, req.Target()...)
		body = append(body, ' ')
		body = append(body, req.Version().String()...)
		body = append(body, "\r\n"...)
		for i := range req.Len() {
			switch id := req.ID(i); {
			case id == parser.HdrAuthorization, id == parser.HdrProxyAuthorization,
				id == parser.HdrOther && bytes.EqualFold(req.Name(i), cookieName):
				continue
			}
			body = append(append(append(append(body, req.Name(i)...), ": "...), req.Value(i)...), "\r\n"...)
		}
		body = append(body, "\r\n"...)
	}
	conn := ""
	switch {
	case !keep:
		conn = "Connection: close\r\n"
	case !s.http11:
		conn = "Connection: keep-alive\r\n"
	}
	head := "HTTP/1.1 200 OK\r\nDate: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n" + fields +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" + cc.p.viaLine + conn + "\r\n"
	s.status, s.bytes = 200, int64(len(body))
	s.bb.Reset()
	s.bb.B = append(append(s.bb.B, head...), body...)
	if err := cc.send(s.bb.B); err != nil {
		return true, false
	}
	return true, keep
}

// maxForwardsValue reads the Max-Forwards lines of h: present is false
// when there are none, valid false when one is not 1*DIGIT (RFC 9110
// §7.6.2) or two differ in value. A value beyond 64 bits saturates at
// math.MaxUint64.
func maxForwardsValue(h *parser.Header) (n uint64, present, valid bool) {
	for i := range h.Len() {
		if !bytes.EqualFold(h.Name(i), maxForwardsName) {
			continue
		}
		v, ok := parseDigits(bytes.TrimSpace(h.Value(i)))
		if !ok || present && v != n {
			return 0, true, false
		}
		n, present = v, true
	}
	return n, present, true
}

// parseDigits parses 1*DIGIT, saturating at math.MaxUint64.
func parseDigits(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			n = math.MaxUint64
			continue
		}
		n = n*10 + d
	}
	return n, true
}
