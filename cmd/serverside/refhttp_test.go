package main

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// A reference HTTP/1.1 message reader for the proxy fuzz targets
// (fuzz_proxy_test.go), written from RFC 9112 apart from the parser
// package, so that what the proxy forwards can be checked against a
// second reading of the same bytes. It reads whole messages from a
// buffer; it is slow and simple on purpose.

// errRefMore: the buffer ends inside a message.
var errRefMore = errors.New("reference: need more bytes")

// refError is a message the reference reader refuses; framing marks an
// error in what delimits the message (RFC 9112 §6, §7), which a proxy
// must answer with 400 and a close.
type refError struct {
	msg     string
	framing bool
}

func (e *refError) Error() string { return "reference: " + e.msg }

func refErr(msg string) error     { return &refError{msg: msg} }
func refFraming(msg string) error { return &refError{msg: msg, framing: true} }

// Framing of a reference message.
const (
	refNoBody = iota
	refLength
	refChunked
	refClose // a response delimited by the connection's close
)

type refField struct{ name, value string }

// refMsg is one message as the reference reader read it.
type refMsg struct {
	method, target string // requests
	status         int    // responses
	major, minor   int
	fields         []refField
	framing        int
	length         int64 // refLength
	clCount        int   // Content-Length lines
	teCount        int   // Transfer-Encoding lines
	headLen        int
	body           []byte // decoded
	n              int    // bytes the message took, head and body
	keepAlive      bool
}

func (m *refMsg) get(name string) (string, bool) {
	for _, f := range m.fields {
		if strings.EqualFold(f.name, name) {
			return f.value, true
		}
	}
	return "", false
}

// list joins the elements of every name line, trimmed, empty ones
// dropped (RFC 9110 §5.6.1).
func (m *refMsg) list(name string) []string {
	var out []string
	for _, f := range m.fields {
		if !strings.EqualFold(f.name, name) {
			continue
		}
		for _, e := range strings.Split(f.value, ",") {
			if e = strings.Trim(e, " \t"); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

func (m *refMsg) hasToken(name, tok string) bool {
	for _, e := range m.list(name) {
		if strings.EqualFold(e, tok) {
			return true
		}
	}
	return false
}

func refTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func refToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !refTchar(s[i]) {
			return false
		}
	}
	return true
}

// refMaxHead bounds a head; longer ones are the proxy's to refuse (431).
const refMaxHead = 64 << 10

// refReadHead reads a start line and the field lines. lenient takes a
// bare LF for a line end (RFC 9112 §2.2 lets a recipient), skips empty
// lines before a request line, and, in responses, unfolds obs-fold
// (§5.2); strict takes CRLF only, and what a proxy sends must be strict.
func refReadHead(b []byte, request, lenient bool) (m *refMsg, err error) {
	m = &refMsg{}
	pos := 0
	var lines []string
	for {
		j := bytes.IndexByte(b[pos:], '\n')
		if j < 0 {
			if len(b) > refMaxHead {
				return nil, refErr("head too large")
			}
			return nil, errRefMore
		}
		line := b[pos : pos+j]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		} else if !lenient {
			return nil, refErr("bare LF in head")
		}
		pos += j + 1
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, refErr("bare CR in head")
		}
		if len(lines) == 0 && len(line) == 0 && request && lenient {
			continue
		}
		if len(line) == 0 {
			break
		}
		if len(lines) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if request || !lenient || len(lines) == 1 {
				return nil, refErr("obs-fold")
			}
			lines[len(lines)-1] += " " + strings.Trim(string(line), " \t")
			continue
		}
		lines = append(lines, string(line))
	}
	if pos > refMaxHead {
		return nil, refErr("head too large")
	}
	m.headLen = pos
	if len(lines) == 0 {
		return nil, refErr("no start line")
	}
	if request {
		p := strings.Split(lines[0], " ")
		if len(p) != 3 || !refToken(p[0]) || p[1] == "" {
			return nil, refErr("request line")
		}
		for i := 0; i < len(p[1]); i++ {
			if p[1][i] <= ' ' || p[1][i] >= 0x7f {
				return nil, refErr("target")
			}
		}
		m.method, m.target = p[0], p[1]
		if m.major, m.minor, err = refVersion(p[2]); err != nil {
			return nil, err
		}
	} else {
		l := lines[0]
		if len(l) < 12 || l[8] != ' ' || (len(l) > 12 && l[12] != ' ') {
			return nil, refErr("status line")
		}
		if m.major, m.minor, err = refVersion(l[:8]); err != nil {
			return nil, err
		}
		for i := 9; i < 12; i++ {
			if l[i] < '0' || l[i] > '9' {
				return nil, refErr("status code")
			}
		}
		m.status, _ = strconv.Atoi(l[9:12])
		if m.status < 100 {
			return nil, refErr("status code")
		}
		for i := 12; i < len(l); i++ {
			if c := l[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, refErr("reason")
			}
		}
	}
	for _, l := range lines[1:] {
		i := strings.IndexByte(l, ':')
		if i <= 0 || !refToken(l[:i]) {
			return nil, refErr("field name")
		}
		v := strings.Trim(l[i+1:], " \t")
		for k := 0; k < len(v); k++ {
			if c := v[k]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, refErr("field value")
			}
		}
		m.fields = append(m.fields, refField{l[:i], v})
	}
	return m, nil
}

