package parser

// maxConnOptions bounds the distinct field names one message may list in
// Connection: marking them costs options × fields, and no real client
// names more than a handful.
const maxConnOptions = 16

// scanConnection reads the connection options of every field with id
// (Connection, or Proxy-Connection for old clients), sets h.conn, and marks
// the fields the options name as hop-by-hop (RFC 9110 §7.6.1).
func (h *Header) scanConnection(id HeaderID) error {
	var named [maxConnOptions][]byte
	n := 0
	var err error
	h.Each(id, func(v []byte) bool {
		for len(v) > 0 {
			var opt []byte
			opt, v = nextListElem(v)
			switch {
			case len(opt) == 0:
			case equalFold(opt, "close"):
				h.conn |= connClose
			case equalFold(opt, "keep-alive"):
				h.conn |= connKeepAlive
			default:
				if equalFold(opt, "upgrade") {
					h.conn |= connUpgrade
				}
				if n == maxConnOptions {
					err = h.fail(ErrTooManyConnOptions, cap(h.buf)-cap(opt))
					return false
				}
				named[n] = opt
				n++
			}
		}
		return true
	})
	if err != nil || n == 0 {
		return err
	}
	h.markNamed(named[:n])
	return nil
}

// markNamed marks the fields the connection options name, in one pass.
// Options naming Host or Content-Length are ignored: dropping those would
// let a client strip the framing or the target of a message a proxy still
// forwards (hop-by-hop abuse); the serializer writes framing itself.
func (h *Header) markNamed(names [][]byte) {
	var ids [maxConnOptions]HeaderID
	for k, name := range names {
		ids[k] = LookupHeaderID(name)
	}
	for i := range h.fields {
		f := &h.fields[i]
		if f.id == HdrHost || f.id == HdrContentLength {
			continue
		}
		for k, name := range names {
			if ids[k] == f.id && (f.id != HdrOther || equalFoldBytes(h.Name(i), name)) {
				f.named = true
				break
			}
		}
	}
}

// scanExpect reads Expect (RFC 9110 §10.1.1). A 100-continue expectation
// in an HTTP/1.0 request is ignored, as that section requires of servers.
func (h *Header) scanExpect() {
	h.Each(HdrExpect, func(v []byte) bool {
		for len(v) > 0 {
			var e []byte
			e, v = nextListElem(v)
			switch {
			case len(e) == 0:
			case equalFold(e, "100-continue"):
				if h.version.AtLeast11() {
					h.expect100 = true
				}
			default:
				h.expectOther = true
			}
		}
		return true
	})
}

// bodyLength applies RFC 9112 §6.3 rules 3 to 8 to Transfer-Encoding and
// Content-Length. def is the framing when neither is present.
func (h *Header) bodyLength(def Framing) error {
	h.contentLength = -1
	te, cl := h.Has(HdrTransferEncoding), h.Has(HdrContentLength)
	switch {
	case te && cl:
		// §6.3 rule 3: "ought to be handled as an error"; a proxy that
		// let it through would enable request smuggling.
		return h.fail(ErrTEAndCL, int(h.fields[h.known[HdrContentLength]-1].nameOff))
	case te:
		return h.transferEncoding()
	case cl:
		n, err := h.parseContentLength()
		if err != nil {
			return err
		}
		h.contentLength, h.framing = n, FramingLength
		return nil
	}
	h.framing = def
	return nil
}

// transferEncoding validates the coding list and sets the framing.
func (h *Header) transferEncoding() error {
	if !h.version.AtLeast11() {
		// §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
		return h.fail(ErrTEInHTTP10, int(h.fields[h.known[HdrTransferEncoding]-1].nameOff))
	}
	chunked, last, seen := false, false, false
	unknown := -1 // offset of the first coding not known, in a request
	var err error
	h.Each(HdrTransferEncoding, func(v []byte) bool {
		off := cap(h.buf) - cap(v) // v is a view into h.buf
		for len(v) > 0 {
			var c []byte
			c, v = nextListElem(v)
			if len(c) == 0 {
				continue
			}
			// Transfer parameters (";q=...") do not exist for the
			// registered codings we accept; a parameter makes it unknown.
			switch {
			case equalFold(c, "chunked"):
				if chunked {
					err = h.fail(ErrChunkedTwice, off)
					return false
				}
				chunked, last = true, true
			case equalFold(c, "gzip"), equalFold(c, "x-gzip"), equalFold(c, "deflate"),
				equalFold(c, "compress"), equalFold(c, "x-compress"):
				// A coding after chunked leaves the length unknown: an
				// error in a request, a body read until close in a
				// response (§6.3 rule 4).
				last = false
			default:
				if h.kind != kindRequest {
					err = h.fail(ErrUnknownTE, off)
					return false
				}
				// Which status a request gets depends on the final
				// coding (below): read on.
				if unknown < 0 {
					unknown = off
				}
				last = false
			}
			seen = true
		}
		return true
	})
	if err != nil {
		return err
	}
	switch {
	case h.kind == kindRequest && !last:
		// The body's length cannot be told, whatever the codings, known
		// or not, or none (an empty list): 400 and a close (§6.3 rule
		// 4), before the 501 an unknown coding would get (§6.1).
		return h.fail(ErrTENotChunked, int(h.fields[h.known[HdrTransferEncoding]-1].valOff))
	case unknown >= 0:
		// Chunked last, so the framing holds, under a coding the proxy
		// does not know.
		return h.fail(ErrUnknownTE, unknown)
	case !seen:
		// An empty Transfer-Encoding names no coding: not a valid list.
		return h.fail(ErrUnknownTE, int(h.fields[h.known[HdrTransferEncoding]-1].valOff))
	case last:
		h.framing = FramingChunked
	default:
		h.framing = FramingUntilClose // §6.3 rule 4, response
	}
	return nil
}

const maxInt64 = 1<<63 - 1

// parseContentLength reads every Content-Length line; identical values
// (also as a comma list, §6.3 rule 5) fold into one, different ones fail.
func (h *Header) parseContentLength() (int64, error) {
	n, r, off := h.contentLengthValue()
	if r != nil {
		return 0, h.fail(r, off)
	}
	return n, nil
}

// contentLengthValue folds the Content-Length lines into one value, or
// reports the rule broken and where, without allocating.
func (h *Header) contentLengthValue() (int64, *Error, int) {
	n := int64(-1)
	for i := int(h.known[HdrContentLength]) - 1; i < len(h.fields); i++ {
		f := &h.fields[i]
		if f.id != HdrContentLength {
			continue
		}
		v := h.buf[f.valOff:f.valEnd]
		if len(v) == 0 {
			return 0, ErrBadContentLength, int(f.valOff)
		}
		// nextListElem leaves rest nil only after the last element, so the
		// empty element after a trailing comma is parsed, and rejected,
		// like any other empty element.
		for v != nil {
			var e []byte
			e, v = nextListElem(v)
			m, r := parseDecimal(e)
			if r != nil {
				return 0, r, int(f.valOff)
			}
			if n >= 0 && m != n {
				return 0, ErrCLMismatch, int(f.valOff)
			}
			n = m
		}
	}
	return n, nil, 0
}

// parseDecimal parses 1*DIGIT into a non-negative int64.
func parseDecimal(b []byte) (int64, *Error) {
	if len(b) == 0 {
		return 0, ErrBadContentLength
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, ErrBadContentLength
		}
		if n > (maxInt64-int64(c-'0'))/10 {
			return 0, ErrCLOverflow
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}
