package main

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestForwardNextAddress: a forward target whose name has several
// addresses is tried address by address while connects fail, as curl and
// Squid do, for requests and CONNECT alike. The name's first address
// refuses (nothing listens on 127.0.0.2), its second is nginx's: the
// client gets nginx's answer, not a 502 for the first address. A name
// whose every address refuses gets the 502 of the last, and nginx sees
// exactly the two requests that reached it.
func TestForwardNextAddress(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t) // the CONNECT's relay
	ng := bench.StartNginx(t, bench.NginxOptions{})
	_, port, err := net.SplitHostPort(ng.Addr())
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(_ context.Context, _, host string) ([]netip.Addr, error) {
		switch host {
		case "multi.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
		case "dead.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	px := startProxyClient(t, engine.Config{}, clientConfig{Lookup: lookup, ConnectPorts: portSet{any: true}})

	if body, _ := curl(t, "-x", "http://"+px, "http://multi.test:"+port+"/small"); body != "Hello, World!" {
		t.Errorf("request: body %q", body)
	}
	if body, _ := curl(t, "-p", "-x", "http://"+px, "http://multi.test:"+port+"/small"); body != "Hello, World!" {
		t.Errorf("CONNECT: body %q", body)
	}
	status, body := rawGet(t, px, "GET http://dead.test:"+port+"/small HTTP/1.1\r\nHost: dead.test\r\n\r\n")
	if status != 502 || !strings.Contains(body, "127.0.0.3:"+port) || !strings.Contains(body, "connection refused") {
		t.Errorf("every address refuses: %d %q, want 502 naming 127.0.0.3:%s", status, body, port)
	}
	status, body = rawGet(t, px, "CONNECT dead.test:"+port+" HTTP/1.1\r\nHost: dead.test:"+port+"\r\n\r\n")
	if status != 502 || !strings.Contains(body, "127.0.0.3:"+port) {
		t.Errorf("CONNECT, every address refuses: %d %q, want 502 naming 127.0.0.3:%s", status, body, port)
	}
	if n := len(ng.WaitRequests(2, 5e9)); n != 2 {
		t.Errorf("nginx logged %d requests, want 2", n)
	}
}
