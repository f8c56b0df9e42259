package parser

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/valyala/bytebufferpool"
)

type editOp uint8

const (
	opRemove editOp = iota
	opSet
	opAdd
)

type edit struct {
	op    editOp
	id    HeaderID
	name  string
	value []byte
	done  bool
}

// Edits describes how a forwarded head differs from the parsed one. The
// zero value forwards the head unchanged except for the version, which is
// always HTTP/1.1 (an intermediary sends its own version, RFC 9110 §6.2).
// Edits keeps references to the byte slices passed to it; reuse one Edits
// per connection with Reset to avoid allocation.
type Edits struct {
	// StripHopByHop drops hop-by-hop fields (Header.IsHopByHop) except
	// those in Keep.
	StripHopByHop bool
	// Keep lists hop-by-hop fields to forward anyway, e.g. Upgrade for a
	// WebSocket handshake or Proxy-Authorization on a credential
	// pass-through.
	Keep HeaderSet
	// Method and Target replace the request's when not nil (a reverse
	// proxy turns absolute-form into origin-form, for example).
	Method, Target []byte
	// Status and Reason replace the response's when Status is not zero.
	Status int
	Reason []byte

	ops     []edit
	framing bool  // an edit names Content-Length or Transfer-Encoding
	err     error // first invalid edit; Write*Head returns it
}

// ErrBadEdit reports an edit whose name is not a token or whose value, or
// start-line override, holds bytes that would split or end the head.
var ErrBadEdit = errors.New("parser: invalid edit")

// Reset clears the edits for the next message, keeping capacity.
func (e *Edits) Reset() { *e = Edits{ops: e.ops[:0]} }

// CopyFrom makes e a copy of src, reusing e's capacity, so that a copy can
// be extended (with framing, say) without touching the caller's edits. The
// byte slices src refers to are shared, not copied.
func (e *Edits) CopyFrom(src *Edits) {
	ops := append(e.ops[:0], src.ops...)
	*e = *src
	e.ops = ops
}

// MethodID is the method of the request head h written with e (nil: no
// edits): e.Method when set, else h's own. Framing, resends and the
// like follow the method sent, not the one parsed.
func (e *Edits) MethodID(h *Request) Method {
	if e != nil && e.Method != nil {
		return methodID(e.Method)
	}
	return h.MethodID()
}

// Remove drops every field named name.
func (e *Edits) Remove(name string) { e.push(opRemove, name, nil) }

// Set replaces the first field named name with value, in its place, and
// drops the others; if there is none, the field is added at the end. A Set
// of a framing field (Content-Length, Transfer-Encoding) also replaces the
// framing set by earlier edits: the last one is the message's framing.
func (e *Edits) Set(name string, value []byte) { e.push(opSet, name, value) }

// Add appends a field at the end, after the existing fields. Framing
// fields are the exception: an edit that names Content-Length or
// Transfer-Encoding replaces the parsed framing fields, all of them, so a
// head never carries two framings.
func (e *Edits) Add(name string, value []byte) { e.push(opAdd, name, value) }

func (e *Edits) push(op editOp, name string, value []byte) {
	nb := []byte(name)
	if name == "" || scanToken(nb, 0, len(nb)) != len(nb) {
		e.setErr("field name", name)
		return
	}
	if _, r := checkValue(value, 0, len(value)); r != nil {
		e.setErr("value of", name)
		return
	}
	id := LookupHeaderID(nb)
	if id == HdrContentLength || id == HdrTransferEncoding {
		e.framing = true
		if op == opAdd {
			op = opSet
		}
		e.dropFraming(op, id)
	}
	e.ops = append(e.ops, edit{op: op, id: id, name: name, value: value})
}

