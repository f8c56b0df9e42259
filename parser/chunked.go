package parser

// Chunked-body limits; the zero value of ChunkedDecoder uses these.
const (
	// DefaultMaxChunkLine bounds a chunk-size line with its extensions.
	DefaultMaxChunkLine = 4 << 10
	// DefaultMaxTrailerBytes bounds the trailer section.
	DefaultMaxTrailerBytes = 16 << 10
)

// ChunkedDecoder decodes the chunked transfer coding (RFC 9112 §7.1) as a
// stream: it hands out the body bytes as sub-slices of its input, without
// reassembly or copying, and keeps only a few integers of state between
// calls. Trailer fields, rare and small, are copied and validated. The zero
// value is ready; Reset reuses it.
type ChunkedDecoder struct {
	// MaxChunkLine and MaxTrailerBytes override the defaults when set;
	// they survive Reset.
	MaxChunkLine, MaxTrailerBytes int

	state    State
	ext      extState
	size     int64 // chunk size being read, then bytes of it left
	digits   bool  // at least one hex digit seen in this size line
	lineLen  int   // bytes of the current size line so far
	consumed int64 // input bytes consumed so far, for error offsets
	body     int64 // body bytes handed out so far
	trailer  []byte
	err      error
}

// extState tracks the chunk-ext grammar (§7.1.1) byte by byte:
// *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
type extState uint8

const (
	extSemi      extState = iota // BWS, then ";"
	extNameStart                 // BWS, then the first name char
	extName                      // in the name; CR may end the line
	extAfterName                 // BWS, then "=" or ";"
	extValStart                  // BWS, then token or quoted-string
	extToken                     // in a token value
	extQuoted                    // in a quoted-string
	extQuotedEsc                 // after a backslash in a quoted-string
	extEnd                       // after a quoted-string: ";", BWS or CR
)

// Reset prepares the decoder for a new body; limits survive.
func (d *ChunkedDecoder) Reset() {
	*d = ChunkedDecoder{MaxChunkLine: d.MaxChunkLine, MaxTrailerBytes: d.MaxTrailerBytes, trailer: d.trailer[:0]}
}

// Done reports whether the last chunk and the trailer section were read.
func (d *ChunkedDecoder) Done() bool { return d.state == StateChunkDone }

// State reports where decoding stands.
func (d *ChunkedDecoder) State() State { return max(d.state, StateChunkSize) }

// BodyLen is the number of body bytes decoded so far.
func (d *ChunkedDecoder) BodyLen() int64 { return d.body }

// Consumed is the number of encoded bytes consumed so far.
func (d *ChunkedDecoder) Consumed() int64 { return d.consumed }

// Trailer returns the trailer section as received, each field line ending
// in CRLF and each validated like a header field; valid until Reset.
func (d *ChunkedDecoder) Trailer() []byte { return d.trailer }

func (d *ChunkedDecoder) fail(r *Error, i int) (int, error) {
	d.err = &SyntaxError{Err: r, Offset: int(d.consumed) + i, State: d.state}
	return i, d.err
}

