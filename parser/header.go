package parser

import (
	"bytes"
	"encoding/binary"
)

// field is one field line as offsets into the parsed buffer.
type field struct {
	nameOff, nameEnd int32
	valOff, valEnd   int32
	id               HeaderID
	named            bool // listed in Connection: hop-by-hop for this message
	folded           bool // the value spans an unfolded obs-fold
}

// connection-management flags gathered from Connection (and, for requests
// without Connection, Proxy-Connection).
const (
	connClose uint8 = 1 << iota
	connKeepAlive
	connUpgrade
)

// Header is the part common to requests and responses: the version, the
// field lines and what the framing and connection fields mean. Every []byte
// it returns is a view into the buffer last passed to Parse, valid while that
// buffer is neither modified nor reused, and until the next Reset.
type Header struct {
	// Opts are the parser settings; they survive Reset.
	Opts Options

	buf    []byte
	fields []field
	known  [numHeaderIDs]int32 // 1 + index of the first field with that id; 0 = absent
	err    error               // sticky: once failed, Parse keeps failing

	state   State
	pos     int // where the search for the next LF resumes
	line    int // start of the line being read
	headLen int // bytes of the head once StateDone

	version       Version
	framing       Framing
	contentLength int64
	conn          uint8 // connClose | connKeepAlive | connUpgrade
	expect100     bool
	expectOther   bool
	kind          uint8 // kindRequest or kindResponse, set by Parse
	folded        bool  // some field was unfolded (responses only)

	// Start line. Requests: method, target and its parts. Responses:
	// status and reason; reqMethod is the method the response answers.
	method, target, scheme, auth, path span
	methodID                           Method
	form                               TargetForm
	status                             int
	reason                             span
	reqMethod                          Method
}

type span struct{ off, end int32 }

func (s span) of(b []byte) []byte { return b[s.off:s.end] }

const (
	kindResponse uint8 = iota
	kindRequest
)

func (h *Header) reset() {
	opts, fields := h.Opts, h.fields[:0]
	*h = Header{Opts: opts, fields: fields}
}

// State reports where parsing stands.
func (h *Header) State() State { return h.state }

// Done reports whether a whole head has been parsed.
func (h *Header) Done() bool { return h.state == StateDone }

// HeadLen is the length of the head in bytes, start line to the empty line
// inclusive, once Done.
func (h *Header) HeadLen() int { return h.headLen }

// Raw returns the head bytes as received, obs-folds replaced. It is for
// logging and diagnostics: never forward it, since it keeps what the
// serializer normalizes away (bare LF, empty lines before a request line,
// repeated Content-Length, hop-by-hop fields).
func (h *Header) Raw() []byte { return h.buf[:h.headLen] }

// Version is the message's HTTP version.
func (h *Header) Version() Version { return h.version }

// Len is the number of field lines.
func (h *Header) Len() int { return len(h.fields) }

// Name returns the name of field i as received.
func (h *Header) Name(i int) []byte { f := &h.fields[i]; return h.buf[f.nameOff:f.nameEnd] }

// Value returns the value of field i, without surrounding whitespace.
func (h *Header) Value(i int) []byte { f := &h.fields[i]; return h.buf[f.valOff:f.valEnd] }

// ID classifies field i.
func (h *Header) ID(i int) HeaderID { return h.fields[i].id }

// IsHopByHop reports whether field i belongs to one connection only
// (RFC 9110 §7.6.1): a fixed hop-by-hop field or one named in Connection.
func (h *Header) IsHopByHop(i int) bool {
	f := &h.fields[i]
	return f.named || hopByHop.Has(f.id)
}

// Has reports whether an indexed field is present, in O(1).
func (h *Header) Has(id HeaderID) bool { return id != HdrOther && h.known[id] != 0 }

// Get returns the value of the first field with the given id, or nil, in O(1).
func (h *Header) Get(id HeaderID) []byte {
	if id == HdrOther || h.known[id] == 0 {
		return nil
	}
	return h.Value(int(h.known[id]) - 1)
}