// Carries reports whether the head h written with e (nil: no edits) has
// a field named name, any case: one of h's that e neither strips as
// hop-by-hop nor removes, or one e sets or adds. It is for fields other
// than the framing ones and Expect, which the writer also drops by the
// message's framing and version.
func (e *Edits) Carries(h *Header, name []byte) bool {
	if e != nil {
		for k := range e.ops {
			if x := &e.ops[k]; x.op != opRemove && equalFoldBytes([]byte(x.name), name) {
				return true
			}
		}
	}
	for i := range h.fields {
		if equalFoldBytes(h.Name(i), name) && (e == nil || e.forwards(h, i)) {
			return true
		}
	}
	return false
}

// forwards reports whether the head written with e passes h's field i on
// as parsed: e neither strips it as hop-by-hop nor removes it nor replaces
// it (a Set writes its own value in its place), as appendFields does.
func (e *Edits) forwards(h *Header, i int) bool {
	if e.StripHopByHop && h.IsHopByHop(i) && !e.Keep.Has(h.fields[i].id) {
		return false
	}
	for k := range e.ops {
		if x := &e.ops[k]; x.op != opAdd && x.match(h, i) {
			return false
		}
	}
	return true
}

// ConnectionClose reports whether the head h written with e (nil: no
// edits) carries a Connection field with the "close" option: one of h's
// that e neither strips as hop-by-hop nor removes nor replaces, or one e
// sets or adds. It is the forwarded head's own request to close, which
// h.ConnectionClose (the parsed head's, Proxy-Connection included) is not
// once edits apply. It does not allocate.
func (e *Edits) ConnectionClose(h *Header) bool {
	if e != nil {
		for k := range e.ops {
			if x := &e.ops[k]; x.op != opRemove && x.id == HdrConnection && hasClose(x.value) {
				return true
			}
		}
	}
	return h.Has(HdrConnection) && h.forwardsClose(e)
}

// forwardsClose reports a Connection field of h that e (nil: no edits)
// forwards as parsed and whose value lists "close".
func (h *Header) forwardsClose(e *Edits) bool {
	for i := range h.fields {
		if h.fields[i].id == HdrConnection && (e == nil || e.forwards(h, i)) && hasClose(h.Value(i)) {
			return true
		}
	}
	return false
}

// hasClose reports a connection-option list v that names "close".
func hasClose(v []byte) bool {
	for len(v) > 0 {
		var opt []byte
		opt, v = nextListElem(v)
		if equalFold(opt, "close") {
			return true
		}
	}
	return false
}

// dropFraming drops the framing values set before a new framing edit (op on
// field id): a Set is the message's framing, replacing any set earlier, so
// that a copy of a caller's edits extended with the framing of the body
// actually sent carries one framing, not two; a Remove drops the value set
// earlier for its field.
func (e *Edits) dropFraming(op editOp, id HeaderID) {
	kept := e.ops[:0]
	for _, x := range e.ops {
		if x.op == opSet && (x.id == HdrContentLength || x.id == HdrTransferEncoding) && (op == opSet || x.id == id) {
			continue
		}
		kept = append(kept, x)
	}
	clear(e.ops[len(kept):])
	e.ops = kept
}

func (e *Edits) setErr(what, name string) {
	if e.err == nil {
		e.err = fmt.Errorf("%w: %s %q", ErrBadEdit, what, name)
	}
}

// check validates the start-line overrides.
func (e *Edits) check() error {
	if e.err != nil {
		return e.err
	}
	if e.Method != nil && (len(e.Method) == 0 || scanToken(e.Method, 0, len(e.Method)) != len(e.Method)) {
		return fmt.Errorf("%w: method %q", ErrBadEdit, e.Method)
	}
	for _, c := range e.Target {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: target %q", ErrBadEdit, e.Target)
		}
	}
	if e.Target != nil && len(e.Target) == 0 {
		return fmt.Errorf("%w: empty target", ErrBadEdit)
	}
	if e.Status != 0 && (e.Status < 100 || e.Status > 999) {
		return fmt.Errorf("%w: status %d", ErrBadEdit, e.Status)
	}
	if _, r := checkValue(e.Reason, 0, len(e.Reason)); r != nil {
		return fmt.Errorf("%w: reason %q", ErrBadEdit, e.Reason)
	}
	return nil
}

