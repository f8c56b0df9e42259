package parser

// Request is an HTTP/1.1 request head parsed in place. The zero value is
// ready to use; reuse it across messages with Reset.
type Request struct {
	Header
}

// Reset clears the request for the next message; Opts survive.
func (r *Request) Reset() { r.Header.reset() }

// Parse parses the request head at the start of buf. Call it again with
// the same bytes plus more after ErrNeedMore: it resumes where it stopped.
// On success it returns the head length; the body, if any, starts there.
// buf is not copied: the views the request returns point into it. A
// *SyntaxError wrapping one of the Err* rules reports a malformed head.
func (r *Request) Parse(buf []byte) (int, error) {
	r.kind = kindRequest
	return r.parseHead(buf)
}

// Method returns the method as received.
func (r *Request) Method() []byte { return r.method.of(r.buf) }

// MethodID classifies the method.
func (r *Request) MethodID() Method { return r.methodID }

// Target returns the request target as received.
func (r *Request) Target() []byte { return r.target.of(r.buf) }

// Form is the form of the request target.
func (r *Request) Form() TargetForm { return r.form }

// Scheme returns the scheme of an absolute-form target ("http"), else nil.
func (r *Request) Scheme() []byte { return r.scheme.of(r.buf) }

// Authority returns host[:port] from the target (absolute-form,
// authority-form) or else from Host; nil when there is none.
func (r *Request) Authority() []byte {
	if r.form == FormAbsolute || r.form == FormAuthority {
		return r.auth.of(r.buf)
	}
	return r.Get(HdrHost)
}

// Path returns the path and query of an origin-form or absolute-form
// target; empty for an absolute-form target without path, meaning "/".
func (r *Request) Path() []byte { return r.path.of(r.buf) }

// KeepAlive reports whether the client asked to keep the connection open
// after this request (RFC 9112 §9.3): HTTP/1.1 unless "close", HTTP/1.0
// only with "keep-alive". Without Connection, Proxy-Connection decides.
func (r *Request) KeepAlive() bool {
	if r.conn&connClose != 0 {
		return false
	}
	return r.version.AtLeast11() || r.conn&connKeepAlive != 0
}

// requestLine parses method SP request-target SP HTTP-version
// (RFC 9112 §3). Single spaces only: lenient whitespace splitting is a
// known source of disagreement between parsers.
func (h *Header) requestLine(s, e int) error {
	b := h.buf
	m := scanToken(b, s, e)
	if m == s || m == e || b[m] != ' ' {
		if m < e && b[m] == '\r' {
			return h.fail(ErrBareCR, m)
		}
		if m == s || m == e {
			return h.fail(ErrBadRequestLine, m)
		}
		return h.fail(ErrBadMethod, m)
	}
	h.method = span{int32(s), int32(m)}
	h.methodID = methodID(b[s:m])
	ts := m + 1
	t := ts
	// No fragment: RFC 9112 §3.2 targets never carry one.
	for t < e && b[t] > ' ' && b[t] != 0x7f && b[t] != '#' {
		t++
	}
	if t == e || b[t] != ' ' || t == ts {
		switch {
		case t < e && b[t] == '\r':
			return h.fail(ErrBareCR, t)
		case t < e && b[t] != ' ':
			return h.fail(ErrBadTarget, t)
		}
		return h.fail(ErrBadRequestLine, t)
	}
	h.target = span{int32(ts), int32(t)}
	if err := h.version2(t+1, e); err != nil {
		return err
	}
	return h.classifyTarget(ts, t)
}

