package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestReverseHTTPSOriginHandshakeTimeout: an https origin whose listener
// takes connections but never answers the ClientHello (a socket nobody
// accepts from: the kernel completes the TCP handshake) is a timeout, as a
// connect timeout is: 504, naming the TLS handshake.
func TestReverseHTTPSOriginHandshakeTimeout(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	cfg := engine.Config{TLSHandshakeTimeout: 200 * time.Millisecond}
	if err := withPeersTLS(&cfg, []string{"https://" + ln.Addr().String() + "?sni=origin.test"}, nil, "", tlsSettings{}); err != nil {
		t.Fatal(err)
	}
	px := startProxyClient(t, cfg, clientConfig{})
	out, _, _ := curlStatus(t, "-w", "%{http_code}", "http://"+px+"/")
	if !strings.HasPrefix(out, "upstream timed out: upstream TLS: ") || !strings.Contains(out, "TLS handshake timeout") || !strings.HasSuffix(out, "\n504") {
		t.Fatalf("%q, want a 504 naming the TLS handshake timeout", out)
	}
}