// match reports whether edit x names field i of h.
func (x *edit) match(h *Header, i int) bool {
	if x.id != HdrOther || h.fields[i].id != HdrOther {
		return x.id == h.fields[i].id
	}
	return equalFoldBytes(h.Name(i), []byte(x.name))
}

// WriteRequestHead serializes r with the edits applied into bb, from the
// parsed views, without parsing again. An invalid edit (ErrBadEdit) writes
// nothing.
func WriteRequestHead(bb *bytebufferpool.ByteBuffer, r *Request, e *Edits) error {
	method, target := r.Method(), r.Target()
	if e != nil {
		if err := e.check(); err != nil {
			return err
		}
		if e.Method != nil {
			method = e.Method
		}
		if e.Target != nil {
			target = e.Target
		}
	}
	b := append(bb.B, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\n"...)
	bb.B = appendFields(b, &r.Header, e)
	return nil
}

// WriteResponseHead serializes r with the edits applied into bb. An
// invalid edit (ErrBadEdit) writes nothing.
func WriteResponseHead(bb *bytebufferpool.ByteBuffer, r *Response, e *Edits) error {
	status, reason := r.Status(), r.Reason()
	if e != nil {
		if err := e.check(); err != nil {
			return err
		}
		if e.Status != 0 {
			status, reason = e.Status, e.Reason
		}
	}
	b := append(bb.B, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	b = append(b, "\r\n"...)
	bb.B = appendFields(b, &r.Header, e)
	return nil
}

func appendField(b []byte, name string, nameB, value []byte) []byte {
	if nameB != nil {
		b = append(b, nameB...)
	} else {
		b = append(b, name...)
	}
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

func appendFields(b []byte, h *Header, e *Edits) []byte {
	if e == nil {
		e = &Edits{}
	}
	for k := range e.ops {
		e.ops[k].done = false
	}
	wroteCL := false
fields:
	for i := range h.fields {
		if e.StripHopByHop && h.IsHopByHop(i) && !e.Keep.Has(h.fields[i].id) {
			continue // as forwards: the ops that match are applied here
		}
		for k := range e.ops {
			x := &e.ops[k]
			if x.op == opAdd || !x.match(h, i) {
				continue
			}
			if x.op == opSet && !x.done {
				x.done = true
				b = appendField(b, x.name, nil, x.value)
			}
			continue fields
		}
		if h.fields[i].id == HdrExpect && h.kind == kindRequest && !h.version.AtLeast11() {
			// An HTTP/1.0 request's Expect is ignored (RFC 9110 §10.1.1):
			// sent on as HTTP/1.1 it would ask what the client did not.
			continue
		}
		if id := h.fields[i].id; id == HdrContentLength || id == HdrTransferEncoding {
			if e.framing || (h.kind == kindRequest && h.methodID == MethodConnect) {
				continue // replaced by an edit; or CONNECT, which has no content
			}
		}
		if h.fields[i].id == HdrContentLength && h.framing != FramingChunked && h.framing != FramingUntilClose {
			// Forward the length as parsed, once: "5, 5" or "007" reach
			// the next hop as "5" and "7", so it cannot read them
			// differently. A length that did not parse where it does not
			// frame the body (HEAD, 304) is dropped.
			if !wroteCL && h.contentLength >= 0 {
				wroteCL = true
				b = append(b, h.Name(i)...)
				b = append(b, ": "...)
				b = strconv.AppendInt(b, h.contentLength, 10)
				b = append(b, "\r\n"...)
			}
			continue
		}
		b = appendField(b, "", h.Name(i), h.Value(i))
	}
	for k := range e.ops {
		if x := &e.ops[k]; (x.op == opSet && !x.done) || x.op == opAdd {
			b = appendField(b, x.name, nil, x.value)
		}
	}
	return append(b, "\r\n"...)
}