// Peek returns the value of the first field named name (any case), or nil.
// Indexed names take O(1); others a scan of the fields.
func (h *Header) Peek(name []byte) []byte {
	if id := LookupHeaderID(name); id != HdrOther {
		return h.Get(id)
	}
	for i := range h.fields {
		if equalFoldBytes(h.Name(i), name) {
			return h.Value(i)
		}
	}
	return nil
}

// Each calls fn for every field with the given id, in order, until fn
// returns false. Lists spread over several lines (Connection, WWW-Authenticate)
// are read this way.
func (h *Header) Each(id HeaderID, fn func(value []byte) bool) {
	if !h.Has(id) {
		return
	}
	for i := int(h.known[id]) - 1; i < len(h.fields); i++ {
		if h.fields[i].id == id && !fn(h.Value(i)) {
			return
		}
	}
}

// Framing is how the body is delimited, once Done.
func (h *Header) Framing() Framing { return h.framing }

// ContentLength is the body length when Framing is FramingLength; for a
// response without body (HEAD, 304) it is the announced length when one was
// sent and valid, else -1.
func (h *Header) ContentLength() int64 { return h.contentLength }

// ConnectionClose reports a "close" connection option.
func (h *Header) ConnectionClose() bool { return h.conn&connClose != 0 }

// Upgrade reports an "upgrade" connection option with an Upgrade field in
// an HTTP/1.1 message. Upgrade in HTTP/1.0 is ignored (RFC 9110 §7.8): the
// head is forwarded as HTTP/1.1, so honouring it would upgrade on behalf
// of a client that cannot have asked for it.
func (h *Header) Upgrade() bool {
	return h.conn&connUpgrade != 0 && h.Has(HdrUpgrade) && h.version.AtLeast11()
}

// ExpectContinue reports "Expect: 100-continue" in an HTTP/1.1 request; in
// HTTP/1.0 it is ignored (RFC 9110 §10.1.1).
func (h *Header) ExpectContinue() bool { return h.expect100 }

// ExpectOther reports an Expect value other than 100-continue, which a
// server may answer with 417.
func (h *Header) ExpectOther() bool { return h.expectOther }

func (h *Header) fail(rule *Error, off int) error {
	h.err = &SyntaxError{Err: rule, Offset: off, State: h.state}
	return h.err
}

// parseHead runs the line loop shared by requests and responses. It resumes
// at h.pos, so bytes already scanned are not scanned again.
func (h *Header) parseHead(buf []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	if len(buf) < h.pos {
		// The caller must pass the bytes already seen again, and more.
		return 0, h.fail(ErrShortBuffer, len(buf))
	}
	h.buf = buf
	if h.state == StateDone {
		h.reblank()
		return h.headLen, nil
	}
	max := h.Opts.maxHead()
	for {
		i := bytes.IndexByte(buf[h.pos:], '\n')
		if i < 0 || h.pos+i >= max {
			// No line end (within the limit) yet. A request line whose
			// method already went wrong is refused now, also when the
			// line is too long, so that the error does not depend on how
			// the bytes were split.
			startLine := h.state == StateStartLine && h.kind == kindRequest
			if startLine {
				if err := h.partialMethod(buf[:min(len(buf), max)]); err != nil {
					return 0, err
				}
			}
			if i >= 0 || len(buf) > max {
				return 0, h.tooLarge(max)
			}
			h.pos = len(buf)
			return 0, ErrNeedMore
		}
		lf := h.pos + i
		if h.state == StateStartLine && h.kind == kindRequest {
			// The method's errors come first, as when the line arrives
			// in pieces (see above).
			if err := h.partialMethod(buf[:lf]); err != nil {
				return 0, err
			}
		}
		h.pos = lf + 1
		end := lf
		if end > h.line && buf[end-1] == '\r' {
			end--
		} else if h.Opts.StrictCRLF {
			return 0, h.fail(ErrBareLF, lf)
		}
		if h.state == StateStartLine {
			if end == h.line && h.kind == kindRequest {
				// RFC 9112 §2.2: a server SHOULD ignore empty lines before
				// the request line; the head limit still bounds them.
				h.line = h.pos
				continue
			}
			var err error
			if h.kind == kindRequest {
				err = h.requestLine(h.line, end)
			} else {
				err = h.statusLine(h.line, end)
			}
			if err != nil {
				return 0, err
			}
			h.state = StateFields
		} else if end == h.line {
			h.headLen = h.pos
			h.reblank()
			var err error
			if h.kind == kindRequest {
				err = h.finishRequest()
			} else {
				err = h.finishResponse()
			}
			if err != nil {
				return 0, err
			}
			h.state = StateDone
			return h.headLen, nil
		} else if isOWS(buf[h.line]) {
			if err := h.fold(h.line, end); err != nil {
				return 0, err
			}
		} else if err := h.fieldLine(h.line, end); err != nil {
			return 0, err
		}
		h.line = h.pos
	}
}

