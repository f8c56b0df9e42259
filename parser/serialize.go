package parser

import (
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

	ops []edit
}

// Reset clears the edits for the next message, keeping capacity.
func (e *Edits) Reset() { *e = Edits{ops: e.ops[:0]} }

// Remove drops every field named name.
func (e *Edits) Remove(name string) { e.push(opRemove, name, nil) }

// Set replaces the first field named name with value, in its place, and
// drops the others; if there is none, the field is added at the end.
func (e *Edits) Set(name string, value []byte) { e.push(opSet, name, value) }

// Add appends a field at the end, after the existing fields.
func (e *Edits) Add(name string, value []byte) { e.push(opAdd, name, value) }

func (e *Edits) push(op editOp, name string, value []byte) {
	e.ops = append(e.ops, edit{op: op, id: LookupHeaderID([]byte(name)), name: name, value: value})
}

// match reports whether edit x names field i of h.
func (x *edit) match(h *Header, i int) bool {
	if x.id != HdrOther || h.fields[i].id != HdrOther {
		return x.id == h.fields[i].id
	}
	return equalFoldBytes(h.Name(i), []byte(x.name))
}

// WriteRequestHead serializes r with the edits applied into bb, from the
// parsed views, without parsing again.
func WriteRequestHead(bb *bytebufferpool.ByteBuffer, r *Request, e *Edits) {
	method, target := r.Method(), r.Target()
	if e != nil && e.Method != nil {
		method = e.Method
	}
	if e != nil && e.Target != nil {
		target = e.Target
	}
	b := append(bb.B, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\n"...)
	bb.B = appendFields(b, &r.Header, e)
}

// WriteResponseHead serializes r with the edits applied into bb.
func WriteResponseHead(bb *bytebufferpool.ByteBuffer, r *Response, e *Edits) {
	status, reason := r.Status(), r.Reason()
	if e != nil && e.Status != 0 {
		status, reason = e.Status, e.Reason
	}
	b := append(bb.B, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	b = append(b, "\r\n"...)
	bb.B = appendFields(b, &r.Header, e)
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
			continue
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
		if h.fields[i].id == HdrContentLength && h.framing == FramingLength {
			// Forward the length as parsed, once: "5, 5" or "007" reach
			// the next hop as "5" and "7", so it cannot read them differently.
			if !wroteCL {
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
