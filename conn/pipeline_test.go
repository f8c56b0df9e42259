package conn

import (
	"strings"
	"testing"

	"github.com/serverside-go/serverside/parser"
)

// TestPipelinable: only GETs and HEADs as sent, without a body, that do
// not ask to close or to switch protocols, may be pipelined.
func TestPipelinable(t *testing.T) {
	for _, c := range []struct {
		name, head string
		body       string
		method     string // Edits.Method, when set
		close      bool   // Edits sets Connection: close
		want       bool
	}{
		{name: "GET", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: true},
		{name: "HEAD", head: "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", want: true},
		{name: "GET with an empty Content-Length", head: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", want: true},
		{name: "POST", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
		{name: "OPTIONS", head: "OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "PUT", head: "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", body: "x"},
		{name: "GET with a body", head: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", body: "x"},
		{name: "GET asking to close", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"},
		{name: "GET whose edits close", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", close: true},
		{name: "GET asking to upgrade", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "GET sent as POST", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", method: "POST"},
		{name: "POST sent as GET", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", method: "GET", want: true},
	} {
		h := new(parser.Request)
		if _, err := h.Parse([]byte(c.head)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ex := &Exchange{Head: h}
		if c.body != "" {
			ex.Body, ex.ContentLength = strings.NewReader(c.body), int64(len(c.body))
		}
		if c.method != "" || c.close {
			ex.Edits = new(parser.Edits)
			if c.method != "" {
				ex.Edits.Method = []byte(c.method)
			}
			if c.close {
				ex.Edits.Set("Connection", []byte("close"))
			}
		}
		if got := Pipelinable(ex); got != c.want {
			t.Errorf("%s: Pipelinable %v, want %v", c.name, got, c.want)
		}
	}
}
