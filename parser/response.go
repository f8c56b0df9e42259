package parser

// Response is an HTTP/1.1 response head parsed in place. The zero value is
// ready to use; reuse it across messages with Reset.
type Response struct {
	Header
}

// Reset clears the response for the next exchange, request method
// included; Opts survive.
func (r *Response) Reset() { r.Header.reset() }

// ResetInterim clears the response after an interim (1xx) one, keeping
// what SetRequestMethod said: the final response answers the same request.
func (r *Response) ResetInterim() {
	m := r.reqMethod
	r.Header.reset()
	r.reqMethod = m
}

// SetRequestMethod tells the parser which request the response answers:
// responses to HEAD have no body and 2xx responses to CONNECT open a
// tunnel (RFC 9112 §6.3). Call it after Reset, before Parse.
func (r *Response) SetRequestMethod(m Method) { r.reqMethod = m }

// RequestMethod is the method set with SetRequestMethod.
func (r *Response) RequestMethod() Method { return r.reqMethod }

// Parse parses the response head at the start of buf. Call it again with
// the same bytes plus more after ErrNeedMore: it resumes where it stopped.
// On success it returns the head length. The views point into buf, which
// Parse modifies only to replace an obs-fold with spaces (RFC 9112 §5.2).
func (r *Response) Parse(buf []byte) (int, error) {
	r.kind = kindResponse
	return r.parseHead(buf)
}

// Status is the status code.
func (r *Response) Status() int { return r.status }

// Reason returns the reason phrase, possibly empty.
func (r *Response) Reason() []byte { return r.reason.of(r.buf) }

// IsInterim reports a 1xx response other than 101: the final response
// follows on the same connection (RFC 9110 §15.2).
func (r *Response) IsInterim() bool { return r.status >= 100 && r.status < 200 && r.status != 101 }

// KeepAlive reports whether the connection may carry another request
// after this response's body (RFC 9112 §9.3): not after "close", not for
// HTTP/1.0 without "keep-alive", and not when the body runs to the close
// or the connection became a tunnel.
func (r *Response) KeepAlive() bool {
	if r.conn&connClose != 0 || r.framing == FramingUntilClose || r.framing == FramingTunnel {
		return false
	}
	return r.version.AtLeast11() || r.conn&connKeepAlive != 0
}

// KeepAliveHint returns the "Keep-Alive: timeout=N, max=M" parameters
// (RFC 2068 §19.7.1.1), or -1 for each absent one.
func (r *Response) KeepAliveHint() (timeout, max int) {
	timeout, max = -1, -1
	r.Each(HdrKeepAlive, func(v []byte) bool {
		for len(v) > 0 {
			var p []byte
			p, v = nextListElem(v)
			for i := 0; i < len(p); i++ {
				if p[i] != '=' {
					continue
				}
				n, err := parseDecimal(trimOWS(p[i+1:]))
				if err != nil || n > 1<<31-1 {
					break
				}
				switch name := trimOWS(p[:i]); {
				case equalFold(name, "timeout"):
					timeout = int(n)
				case equalFold(name, "max"):
					max = int(n)
				}
				break
			}
		}
		return true
	})
	return timeout, max
}

// statusLine parses HTTP-version SP status-code SP [reason-phrase]
// (RFC 9112 §4). A missing SP after the code is tolerated: servers that
// send no reason often drop it, and the code is unambiguous.
func (h *Header) statusLine(s, e int) error {
	b := h.buf
	if e-s < 12 {
		for i := s; i < e; i++ {
			if b[i] == '\r' {
				return h.fail(ErrBareCR, i)
			}
		}
		return h.fail(ErrBadStatusLine, s)
	}
	if err := h.version2(s, s+8); err != nil {
		return err
	}
	if b[s+8] != ' ' {
		return h.fail(ErrBadStatusLine, s+8)
	}
	c := b[s+9 : s+12]
	if !isDigit(c[0]) || !isDigit(c[1]) || !isDigit(c[2]) || c[0] == '0' {
		return h.fail(ErrBadStatusCode, s+9)
	}
	h.status = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	rs := s + 12
	if rs < e {
		if b[rs] != ' ' {
			return h.fail(ErrBadStatusCode, rs)
		}
		rs++
	}
	if off, r := checkValue(b, rs, e); r != nil {
		if r == ErrBadFieldValue {
			r = ErrBadStatusLine
		}
		return h.fail(r, off)
	}
	h.reason = span{int32(rs), int32(e)}
	return nil
}

// finishResponse applies the framing rules of RFC 9112 §6.3 in order.
func (h *Header) finishResponse() error {
	if err := h.scanConnection(HdrConnection); err != nil {
		return err
	}
	h.contentLength = -1
	switch {
	case h.status == 101 && !h.Has(HdrUpgrade):
		// §15.2.2: a 101 names the protocol it switches to. Whether the
		// request offered it (§7.8) is the caller's check: it knows the
		// request.
		return h.fail(ErrBadSwitch, 0)
	case h.status == 101 || (h.reqMethod == MethodConnect && h.status/100 == 2):
		// Rule 2: the connection becomes a tunnel after the empty line.
		h.framing = FramingTunnel
		return nil
	case h.reqMethod == MethodHead || h.status < 200 || h.status == 204 || h.status == 304:
		// Rule 1: no body, whatever the fields say. A valid
		// Content-Length still tells the length of the selected
		// representation; an invalid one is ignored, not fatal.
		h.framing = FramingNone
		if h.Has(HdrContentLength) && !h.Has(HdrTransferEncoding) {
			if n, r, _ := h.contentLengthValue(); r == nil {
				h.contentLength = n
			}
		}
		return nil
	}
	// Rule 8: a response without length runs until the connection closes.
	return h.bodyLength(FramingUntilClose)
}