func refVersion(s string) (int, int, error) {
	if len(s) != 8 || !strings.HasPrefix(s, "HTTP/") || s[6] != '.' ||
		s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9' {
		return 0, 0, refErr("version")
	}
	if s[5] != '1' {
		return 0, 0, refErr("major version")
	}
	return 1, int(s[7] - '0'), nil
}

// refFramingOf sets m's framing from Transfer-Encoding and Content-Length
// (RFC 9112 §6.3); request tells a request (no body by default) from a
// response (to a GET: close-delimited by default).
func refFramingOf(m *refMsg, request bool) error {
	for _, f := range m.fields {
		switch {
		case strings.EqualFold(f.name, "Content-Length"):
			m.clCount++
		case strings.EqualFold(f.name, "Transfer-Encoding"):
			m.teCount++
		}
	}
	http11 := m.minor >= 1
	if !request && (m.status < 200 || m.status == 204 || m.status == 304) {
		m.framing = refNoBody
		m.keepAlive = refKeep(m, http11)
		return nil
	}
	switch {
	case m.teCount > 0 && !http11:
		return refFraming("Transfer-Encoding in HTTP/1.0")
	case m.teCount > 0 && m.clCount > 0:
		return refFraming("Transfer-Encoding and Content-Length")
	case m.teCount > 0:
		codings := m.list("Transfer-Encoding")
		if len(codings) == 0 {
			return refFraming("empty Transfer-Encoding")
		}
		seen := false
		for i, c := range codings {
			switch strings.ToLower(c) {
			case "chunked":
				if seen || request && i != len(codings)-1 {
					return refFraming("chunked twice or not last")
				}
				seen = true
			case "gzip", "x-gzip", "deflate", "compress", "x-compress":
			default:
				if !request {
					// Refused rather than relayed (as the proxy does):
					// a coding nobody knows is as likely a broken head.
					return refErr("unknown transfer coding")
				}
			}
		}
		if !strings.EqualFold(codings[len(codings)-1], "chunked") {
			if request {
				return refFraming("request coding not ending in chunked")
			}
			m.framing = refClose
		} else {
			m.framing = refChunked
		}
	case m.clCount > 0:
		vals := m.list("Content-Length")
		var n int64 = -1
		for _, v := range vals {
			for i := 0; i < len(v); i++ {
				if v[i] < '0' || v[i] > '9' {
					return refFraming("Content-Length not digits")
				}
			}
			k, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return refFraming("Content-Length overflows")
			}
			if n >= 0 && k != n {
				return refFraming("differing Content-Length")
			}
			n = k
		}
		if n < 0 {
			return refFraming("empty Content-Length")
		}
		m.framing, m.length = refLength, n
	case request:
		m.framing = refNoBody
	default:
		m.framing = refClose
	}
	m.keepAlive = refKeep(m, http11) && m.framing != refClose
	return nil
}

func refKeep(m *refMsg, http11 bool) bool {
	if m.hasToken("Connection", "close") {
		return false
	}
	return http11 || m.hasToken("Connection", "keep-alive")
}

