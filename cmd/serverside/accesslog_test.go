package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// startLoggedProxy serves a reverse proxy to origin with its access log
// in logs.
func startLoggedProxy(t *testing.T, logs *syncBuffer, origin string) (*proxy, string) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(logs, nil))
	p, err := newProxy(logger, []string{origin}, engine.Config{Shards: 2, Logger: logger}, clientConfig{AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	return p, serveProxy(t, p)
}

// accessLine waits for the access log line of target and returns it.
func accessLine(t *testing.T, logs *syncBuffer, target string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^.* msg=access .* target=` + regexp.QuoteMeta(target) + ` .*$`)
	var line string
	waitFor(t, "the access log line of "+target, func() bool {
		line = re.FindString(logs.String())
		return line != ""
	})
	return line
}

// A response the origin breaks off after its head (a Content-Length of
// 100, 10 bytes, then the close) is logged as cut by the upstream, with
// the error; a whole one has no such mark.
func TestAccessLogCutByUpstream(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/whole" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
	})
	var logs syncBuffer
	_, px := startLoggedProxy(t, &logs, "http://"+o.Addr())
	for _, path := range []string{"/cut", "/whole"} {
		c, br := dialClient(t, px)
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.Close()
	}
	cut := accessLine(t, &logs, "/cut")
	t.Log(cut)
	if !strings.Contains(cut, " status=200 bytes=10 ") || !strings.Contains(cut, " cut=upstream ") || !strings.Contains(cut, " err=") {
		t.Errorf("the cut response's line: %s", cut)
	}
	whole := accessLine(t, &logs, "/whole")
	if !strings.Contains(whole, " status=200 bytes=10 ") || strings.Contains(whole, "cut=") || strings.Contains(whole, "err=") {
		t.Errorf("the whole response's line: %s", whole)
	}
}

// A client that goes away in the middle of a large download from a real
// nginx is logged as cut by the client.
func TestAccessLogCutByClient(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	writeRandomFile(t, filepath.Join(ng.Dir(), "html", "files", "big"), 64<<20)
	var logs syncBuffer
	_, px := startLoggedProxy(t, &logs, "http://"+ng.Addr())
	resetMidDownload(t, px, "/files/big", 1<<20) // gone with a reset: the proxy's next writes fail
	line := accessLine(t, &logs, "/files/big")
	t.Log(line)
	if !strings.Contains(line, " status=200 ") || !strings.Contains(line, " cut=client ") || !strings.Contains(line, " err=") {
		t.Errorf("the access log line: %s", line)
	}
	if strings.Contains(line, fmt.Sprintf(" bytes=%d ", 64<<20)) {
		t.Errorf("the whole body logged as sent: %s", line)
	}
}

// An upload cut off by the shutdown's deadline (its connection detached
// for the large body, then closed) gets no response: its access line says
// so (status 0, cut by the shutdown), not a 400 nobody was sent.
func TestAccessLogUploadCutByShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := newProxy(logger, []string{"http://" + ng.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	c, _ := dialClient(t, px)
	if _, err := fmt.Fprintf(c, "PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 3<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload's connection detached", func() bool {
		n := 0
		p.each(func(cc *clientConn) {
			if cc.detached.Load() {
				n++
			}
		})
		return n == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	got, _ := io.ReadAll(c)
	line := accessLine(t, &logs, "/echo")
	t.Log(line)
	if strings.HasPrefix(string(got), "HTTP/1.1 400") {
		t.Fatalf("the client got a 400 (%q); the test assumes none is sent", got)
	}
	if !strings.Contains(line, " status=0 bytes=0 ") || !strings.Contains(line, " cut=shutdown ") {
		t.Errorf("the access log line: %s (the client read %q)", line, got)
	}
}

// A CONNECT tunnel and a WebSocket still relaying at the shutdown's
// deadline are closed by it, and their access lines say so (end=shutdown),
// as cut=shutdown does for a response; they named the relay's read of a
// connection the shutdown had closed.
func TestAccessLogTunnelCutByShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	ws := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(io.Discard, br) // until the proxy closes
	})
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 2, Logger: logger},
		clientConfig{AccessLog: true, ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	_, _, resp, _ := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	wsTarget := "http://" + ws.Addr() + "/chat"
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "GET "+wsTarget+" HTTP/1.1\r\nHost: "+ws.Addr()+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("WebSocket handshake: %v, %v", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = p.Shutdown(ctx)
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	for _, target := range []string{ng.Addr(), wsTarget} {
		if line := accessLine(t, &logs, target); !strings.HasSuffix(line, " end=shutdown") {
			t.Errorf("the access log line of %s: %s", target, line)
		}
	}
}

// An upload still on netpoll (a small body the proxy reads whole first, a
// larger one it streams) that the shutdown's deadline cuts is not the
// client's fault: it gets no "400 request body incomplete", but the 503
// a request still waiting for its origin gets, or nothing, and the access
// line says which.
func TestAccessLogNetpollUploadCutByShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	for _, size := range []int{100, 100000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			var logs syncBuffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			p, err := newProxy(logger, []string{"http://" + ng.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{AccessLog: true})
			if err != nil {
				t.Fatal(err)
			}
			px, served := startServe(t, p)
			c, _ := dialClient(t, px)
			if _, err := fmt.Fprintf(c, "PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n0123456789", size); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the upload's request in flight", func() bool {
				n := 0
				p.each(func(cc *clientConn) {
					if cc.state.Load() == stBusy && !cc.detached.Load() {
						n++
					}
				})
				return n == 1
			})
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_ = p.Shutdown(ctx)
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
			got, _ := io.ReadAll(c)
			line := accessLine(t, &logs, "/echo")
			t.Log(line)
			if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
				t.Fatalf("the client got %q; want a 503 or nothing", got)
			}
			if !strings.Contains(line, " status=503 ") && !(strings.Contains(line, " status=0 ") && strings.Contains(line, " cut=shutdown ")) {
				t.Errorf("the access log line: %s (the client read %q)", line, got)
			}
		})
	}
}