func (h *Header) tooLarge(max int) error {
	if h.state == StateStartLine {
		return h.fail(ErrStartLineTooLong, max)
	}
	return h.fail(ErrHeadTooLarge, max)
}

// scanToken returns the end of the token starting at s.
func scanToken(b []byte, s, e int) int {
	for i, c := range b[s:e] { // ranging over a subslice: no bounds checks
		if !tokenTable[c] {
			return s + i
		}
	}
	return e
}

// Word-at-a-time screening for checkValue: a word is clean when none of
// its bytes is below 0x20 or equal to 0x7f (obs-text, 0x80 and up, has the
// high bit set and is never flagged). HTAB is below 0x20, so a word with a
// tab is flagged and checked byte by byte, like any flagged word.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

func cleanWord(x uint64) bool {
	y := x ^ (0x7f * lsb) // bytes equal to 0x7f become zero
	return ((x-0x20*lsb)&^x|(y-lsb)&^y)&msb == 0
}

// checkValue validates field-value bytes in [s, e) and returns the offset
// of the first bad byte with its rule, or -1. It screens eight bytes at a
// time and looks at single bytes only in a flagged word and in a value
// shorter than a word.
func checkValue(b []byte, s, e int) (int, *Error) {
	v := b[s:e]
	i := 0
	if len(v) >= 8 {
		for ; i+8 <= len(v); i += 8 {
			if !cleanWord(binary.LittleEndian.Uint64(v[i:])) {
				if j, r := checkBytes(v, i, i+8); r != nil {
					return s + j, r
				}
			}
		}
		if i == len(v) {
			return -1, nil
		}
		// The tail, as one word overlapping bytes already checked.
		i = len(v) - 8
		if cleanWord(binary.LittleEndian.Uint64(v[i:])) {
			return -1, nil
		}
	}
	if j, r := checkBytes(v, i, len(v)); r != nil {
		return s + j, r
	}
	return -1, nil
}

// checkBytes is checkValue one byte at a time, over v[i:e].
func checkBytes(v []byte, i, e int) (int, *Error) {
	for k, c := range v[i:e] {
		if !valueTable[c] {
			if c == '\r' {
				return i + k, ErrBareCR
			}
			return i + k, ErrBadFieldValue
		}
	}
	return -1, nil
}

// splitField parses a field line [s, e) of b: name, then value bounds
// without surrounding whitespace.
func splitField(b []byte, s, e int) (nameEnd, vs, ve, bad int, rule *Error) {
	nameEnd = scanToken(b, s, e)
	switch {
	case nameEnd == e:
		if nameEnd == s {
			return 0, 0, 0, s, ErrBadFieldName
		}
		return 0, 0, 0, e, ErrNoColon
	case b[nameEnd] == ':':
		if nameEnd == s {
			return 0, 0, 0, s, ErrBadFieldName
		}
	case isOWS(b[nameEnd]):
		return 0, 0, 0, nameEnd, ErrSpaceBeforeColon
	case b[nameEnd] == '\r':
		return 0, 0, 0, nameEnd, ErrBareCR
	default:
		return 0, 0, 0, nameEnd, ErrBadFieldName
	}
	vs = nameEnd + 1
	for vs < e && isOWS(b[vs]) {
		vs++
	}
	ve = e
	for ve > vs && isOWS(b[ve-1]) {
		ve--
	}
	if off, r := checkValue(b, vs, ve); r != nil {
		return 0, 0, 0, off, r
	}
	return nameEnd, vs, ve, -1, nil
}

