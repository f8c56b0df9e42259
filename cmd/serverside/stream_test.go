package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestFullDuplexSuccessKeepsBody: an origin that answers 200 at once and
// then reads the request body (a streaming echo, an upload that reports
// its progress: Go's http.ResponseController.EnableFullDuplex) still gets
// the whole body, and the client the whole response. Only an error
// response ends the body early (RFC 9112 §9.5); a success before the body
// is not the origin refusing it.
func TestFullDuplexSuccessKeepsBody(t *testing.T) {
	headOut := make(chan struct{}, 1)
	got := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("full duplex: %v", err)
		}
		w.WriteHeader(200)
		_ = rc.Flush()
		headOut <- struct{}{}
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				all.Write(buf[:n])
				_, _ = w.Write(buf[:n])
				_ = rc.Flush()
			}
			if err != nil {
				break
			}
		}
		got <- all.String()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	px := startProxyConfig(t, engine.Config{ResponseHeaderTimeout: 3 * time.Second}, "http://"+ln.Addr().String())
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-headOut
	// Let the origin's head reach the proxy before the body does.
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(c, "6\r\nhello \r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(c, "5\r\nworld\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello world" || err != nil {
		t.Fatalf("status %d body %q err %v", resp.StatusCode, body, err)
	}
	select {
	case s := <-got:
		if s != "hello world" {
			t.Fatalf("origin got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("origin never finished reading the body")
	}
}

// TestEventStreamLockstep: a server-sent events stream reaches curl event
// by event. The origin sends each event only once curl has printed the one
// before, so a proxy that held events back (until a buffer filled or the
// response ended) would never deliver the first: the test would time out.
// Over HTTP/1.0 (curl -0) the stream comes close-delimited, without chunk
// framing.
func TestEventStreamLockstep(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	const events = 5
	ack := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < events; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			if i == events-1 {
				return
			}
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	px := startProxy(t, srv.URL)
	for _, args := range [][]string{{"-N"}, {"-N", "-0"}} {
		cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, append(args, "http://"+px+"/events")...)...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		var got []string
		for len(got) < events {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			got = append(got, line)
			if len(got) < events {
				ack <- struct{}{}
			}
		}
		rest, _ := io.ReadAll(br)
		werr := cmd.Wait()
		want := []string{"data: 0", "data: 1", "data: 2", "data: 3", "data: 4"}
		if strings.Join(got, "|") != strings.Join(want, "|") || len(bytes.TrimSpace(rest)) != 0 || werr != nil {
			t.Fatalf("curl %v: events %q, then %q, err %v %s", args, got, rest, werr, stderr.String())
		}
	}
}

// TestStalledBodyIsCut: an origin that sends its head and part of its
// body, then nothing, is cut at the response-header timeout (which bounds
// each wait for body bytes), and the client can tell the response is
// incomplete: a Content-Length body is short and a chunked one lacks its
// last chunk (curl exit 18); a close-delimited one (HTTP/1.0 client) ends
// in a reset (curl exit 56), never in a close that would pass for its end.
func TestStalledBodyIsCut(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	release := make(chan struct{})
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		head, err := bench.ReadHead(br)
		if err != nil {
			return
		}
		if strings.Contains(head[0], "/length") {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
		} else {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
		}
		<-release
	})
	t.Cleanup(func() { close(release) })
	px := startProxyConfig(t, engine.Config{ResponseHeaderTimeout: 300 * time.Millisecond}, "http://"+o.Addr())
	for _, tc := range []struct {
		args []string
		exit int
	}{
		{[]string{"http://" + px + "/length"}, 18},
		{[]string{"http://" + px + "/chunked"}, 18},
		{[]string{"-0", "http://" + px + "/chunked"}, 56},
	} {
		cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, tc.args...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.exit || stdout.String() != "part" {
			t.Fatalf("curl %v: body %q, err %v (want exit %d) %s", tc.args, stdout.String(), err, tc.exit, stderr.String())
		}
	}
}