// version2 parses "HTTP/" DIGIT "." DIGIT filling exactly [s, e).
func (h *Header) version2(s, e int) error {
	b := h.buf
	if e-s != 8 || b[s] != 'H' || b[s+1] != 'T' || b[s+2] != 'T' || b[s+3] != 'P' ||
		b[s+4] != '/' || b[s+6] != '.' || !isDigit(b[s+5]) || !isDigit(b[s+7]) {
		for i := s; i < e; i++ {
			if b[i] == '\r' {
				return h.fail(ErrBareCR, i)
			}
		}
		return h.fail(ErrBadVersion, s)
	}
	if b[s+5] != '1' {
		return h.fail(ErrVersionNotHTTP1, s+5)
	}
	// §2.3: a higher minor version is processed as the highest we implement.
	h.version = Version{Major: 1, Minor: min(b[s+7]-'0', 1)}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// classifyTarget sets the form of target [s, e) and its parts (§3.2).
func (h *Header) classifyTarget(s, e int) error {
	b := h.buf
	switch {
	case h.methodID == MethodConnect:
		// §3.2.3: CONNECT takes authority-form and nothing else.
		if !validAuthority(b[s:e], true) {
			return h.fail(ErrBadTarget, s)
		}
		h.form, h.auth = FormAuthority, span{int32(s), int32(e)}
	case b[s] == '/':
		h.form, h.path = FormOrigin, span{int32(s), int32(e)}
	case e-s == 1 && b[s] == '*':
		if h.methodID != MethodOptions {
			return h.fail(ErrBadTarget, s)
		}
		h.form = FormAsterisk
	default:
		// absolute-form: scheme "://" authority path-abempty [ "?" query ]
		i := s
		if !isAlpha(b[i]) {
			return h.fail(ErrBadTarget, s)
		}
		for i < e && (isAlpha(b[i]) || isDigit(b[i]) || b[i] == '+' || b[i] == '-' || b[i] == '.') {
			i++
		}
		if e-i < 3 || b[i] != ':' || b[i+1] != '/' || b[i+2] != '/' {
			return h.fail(ErrBadTarget, i)
		}
		as := i + 3
		ae := as
		for ae < e && b[ae] != '/' && b[ae] != '?' && b[ae] != '#' {
			ae++
		}
		// RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
		if !validAuthority(b[as:ae], false) {
			return h.fail(ErrBadTarget, as)
		}
		h.form = FormAbsolute
		h.scheme = span{int32(s), int32(i)}
		h.auth = span{int32(as), int32(ae)}
		h.path = span{int32(ae), int32(e)}
	}
	return nil
}

func isAlpha(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

// validAuthority checks host [":" port] (RFC 3986 §3.2): a non-empty host
// of host characters (no userinfo), an IP literal in brackets, and a
// decimal port, which needPort requires. A '%' must start a pct-encoded
// octet, and brackets appear only around an IP literal.
func validAuthority(a []byte, needPort bool) bool {
	if len(a) == 0 {
		return false
	}
	host, port, hasPort := a, []byte(nil), false
	if a[0] == '[' {
		i := 1
		for i < len(a) && a[i] != ']' {
			i++
		}
		if i == len(a) || i == 1 {
			return false
		}
		host = a[:i+1]
		switch rest := a[i+1:]; {
		case len(rest) == 0:
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return false
		}
	} else {
		for i := len(a) - 1; i >= 0; i-- {
			if a[i] == ':' {
				host, port, hasPort = a[:i], a[i+1:], true
				break
			}
		}
	}
	if len(host) == 0 || (needPort && (!hasPort || len(port) == 0)) {
		return false
	}
	inner := host
	if host[0] == '[' {
		inner = host[1 : len(host)-1]
	}
	for i := 0; i < len(inner); i++ {
		switch c := inner[i]; {
		case c == '%':
			if i+2 >= len(inner) || hexTable[inner[i+1]] < 0 || hexTable[inner[i+2]] < 0 {
				return false
			}
			i += 2
		case !hostTable[c], c == ':' && host[0] != '[':
			return false
		}
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	return len(port) <= 5
}

// finishRequest applies the request rules that need the whole head.
func (h *Header) finishRequest() error {
	hosts := 0
	h.Each(HdrHost, func([]byte) bool { hosts++; return true })
	switch {
	case hosts > 1:
		return h.fail(ErrDuplicateHost, int(h.fields[h.known[HdrHost]-1].nameOff))
	case hosts == 0 && h.version.AtLeast11():
		return h.fail(ErrMissingHost, h.line)
	case hosts == 1:
		if v := h.Get(HdrHost); len(v) > 0 && !validAuthority(v, false) {
			return h.fail(ErrBadHost, int(h.fields[h.known[HdrHost]-1].valOff))
		}
	}
	connID := HdrConnection
	if !h.Has(HdrConnection) {
		connID = HdrProxyConnection
	}
	if err := h.scanConnection(connID); err != nil {
		return err
	}
	h.scanExpect()
	// §6.3 rule 7: a request without length has no body.
	if err := h.bodyLength(FramingNone); err != nil {
		return err
	}
	if h.methodID == MethodConnect {
		// RFC 9110 §9.3.6: CONNECT has no content; what follows the head
		// is tunnel data, whatever a length field says.
		h.framing, h.contentLength = FramingNone, -1
	}
	return nil
}
