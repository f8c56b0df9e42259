package engine_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// connectFront is the smallest CONNECT proxy built on the engine, as an
// embedding proxy would use the API: it parses the client's CONNECT with
// the project's parser, opens the tunnel with Engine.Tunnel (through via,
// when set), answers 200 and relays, or relays the parent's refusal.
func connectFront(t *testing.T, e *engine.Engine, via *engine.Parent) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveConnect(e, via, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveConnect(e *engine.Engine, via *engine.Parent, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	buf := make([]byte, 0, 4096)
	var req parser.Request
	for {
		n, _ := c.Read(buf[len(buf):cap(buf)])
		if n == 0 {
			c.Close()
			return
		}
		buf = buf[:len(buf)+n]
		if _, err := req.Parse(buf); err == nil {
			break
		} else if err != parser.ErrNeedMore || len(buf) == cap(buf) {
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.MethodID() != parser.MethodConnect {
		_, _ = c.Write([]byte("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"))
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	up, resp, err := e.Tunnel(ctx, engine.TunnelRequest{Target: string(req.Target()), Via: via})
	cancel()
	switch {
	case errors.Is(err, engine.ErrTunnelRefused):
		// Relay the parent's answer (a 407 with its challenge, say).
		_, _ = c.Write(resp.Head)
		_, _ = c.Write(resp.Body)
		c.Close()
		return
	case err != nil:
		_, _ = c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"))
		c.Close()
		return
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		up.Close()
		return
	}
	_, _ = engine.Relay(context.Background(), c, up, requestTimeout)
}

// curlThrough fetches url with curl through the proxy at proxy, trusting
// caFile, and returns curl's output (the body, or the error) and error.
func curlThrough(t *testing.T, proxy, url, caFile string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--fail", "--noproxy", "",
		"-x", "http://"+proxy, "--cacert", caFile, url).CombinedOutput()
	return string(out), err
}

// TestTunnelCurl: real curl through a CONNECT front built on
// Engine.Tunnel and Relay, directly and through squid with and without
// credentials (squid's 407 reaches curl).
func TestTunnelCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	leakBaseline(t)
	// Relay splices through pipes that Go's net package caches in a
	// sync.Pool and closes by finalizer: let the collector close them
	// before the leak check counts descriptors.
	t.Cleanup(func() {
		for i := 0; i < 3; i++ {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	})
	ngx, pki := tlsNginx(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ngx.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	e := startEngine(t, engine.Config{})
	url := "https://" + ngx.TLSAddr() + "/1m"
	want := string(bench.PatternBody(bench.Size1M))

	direct := connectFront(t, e, nil)
	if out, err := curlThrough(t, direct, url, pki.CAFile); err != nil || out != want {
		t.Fatalf("curl through the direct front: %v, %d bytes: %.200s", err, len(out), out)
	}

	withCreds := connectFront(t, e, &engine.Parent{Addr: sq.Addr(), User: "alice", Password: "s3cret"})
	if out, err := curlThrough(t, withCreds, url, pki.CAFile); err != nil || out != want {
		t.Fatalf("curl through squid with credentials: %v, %d bytes: %.200s", err, len(out), out)
	}

	noCreds := connectFront(t, e, &engine.Parent{Addr: sq.Addr()})
	out, err := curlThrough(t, noCreds, url, pki.CAFile)
	if err == nil || !strings.Contains(out, "407") {
		t.Fatalf("curl through squid without credentials: %v: %s; want the 407 relayed", err, out)
	}
	// Every tunnel was closed by its relay.
	deadline := time.Now().Add(requestTimeout)
	for {
		busy := 0
		for k, s := range e.Stats() {
			if strings.Contains(k, "via=") {
				busy += s.Pool.Busy
			}
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels still open: %v", busy, e.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