func (h *Header) fieldLine(s, e int) error {
	if len(h.fields) >= h.Opts.maxFields() {
		return h.fail(ErrTooManyFields, s)
	}
	nameEnd, vs, ve, bad, r := splitField(h.buf, s, e)
	if r != nil {
		return h.fail(r, bad)
	}
	id := LookupHeaderID(h.buf[s:nameEnd])
	if id != HdrOther && h.known[id] == 0 {
		h.known[id] = int32(len(h.fields) + 1)
	}
	// Fill the new element in place: appending a composite literal builds
	// it on the stack with narrow stores and copies it with wide loads,
	// which stalls store-to-load forwarding on every field.
	n := len(h.fields)
	if n < cap(h.fields) {
		h.fields = h.fields[:n+1]
	} else {
		h.fields = append(h.fields, field{})
	}
	// Zero the element first: a reused one holds the flags of an earlier
	// message (named, folded), which must not survive.
	f := &h.fields[n]
	*f = field{}
	f.nameOff, f.nameEnd = int32(s), int32(nameEnd)
	f.valOff, f.valEnd = int32(vs), int32(ve)
	f.id = id
	return nil
}

// fold handles a line [s, e) that starts with whitespace: obs-fold.
func (h *Header) fold(s, e int) error {
	if len(h.fields) == 0 {
		return h.fail(ErrLeadingSpace, s)
	}
	if h.foldPolicyRejects() {
		return h.fail(ErrObsFold, s)
	}
	vs, ve := s, e
	for vs < ve && isOWS(h.buf[vs]) {
		vs++
	}
	for ve > vs && isOWS(h.buf[ve-1]) {
		ve--
	}
	if off, r := checkValue(h.buf, vs, ve); r != nil {
		return h.fail(r, off)
	}
	if vs == ve {
		return nil // a blank continuation adds nothing
	}
	f := &h.fields[len(h.fields)-1]
	if f.valOff == f.valEnd {
		f.valOff = int32(vs)
	} else {
		// RFC 9112 §5.2: replace the obs-fold (and the whitespace around
		// it) with SP, in place, so the value stays one contiguous view.
		for i := int(f.valEnd); i < vs; i++ {
			h.buf[i] = ' '
		}
	}
	f.valEnd = int32(ve)
	f.folded = true
	h.folded = true
	return nil
}

// reblank re-applies the obs-fold replacement to the buffer last passed:
// a caller that builds each longer buffer from the bytes as received would
// otherwise hand the folds' CR and LF back, and the serializer would
// forward a folded line. Rare, so a plain loop.
func (h *Header) reblank() {
	if !h.folded {
		return
	}
	for i := range h.fields {
		if f := &h.fields[i]; f.folded {
			for k := f.valOff; k < f.valEnd; k++ {
				if c := h.buf[k]; c == '\r' || c == '\n' || c == '\t' {
					h.buf[k] = ' '
				}
			}
		}
	}
}

func (h *Header) foldPolicyRejects() bool { return h.Opts.RejectObsFold || h.kind == kindRequest }

// partialMethod rejects a request line whose method already shows a byte
// no method may hold, without waiting for the line's end: bytes that are
// not HTTP at all (a TLS ClientHello sent to a plain port, say) have no
// line end to wait for, and would otherwise be answered only at the
// header timeout. It reports the error requestLine would report for the
// whole line; a CR may still be the start of the line's end, so it waits.
func (h *Header) partialMethod(buf []byte) error {
	s := h.line
	if s >= len(buf) {
		return nil
	}
	m := scanToken(buf, s, len(buf))
	if m == len(buf) || buf[m] == ' ' || buf[m] == '\r' {
		return nil
	}
	if m == s {
		return h.fail(ErrBadRequestLine, m)
	}
	return h.fail(ErrBadMethod, m)
}