// Next consumes encoded bytes from in and returns the next run of body
// bytes found there, as a sub-slice of in, and how many bytes of in it
// consumed (framing and data). It stops after one run of data so the caller
// can pass it on; call again with in[n:]. With no data and n == len(in),
// more input is needed, unless Done. After Done it consumes nothing: what
// follows belongs to the next message. Errors are *SyntaxError and sticky.
func (d *ChunkedDecoder) Next(in []byte) (data []byte, n int, err error) {
	if d.err != nil {
		return nil, 0, d.err
	}
	if d.state < StateChunkSize {
		d.state = StateChunkSize // the zero value starts at the first size line
	}
	i := 0
	defer func() { d.consumed += int64(n) }()
	for i < len(in) {
		c := in[i]
		// A byte read in these states belongs to a chunk-size line (its CR
		// included) and counts toward the limit. Deciding by the state
		// before the byte keeps out the LF that ends the previous chunk.
		sizeLine := d.state == StateChunkSize || d.state == StateChunkExt
		switch d.state {
		case StateChunkData:
			k := len(in) - i
			if int64(k) > d.size {
				k = int(d.size)
			}
			d.size -= int64(k)
			d.body += int64(k)
			if d.size == 0 {
				d.state = StateChunkDataCR
			}
			return in[i : i+k], i + k, nil
		case StateChunkSize:
			if v := hexTable[c]; v >= 0 {
				if d.size > (maxInt64-int64(v))>>4 {
					n, err = d.fail(ErrChunkSizeOverflow, i)
					return nil, n, err
				}
				d.size = d.size<<4 | int64(v)
				d.digits = true
				break
			}
			if !d.digits {
				n, err = d.fail(ErrBadChunkSize, i)
				return nil, n, err
			}
			switch c {
			case '\r':
				d.state = StateChunkSizeLF
			case ';', ' ', '\t':
				d.state, d.ext = StateChunkExt, extSemi
				if c == ';' {
					d.ext = extNameStart
				}
			case '\n':
				n, err = d.fail(ErrBareLF, i)
				return nil, n, err
			default:
				n, err = d.fail(ErrBadChunkSize, i)
				return nil, n, err
			}
		case StateChunkExt:
			if c == '\r' {
				// The grammar allows whitespace only before ";" or "=":
				// "5 \r\n" and "5;a \r\n" are malformed, a known
				// place for parsers to disagree.
				if d.ext != extName && d.ext != extToken && d.ext != extEnd {
					n, err = d.fail(ErrBadChunkExt, i)
					return nil, n, err
				}
				d.state = StateChunkSizeLF
				break
			}
			if c == '\n' {
				n, err = d.fail(ErrBareLF, i)
				return nil, n, err
			}
			if !d.extByte(c) {
				n, err = d.fail(ErrBadChunkExt, i)
				return nil, n, err
			}
		case StateChunkSizeLF:
			if c != '\n' {
				n, err = d.fail(ErrBareCR, i)
				return nil, n, err
			}
			d.lineLen = 0
			if d.size == 0 {
				d.state = StateTrailerStart
			} else {
				d.state = StateChunkData
			}
		case StateChunkDataCR:
			if c != '\r' {
				n, err = d.fail(ErrChunkNoCRLF, i)
				return nil, n, err
			}
			d.state = StateChunkDataLF
		case StateChunkDataLF:
			if c != '\n' {
				n, err = d.fail(ErrChunkNoCRLF, i)
				return nil, n, err
			}
			d.state, d.size, d.digits = StateChunkSize, 0, false
		case StateTrailerStart:
			switch c {
			case '\r':
				d.state = StateTrailerEndLF
			case '\n':
				n, err = d.fail(ErrBareLF, i)
				return nil, n, err
			case ' ', '\t':
				// A line that starts with whitespace continues the one
				// before (obs-fold, RFC 9112 §5.2) or precedes the first
				// field (§2.2): named as in a head, not as a bad name.
				r := ErrObsFold
				if len(d.trailer) == 0 {
					r = ErrLeadingSpace
				}
				n, err = d.fail(r, i)
				return nil, n, err
			default:
				d.state = StateTrailerLine
				d.lineLen = len(d.trailer)
				if r := d.trailerByte(c); r != nil {
					n, err = d.fail(r, i)
					return nil, n, err
				}
			}
		case StateTrailerLine:
			if c == '\r' {
				d.state = StateTrailerLF
				break
			}
			if r := d.trailerByte(c); r != nil {
				n, err = d.fail(r, i)
				return nil, n, err
			}
		case StateTrailerLF:
			if c != '\n' {
				n, err = d.fail(ErrBareCR, i)
				return nil, n, err
			}
			line := d.trailer[d.lineLen:]
			if _, _, _, bad, r := splitField(line, 0, len(line)); r != nil {
				// The line may have arrived over earlier calls: report
				// the offence at its absolute offset (the line ends
				// with the CR before in[i]), and consume up to here.
				d.err = &SyntaxError{Err: r, Offset: int(d.consumed) + i - 1 - len(line) + bad, State: d.state}
				return nil, i, d.err
			}
			d.trailer = append(d.trailer, '\r', '\n')
			d.state = StateTrailerStart
		case StateTrailerEndLF:
			if c != '\n' {
				n, err = d.fail(ErrBareCR, i)
				return nil, n, err
			}
			d.state = StateChunkDone
			return nil, i + 1, nil
		case StateChunkDone:
			return nil, i, nil
		}
		if sizeLine {
			d.lineLen++
			if d.lineLen > d.maxLine() {
				n, err = d.fail(ErrChunkLineTooLong, i)
				return nil, n, err
			}
		}
		i++
	}
	return nil, i, nil
}

func (d *ChunkedDecoder) maxLine() int {
	if d.MaxChunkLine > 0 {
		return d.MaxChunkLine
	}
	return DefaultMaxChunkLine
}

func (d *ChunkedDecoder) trailerByte(c byte) *Error {
	max := d.MaxTrailerBytes
	if max <= 0 {
		max = DefaultMaxTrailerBytes
	}
	if len(d.trailer)+3 > max {
		return ErrTrailerTooLarge
	}
	if c == '\n' {
		return ErrBareLF
	}
	d.trailer = append(d.trailer, c)
	return nil
}

// extByte advances the chunk-ext grammar by one byte (CR excluded).
func (d *ChunkedDecoder) extByte(c byte) bool {
	switch d.ext {
	case extSemi:
		switch {
		case c == ';':
			d.ext = extNameStart
		case isOWS(c):
		default:
			return false
		}
	case extNameStart:
		switch {
		case tokenTable[c]:
			d.ext = extName
		case isOWS(c):
		default:
			return false
		}
	case extName:
		switch {
		case tokenTable[c]:
		case c == ';':
			d.ext = extNameStart
		case c == '=':
			d.ext = extValStart
		case isOWS(c):
			d.ext = extAfterName
		default:
			return false
		}
	case extAfterName:
		switch {
		case c == ';':
			d.ext = extNameStart
		case c == '=':
			d.ext = extValStart
		case isOWS(c):
		default:
			return false
		}
	case extValStart:
		switch {
		case tokenTable[c]:
			d.ext = extToken
		case c == '"':
			d.ext = extQuoted
		case isOWS(c):
		default:
			return false
		}
	case extToken:
		switch {
		case tokenTable[c]:
		case c == ';':
			d.ext = extNameStart
		case isOWS(c):
			d.ext = extSemi
		default:
			return false
		}
	case extEnd:
		switch {
		case c == ';':
			d.ext = extNameStart
		case isOWS(c):
			d.ext = extSemi
		default:
			return false
		}
	case extQuoted:
		switch {
		case c == '"':
			d.ext = extEnd
		case c == '\\':
			d.ext = extQuotedEsc
		case c == '\t' || c == ' ' || c == '!' || (c >= 0x23 && c != 0x7f):
			// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
		default:
			return false
		}
	case extQuotedEsc:
		// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
		if !(c == '\t' || (c >= 0x20 && c != 0x7f)) {
			return false
		}
		d.ext = extQuoted
	}
	return true
}
