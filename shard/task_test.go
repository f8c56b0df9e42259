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
	}{
		{"GET", false, false, conn.Error{Reused: true, Written: true}, true},
		{"GET", false, false, conn.Error{Reused: false, Written: true}, false},                // fresh connection: a real failure
		{"GET", false, false, conn.Error{Reused: true, Responded: true}, false},               // the response had started
		{"POST", false, false, conn.Error{Reused: true, Written: false}, true},                // nothing sent
		{"POST", true, false, conn.Error{Reused: true, Written: true, BodyRead: true}, false}, // body cannot be replayed
		{"POST", true, false, conn.Error{Reused: true, Written: true}, false},                 // body unread, but non-idempotent and written
		{"POST", true, false, conn.Error{Reused: true}, true},                                 // nothing sent, body unread
		{"POST", true, true, conn.Error{Reused: true, Written: true}, false},                  // non-idempotent, bytes written
		{"POST", true, true, conn.Error{Reused: true, Written: false}, true},                  // nothing sent, body replayable
		{"PUT", true, false, conn.Error{Reused: true, Written: true, BodyRead: true}, false},  // no GetBody, body read
		{"PUT", true, false, conn.Error{Reused: true, Written: true}, true},                   // body unread (waiting for 100 Continue): sent as it is
		{"PUT", true, true, conn.Error{Reused: true, Written: true}, true},                    // idempotent, replayable
		{"DELETE", false, false, conn.Error{Reused: true, Written: true}, true},               // idempotent, no body
		{"PATCH", false, false, conn.Error{Reused: true, Written: true}, false},               // not idempotent
		{"OPTIONS", false, false, conn.Error{Reused: true, Written: true}, true},              // idempotent
		{"GET", false, false, conn.Error{Reused: true, Written: true}, true},                  // repeated for the pinned case below
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
		if got := task.replayable(&tc.e); got != tc.want {
			t.Errorf("case %d %s body=%v getBody=%v %+v: %v, want %v", i, tc.method, tc.body, tc.getBody, tc.e, got, tc.want)
		}
		task.pinned = true
		if task.replayable(&tc.e) {
			t.Errorf("case %d: a pinned request is replayable", i)
		}
	}
}