// refChunkedBody decodes a chunked body at the start of b (RFC 9112 §7.1),
// with the chunk extensions of §7.1.1 and a trailer section of field
// lines, CRLF throughout. It returns the body and the bytes taken.
func refChunkedBody(b []byte) ([]byte, int, error) {
	var body []byte
	pos := 0
	for {
		j := bytes.Index(b[pos:], crlf)
		if j < 0 {
			if k := bytes.IndexByte(b[pos:], '\n'); k >= 0 {
				return body, 0, refFraming("bare LF in chunk line")
			}
			if len(b)-pos > 4096 {
				return body, 0, refFraming("chunk line too long")
			}
			return body, 0, errRefMore
		}
		line := string(b[pos : pos+j])
		if strings.ContainsAny(line, "\r\n") {
			return body, 0, refFraming("CR or LF in chunk line")
		}
		pos += j + 2
		k := 0
		for k < len(line) && strings.IndexByte("0123456789abcdefABCDEF", line[k]) >= 0 {
			k++
		}
		if k == 0 {
			return body, 0, refFraming("chunk size")
		}
		size, err := strconv.ParseInt(line[:k], 16, 64)
		if err != nil {
			return body, 0, refFraming("chunk size overflows")
		}
		if !refChunkExt(line[k:]) {
			return body, 0, refFraming("chunk extension")
		}
		if size == 0 {
			break
		}
		if left := int64(len(b) - pos); left < size+2 {
			if left > size && b[pos+int(size)] != '\r' {
				return body, 0, refFraming("chunk data not followed by CRLF")
			}
			return append(body, b[pos:pos+int(min(left, size))]...), 0, errRefMore
		}
		body = append(body, b[pos:pos+int(size)]...)
		pos += int(size)
		if b[pos] != '\r' || b[pos+1] != '\n' {
			return body, 0, refFraming("chunk data not followed by CRLF")
		}
		pos += 2
	}
	// The trailer section: field lines, then an empty line.
	for {
		j := bytes.Index(b[pos:], crlf)
		if j < 0 {
			if bytes.IndexByte(b[pos:], '\n') >= 0 {
				return body, 0, refFraming("bare LF in trailer")
			}
			if len(b)-pos > refMaxHead {
				return body, 0, refFraming("trailer too large")
			}
			return body, 0, errRefMore
		}
		line := string(b[pos : pos+j])
		pos += j + 2
		if line == "" {
			return body, pos, nil
		}
		if strings.ContainsAny(line, "\r\n") {
			return body, 0, refFraming("CR or LF in trailer")
		}
		i := strings.IndexByte(line, ':')
		if i <= 0 || !refToken(line[:i]) {
			return body, 0, refFraming("trailer field name")
		}
		for k := i + 1; k < len(line); k++ {
			if c := line[k]; c < ' ' && c != '\t' || c == 0x7f {
				return body, 0, refFraming("trailer field value")
			}
		}
	}
}

// refChunkExt checks the chunk extensions after a chunk size:
// *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
func refChunkExt(s string) bool {
	bws := func() {
		for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
			s = s[1:]
		}
	}
	tok := func() bool {
		k := 0
		for k < len(s) && refTchar(s[k]) {
			k++
		}
		s = s[k:]
		return k > 0
	}
	for len(s) > 0 {
		bws()
		if len(s) == 0 || s[0] != ';' {
			return false
		}
		s = s[1:]
		bws()
		if !tok() {
			return false
		}
		save := s
		bws()
		if len(s) == 0 || s[0] != '=' {
			s = save
			if len(s) > 0 && s[0] != ' ' && s[0] != '\t' && s[0] != ';' {
				return false
			}
			if len(s) > 0 && s[0] != ';' {
				// Whitespace must lead to ";" or "=".
				bws()
				if len(s) == 0 || s[0] != ';' {
					return false
				}
			}
			continue
		}
		s = s[1:]
		bws()
		if len(s) > 0 && s[0] == '"' {
			k := 1
			for ; k < len(s) && s[k] != '"'; k++ {
				c := s[k]
				if c == '\\' {
					k++
					if k == len(s) {
						return false
					}
					c = s[k]
					if c < ' ' && c != '\t' || c == 0x7f {
						return false
					}
					continue
				}
				if c < ' ' && c != '\t' || c == 0x7f {
					return false
				}
			}
			if k == len(s) {
				return false
			}
			s = s[k+1:]
		} else if !tok() {
			return false
		}
		if len(s) > 0 && s[0] != ';' {
			bws()
			if len(s) == 0 || s[0] != ';' {
				return false
			}
		}
	}
	return true
}

// refReadMessage reads one whole message at the start of b. closed says
// the bytes end where the sender closed the connection (which ends a
// close-delimited body). A request's framing errors are refError with
// framing set.
func refReadMessage(b []byte, request, lenient, closed bool) (*refMsg, error) {
	m, err := refReadHead(b, request, lenient)
	if err != nil {
		return nil, err
	}
	if err := refFramingOf(m, request); err != nil {
		return m, err
	}
	rest := b[m.headLen:]
	switch m.framing {
	case refNoBody:
		m.n = m.headLen
	case refLength:
		if int64(len(rest)) < m.length {
			m.body = rest
			return m, errRefMore
		}
		m.body, m.n = rest[:m.length], m.headLen+int(m.length)
	case refChunked:
		body, n, err := refChunkedBody(rest)
		if err != nil {
			m.body = body
			return m, err
		}
		m.body, m.n = body, m.headLen+n
	case refClose:
		m.body = rest
		if !closed {
			return m, errRefMore
		}
		m.n = len(b)
	}
	return m, nil
}
