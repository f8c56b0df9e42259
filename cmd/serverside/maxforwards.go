package main

import (
	"bytes"
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
// Above 0 the request goes on with the value one lower, set in ed. A
// request without the field, or with a value that is not a number, goes
// on unchanged.
func (cc *clientConn) maxForwards(s *sink, ed *parser.Edits, hasBody bool) (done, keep bool) {
	req := &cc.rs.req
	v := bytes.TrimSpace(req.Peek(maxForwardsName))
	n, err := strconv.ParseUint(string(v), 10, 31)
	if len(v) == 0 || err != nil {
		return false, false
	}
	if n > 0 {
		ed.Set("Max-Forwards", strconv.AppendUint(nil, n-1, 10))
		return false, false
	}
	keep = s.keepAlive && !hasBody
	var body []byte
	fields := ""
	if req.MethodID() == parser.MethodOptions {
		// What the proxy itself takes (RFC 9110 §9.3.7): every method
		// goes on to the upstream, CONNECT only in forward mode.
		fields = allowForward
		if cc.p.group != "" && !cc.p.parents {
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
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" + conn + "\r\n"
	s.status, s.bytes = 200, int64(len(body))
	s.bb.Reset()
	s.bb.B = append(append(s.bb.B, head...), body...)
	if err := cc.send(s.bb.B); err != nil {
		return true, false
	}
	return true, keep
}
