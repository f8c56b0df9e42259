package engine

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/serverside-go/serverside/poolset"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestProfileCacheBounded: a caller making a new *TLS per request does
// not grow the engine's cache without end, and is told so once.
func TestProfileCacheBounded(t *testing.T) {
	var logs lockedBuf
	e := newEngine(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := 0; i < 2*maxProfiles+10; i++ {
		if p := e.profile(&TLS{}); p.err != nil || p.id != "v=sys" {
			t.Fatalf("profile %d: %+v", i, p)
		}
	}
	n := 0
	e.tls.profiles.Range(func(any, any) bool { n++; return true })
	if n > maxProfiles {
		t.Fatalf("%d cached profiles, want at most %d", n, maxProfiles)
	}
	if c := strings.Count(logs.b.String(), "distinct *engine.TLS"); c != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", c, logs.b.String())
	}
}

// TestDialerCacheBounded: a forward proxy fetching from ever more https
// hosts makes a dialer (TLS configuration, session cache) for each; the
// engine keeps at most maxDialers of them, and each request still gets a
// dialer for its own server name.
func TestDialerCacheBounded(t *testing.T) {
	e := newEngine(t, Config{})
	cfg := &TLS{}
	for i := 0; i < 2*maxDialers+10; i++ {
		host := "h" + strconv.Itoa(i) + ".test"
		req := &Request{Upstream: Upstream{Addr: "127.0.0.1:443", TLS: cfg},
			Head: head(t, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")}
		key := poolset.Key{Addr: req.Addr}
		d, err := e.dialerFor(req, &key)
		if err != nil {
			t.Fatal(err)
		}
		if d.cfg.ServerName != host || key.TLS != "sni="+host+";v=sys" {
			t.Fatalf("request %d: server name %q, key %q", i, d.cfg.ServerName, key.TLS)
		}
	}
	n := 0
	e.tls.upstreams.Range(func(any, any) bool { n++; return true })
	if n > maxDialers {
		t.Fatalf("%d cached dialers, want at most %d", n, maxDialers)
	}
}

// TestTransportManyHosts: Transport used for https URLs of ever more hosts
// (a forward proxy built on it) uses the one *TLS it was given for all of
// them: it makes no *TLS per host, so neither the profile cache nor the
// warning about callers that make a new *TLS per request are set off.
func TestTransportManyHosts(t *testing.T) {
	var logs lockedBuf
	e := newEngine(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close() // nothing listens there: each request fails at the dial
	client := &http.Client{Transport: e.Transport()}
	for i := 0; i < maxProfiles+10; i++ {
		url := "https://127.0." + strconv.Itoa(1+i/250) + "." + strconv.Itoa(1+i%250) + ":" + port + "/"
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s: %s, want a dial error", url, resp.Status)
		}
	}
	n := 0
	e.tls.profiles.Range(func(any, any) bool { n++; return true })
	if n != 1 || strings.Contains(logs.b.String(), "distinct *engine.TLS") {
		t.Fatalf("%d profiles, want 1; log:\n%s", n, logs.b.String())
	}
}
