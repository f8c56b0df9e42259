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
	// No fragment: RFC 9112 §3.2 targets never carry one. No byte
	// beyond ASCII either: a URI is ASCII (RFC 3986 §2), and raw UTF-8 a
	// client did not percent-encode is refused, not passed on for each
	// next hop to read its own way (RFC 9112 §3).
	for t < e && b[t] > ' ' && b[t] < 0x7f && b[t] != '#' {
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
// of host characters (no userinfo) or an IP literal in brackets whose
// address is checked too, and a decimal port, which needPort requires. A
// '%' must start a pct-encoded octet, and brackets appear only around an
// IP literal.
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
	if host[0] == '[' {
		if !validIPLiteral(host[1 : len(host)-1]) {
			return false
		}
	} else {
		for i := 0; i < len(host); i++ {
			switch c := host[i]; {
			case c == '%':
				if i+2 >= len(host) || hexTable[host[i+1]] < 0 || hexTable[host[i+2]] < 0 {
					return false
				}
				i += 2
			case !hostTable[c], c == ':':
				return false
			}
		}
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	return len(port) <= 5
}

// validIPLiteral checks what lies between the brackets of an IP-literal
// (RFC 3986 §3.2.2): an IPv6 address, optionally with a zone ("%25" then
// unreserved or pct-encoded octets, RFC 6874), or IPvFuture.
func validIPLiteral(b []byte) bool {
	if len(b) > 0 && (b[0] == 'v' || b[0] == 'V') {
		// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
		i := 1
		for i < len(b) && hexTable[b[i]] >= 0 {
			i++
		}
		if i == 1 || i+1 >= len(b) || b[i] != '.' {
			return false
		}
		for _, c := range b[i+1:] {
			if !hostTable[c] || c == '%' {
				return false
			}
		}
		return true
	}
	for z := 0; z < len(b); z++ {
		if b[z] != '%' {
			continue
		}
		zone := b[z:]
		if len(zone) < 4 || zone[1] != '2' || zone[2] != '5' {
			return false
		}
		for i := 3; i < len(zone); i++ {
			switch c := zone[i]; {
			case c == '%':
				if i+2 >= len(zone) || hexTable[zone[i+1]] < 0 || hexTable[zone[i+2]] < 0 {
					return false
				}
				i += 2
			case !isAlpha(c) && !isDigit(c) && c != '-' && c != '.' && c != '_' && c != '~':
				return false
			}
		}
		b = b[:z]
		break
	}
	return validIPv6(b)
}

// validIPv6 checks an IPv6address (RFC 3986 §3.2.2): eight groups of one
// to four hex digits, "::" once standing for one or more zero groups, and
// the last two groups optionally written as a dotted IPv4 address.
func validIPv6(b []byte) bool {
	groups, gap, i := 0, false, 0
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		gap, i = true, 2
	}
	for i < len(b) {
		j := i
		for j < len(b) && j-i < 4 && hexTable[b[j]] >= 0 {
			j++
		}
		if j < len(b) && b[j] == '.' {
			// An IPv4 address ends the address and counts as two groups.
			return validIPv4(b[i:]) && (gap && groups <= 5 || !gap && groups == 6)
		}
		if j == i {
			return false
		}
		groups++
		if j == len(b) {
			break
		}
		if b[j] != ':' {
			return false
		}
		i = j + 1
		if i < len(b) && b[i] == ':' {
			if gap {
				return false
			}
			gap = true
			i++
		} else if i == len(b) {
			return false // a single trailing colon
		}
	}
	if gap {
		return groups <= 7
	}
	return groups == 8
}

// validIPv4 checks a dotted IPv4address: four dec-octets, 0 to 255,
// without leading zeros (RFC 3986 §3.2.2).
func validIPv4(b []byte) bool {
	for k := 0; k < 4; k++ {
		if k > 0 {
			if len(b) == 0 || b[0] != '.' {
				return false
			}
			b = b[1:]
		}
		n, d := 0, 0
		for d < len(b) && d < 3 && isDigit(b[d]) {
			n = n*10 + int(b[d]-'0')
			d++
		}
		if d == 0 || n > 255 || d > 1 && b[0] == '0' {
			return false
		}
		b = b[d:]
	}
	return len(b) == 0
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
