package shard

import (
	"io"
	"strings"
	"testing"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
)

func TestReplayable(t *testing.T) {
	getBody := func() (io.Reader, error) { return strings.NewReader("x"), nil }
	cases := []struct {
		method  string
		body    bool
		getBody bool
		e       conn.Error
		want    bool
		strict  bool
	}{
		{"GET", false, false, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},
		{"GET", false, false, conn.Error{Reused: false, Written: true, Delivered: true}, false, false},                // fresh connection: a real failure
		{"GET", false, false, conn.Error{Reused: true, Responded: true}, false, false},                                // the response had started
		{"POST", false, false, conn.Error{Reused: true, Written: false}, true, false},                                 // nothing sent
		{"POST", true, false, conn.Error{Reused: true, Written: true, Delivered: true, BodyRead: true}, false, false}, // body cannot be replayed
		{"POST", true, false, conn.Error{Reused: true, Written: true, Delivered: true}, false, false},                 // body unread, but non-idempotent and written
		{"POST", true, false, conn.Error{Reused: true}, true, false},                                                  // nothing sent, body unread
		{"POST", true, true, conn.Error{Reused: true, Written: true, Delivered: true}, false, false},                  // non-idempotent, bytes written
		{"POST", true, true, conn.Error{Reused: true, Written: false}, true, false},                                   // nothing sent, body replayable
		{"PUT", true, false, conn.Error{Reused: true, Written: true, Delivered: true, BodyRead: true}, false, false},  // no GetBody, body read
		{"PUT", true, false, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},                   // body unread (waiting for 100 Continue): sent as it is
		{"PUT", true, true, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},                    // idempotent, replayable
		{"DELETE", false, false, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},               // idempotent, no body
		{"PATCH", false, false, conn.Error{Reused: true, Written: true, Delivered: true}, false, false},               // not idempotent
		{"OPTIONS", false, false, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},              // idempotent
		{"GET", false, false, conn.Error{Reused: true, Written: true, Delivered: true}, true, false},                  // repeated for the pinned case below
		// Written, but the upstream closed before any byte reached it.
		{"POST", true, true, conn.Error{Reused: true, Written: true}, true, false},
		{"POST", true, true, conn.Error{Reused: true, Written: true}, false, true},                   // StrictResend
		{"POST", false, false, conn.Error{Reused: true, Written: true}, true, false},                 // no body
		{"POST", true, false, conn.Error{Reused: true, Written: true, BodyRead: true}, false, false}, // the body is gone all the same
		{"POST", true, false, conn.Error{Reused: true, Written: true}, true, false},                  // body unread (waiting for 100 Continue)
		{"PATCH", false, false, conn.Error{Reused: true, Written: true}, false, true},
	}
	for i, tc := range cases {
		var h parser.Request
		if _, err := h.Parse([]byte(tc.method + " / HTTP/1.1\r\nHost: o\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		task := &Task{Exchange: conn.Exchange{Head: &h}}
		if tc.body {
			task.Exchange.Body, task.Exchange.ContentLength = strings.NewReader("x"), 1
		}
		if tc.getBody {
			task.GetBody = getBody
		}
		if got := task.replayable(&tc.e, tc.strict); got != tc.want {
			t.Errorf("case %d %s body=%v getBody=%v %+v: %v, want %v", i, tc.method, tc.body, tc.getBody, tc.e, got, tc.want)
		}
		task.pinned = true
		if task.replayable(&tc.e, tc.strict) {
			t.Errorf("case %d: a pinned request is replayable", i)
		}
	}
}

// TestReplayableIdempotencyKey: a POST that carries an Idempotency-Key
// (or X-Idempotency-Key) field is sent again as an idempotent request
// would be, even once the upstream may have received it; its body must
// still be had again.
func TestReplayableIdempotencyKey(t *testing.T) {
	getBody := func() (io.Reader, error) { return strings.NewReader("x"), nil }
	received := conn.Error{Reused: true, Written: true, Delivered: true}
	for _, tc := range []struct {
		field   string
		getBody bool
		want    bool
	}{
		{"", true, false},
		{"Idempotency-Key: 8e03978e\r\n", true, true},
		{"x-idempotency-key: 8e03978e\r\n", true, true},
		{"Idempotency-Keys: 8e03978e\r\n", true, false},
		{"Idempotency-Key: 8e03978e\r\n", false, false}, // the body was read and is gone
	} {
		var h parser.Request
		if _, err := h.Parse([]byte("POST / HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\n" + tc.field + "\r\n")); err != nil {
			t.Fatal(err)
		}
		task := &Task{Exchange: conn.Exchange{Head: &h, Body: strings.NewReader("x"), ContentLength: 1}}
		if tc.getBody {
			task.GetBody = getBody
		}
		e := received
		e.BodyRead = true
		if got := task.replayable(&e, true); got != tc.want {
			t.Errorf("%q getBody=%v: %v, want %v", tc.field, tc.getBody, got, tc.want)
		}
	}
}

// TestReplayableIdempotencyKeyForwarded: the field counts only when the
// upstream gets it. A key the forwarded head drops (a client naming it in
// Connection, which makes it hop-by-hop, or an edit removing it) asserts
// nothing to the upstream, and the POST it would receive twice is not sent
// again; a key an edit adds does.
func TestReplayableIdempotencyKeyForwarded(t *testing.T) {
	getBody := func() (io.Reader, error) { return strings.NewReader("x"), nil }
	removed := &parser.Edits{}
	removed.Remove("Idempotency-Key")
	added := &parser.Edits{StripHopByHop: true}
	added.Add("Idempotency-Key", []byte("k2"))
	for i, tc := range []struct {
		fields string
		edits  *parser.Edits
		want   bool
	}{
		{"Connection: Idempotency-Key\r\nIdempotency-Key: k\r\n", &parser.Edits{StripHopByHop: true}, false},
		{"Connection: x-idempotency-key\r\nX-Idempotency-Key: k\r\n", &parser.Edits{StripHopByHop: true}, false},
		{"Connection: Idempotency-Key\r\nIdempotency-Key: k\r\n", nil, true}, // forwarded as it is
		{"Idempotency-Key: k\r\n", &parser.Edits{StripHopByHop: true}, true},
		{"Idempotency-Key: k\r\n", removed, false},
		{"Connection: Idempotency-Key\r\nIdempotency-Key: k\r\n", added, true},
		{"", added, true},
	} {
		var h parser.Request
		if _, err := h.Parse([]byte("POST / HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\n" + tc.fields + "\r\n")); err != nil {
			t.Fatal(err)
		}
		task := &Task{Exchange: conn.Exchange{Head: &h, Edits: tc.edits, Body: strings.NewReader("x"), ContentLength: 1}, GetBody: getBody}
		e := conn.Error{Reused: true, Written: true, Delivered: true, BodyRead: true}
		if got := task.replayable(&e, false); got != tc.want {
			t.Errorf("case %d %q: %v, want %v", i, tc.fields, got, tc.want)
		}
	}
}

// TestReplayableEditedMethod: the resend rules follow the method sent
// (Edits.Method), not the one parsed: a GET sent as POST is not sent again
// once received, a POST sent as PUT is.
func TestReplayableEditedMethod(t *testing.T) {
	received := conn.Error{Reused: true, Written: true, Delivered: true}
	for _, tc := range []struct {
		parsed, sent string
		want         bool
	}{
		{"GET", "POST", false},
		{"POST", "PUT", true},
		{"GET", "GET", true},
	} {
		var h parser.Request
		if _, err := h.Parse([]byte(tc.parsed + " / HTTP/1.1\r\nHost: o\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		task := &Task{Exchange: conn.Exchange{Head: &h, Edits: &parser.Edits{Method: []byte(tc.sent)}}}
		e := received
		if got := task.replayable(&e, false); got != tc.want {
			t.Errorf("%s sent as %s: replayable %v, want %v", tc.parsed, tc.sent, got, tc.want)
		}
	}
}
