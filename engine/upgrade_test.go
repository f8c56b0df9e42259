package engine

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/parser"
)

// headSink records the final status and the fields of the head it gets.
type headSink struct {
	status int
	fields map[string]string
	body   strings.Builder
}

func (s *headSink) OnHead(r *parser.Response) error {
	s.status = r.Status()
	s.fields = map[string]string{}
	for i := 0; i < r.Len(); i++ {
		s.fields[strings.ToLower(string(r.Name(i)))] = string(r.Value(i))
	}
	return nil
}
func (s *headSink) OnBody(p []byte) error { s.body.Write(p); return nil }
func (s *headSink) OnDone(error)          {}

// echo writes to w what br reads, until br ends. Not io.Copy, whose
// splice keeps a pipe in Go's pool, which the fd count would see.
func echo(w io.Writer, br *bufio.Reader) {
	buf := make([]byte, 512)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// upgradeRequest is a WebSocket-style handshake whose Upgrade and
// Connection go through a proxy's hop-by-hop stripping.
func upgradeRequest(t *testing.T, addr string) *Request {
	ed := &parser.Edits{StripHopByHop: true}
	ed.Keep = ed.Keep.With(parser.HdrUpgrade)
	ed.Add("Connection", []byte("upgrade"))
	return &Request{Upstream: Upstream{Addr: addr}, Edits: ed,
		Head: head(t, "GET /chat HTTP/1.1\r\nHost: o\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\nKeep-Alive: 5\r\n\r\n")}
}

// TestUpgrade: a 101 hands the upstream connection to the caller, with the
// bytes the origin sent right behind the 101's head read first; the
// connection counts as busy until the caller closes it. On netpoll and
// on Go net alike.
func TestUpgrade(t *testing.T) {
	for _, goNet := range []bool{false, true} {
		t.Run(map[bool]string{false: "netpoll", true: "gonet"}[goNet], func(t *testing.T) { testUpgrade(t, goNet) })
	}
}

func testUpgrade(t *testing.T, goNet bool) {
	{
		checkLeaks(t)
		heads := make(chan []string, 1)
		o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
			h, err := readHead(br)
			if err != nil {
				return
			}
			heads <- h
			// The 101 and the new protocol's first bytes in one write.
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello ")
			echo(c, br)
		})
		e := newEngine(t, Config{Shards: 1, GoNetIO: goNet})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s := &headSink{}
		nc, err := e.Upgrade(ctx, upgradeRequest(t, o.addr()), s)
		cancel()
		if err != nil || nc == nil || s.status != 101 || s.fields["upgrade"] != "echo" {
			t.Fatalf("GoNetIO %v: conn %v, err %v, status %d, fields %v", goNet, nc, err, s.status, s.fields)
		}
		h := strings.Join(<-heads, "\n")
		if !strings.Contains(h, "Upgrade: echo") || !strings.Contains(h, "Connection: upgrade") || strings.Contains(h, "Keep-Alive") || strings.Contains(h, "keep-alive") {
			t.Errorf("GoNetIO %v: forwarded head\n%s\nwant Upgrade and Connection: upgrade, not the client's other hop-by-hop fields", goNet, h)
		}
		if st := e.Stats()[o.addr()]; st.Pool.Busy != 1 || st.Pool.Idle != 0 {
			t.Errorf("GoNetIO %v: while upgraded, stats %+v: want it busy", goNet, st.Pool)
		}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(nc, "world"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("hello world"))
		if _, err := io.ReadFull(nc, got); err != nil || string(got) != "hello world" {
			t.Fatalf("GoNetIO %v: read %q, %v; want the bytes behind the 101, then the echo", goNet, got, err)
		}
		nc.Close()
		if st := e.Stats()[o.addr()]; st.Pool.Busy != 0 || st.Pool.Idle != 0 || st.Requests != 1 || len(st.Errors) != 0 {
			t.Errorf("GoNetIO %v: after close, stats %+v", goNet, st)
		}
	}
}

// TestUpgradeRefused: an origin that answers the handshake with a final
// status keeps its connection for the next request, and Upgrade returns
// no connection.
func TestUpgradeRefused(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	s := &headSink{}
	nc, err := e.Upgrade(context.Background(), upgradeRequest(t, o.addr()), s)
	if err != nil || nc != nil || s.status != 200 || s.body.String() != "ok 0" {
		t.Fatalf("conn %v, err %v, status %d, body %q", nc, err, s.status, s.body.String())
	}
	if st, body, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 || body != "ok 1" {
		t.Fatalf("next request: %d %q %v, want the same connection", st, body, err)
	}
	if o.accepted() != 1 {
		t.Fatalf("origin accepted %d connections, want 1", o.accepted())
	}
}

// TestUpgradePinned: a 101 on a pinned session's connection (a WebSocket
// behind NTLM, whose handshake carries the last NTLM message) hands that
// connection over and ends the session: the client connection that
// authenticated it is a tunnel from then on, and a later request with its
// pin key fails with ErrPinnedGone instead of going anywhere else.
func TestUpgradePinned(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := readHead(br); err != nil {
				return
			}
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			echo(c, br)
			return
		}
	})
	e := newEngine(t, Config{Shards: 1})
	req := get(o.addr(), t)
	req.PinKey = 7
	if st, _, err := do(t, e, req); err != nil || st != 401 || !e.Pinned(7) {
		t.Fatalf("NTLM challenge: %d %v, pinned %v", st, err, e.Pinned(7))
	}
	up := upgradeRequest(t, o.addr())
	up.PinKey = 7
	nc, err := e.Upgrade(context.Background(), up, &headSink{})
	if err != nil || nc == nil {
		t.Fatalf("conn %v, err %v; want the pinned connection handed over", nc, err)
	}
	if e.Pinned(7) {
		t.Error("session 7 still pinned after its connection switched protocols")
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(nc, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if _, _, err := do(t, e, req); !errors.Is(err, ErrPinnedGone) {
		t.Fatalf("request on the ended session: %v, want ErrPinnedGone", err)
	}
	if st := e.Stats()[o.addr()]; st.Pool.Busy != 1 || st.Pool.Pinned != 0 {
		t.Errorf("while switched: stats %+v, want it busy, not pinned", st.Pool)
	}
	nc.Close()
	if st := e.Stats()[o.addr()]; st.Pool.Busy != 0 || st.Pool.Pinned != 0 || o.accepted() != 1 {
		t.Errorf("after close: stats %+v, accepted %d", st.Pool, o.accepted())
	}
	e.Unpin(7)
}

// TestTransportWebSocket: httputil.ReverseProxy on Transport relays a
// WebSocket session between a real client and a real server (Python's
// websockets): the 101's Body is the upstream connection, which the
// ReverseProxy splices to its client's.
func TestTransportWebSocket(t *testing.T) {
	checkLeaks(t)
	bench.CollectSplicePipes(t)
	ws := bench.StartWebSocket(t)
	e := newEngine(t, Config{})
	target, _ := url.Parse("http://" + ws.Addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.Transport()
	rp.ErrorLog = log.New(io.Discard, "", 0)
	front := httptest.NewServer(rp)
	defer front.Close()
	for i := 0; i < 2; i++ {
		if out, err := ws.Client("ws" + strings.TrimPrefix(front.URL, "http") + "/chat"); err != nil || strings.TrimSpace(out) != "echoed 3" {
			t.Fatalf("client %d: %v\n%s", i, err, out)
		}
	}
	if st := e.Stats()[ws.Addr()]; st.Requests != 2 || st.Pool.Busy != 0 || len(st.Errors) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestUpgradeTLS: the same over TLS, where the connection handed over is
// the TLS session, with the bytes the origin sent behind its 101 (in the
// same record) read first.
func TestUpgradeTLS(t *testing.T) {
	checkLeaks(t)
	pki := bench.NewPKI(t, "origin.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	o := newOrigin(t, func(_ int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		defer tc.Close()
		br := bufio.NewReader(tc)
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(tc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello ")
		echo(tc, br)
	})
	e := newEngine(t, Config{Shards: 1})
	req := upgradeRequest(t, o.addr())
	req.Upstream.TLS = &TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	s := &headSink{}
	nc, err := e.Upgrade(context.Background(), req, s)
	if err != nil || nc == nil || s.status != 101 {
		t.Fatalf("conn %v, err %v, status %d", nc, err, s.status)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, "world"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("hello world"))
	if _, err := io.ReadFull(nc, got); err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestUpgradeCanceled: requests whose context ends around the 101, through
// Upgrade and through Transport. A 101 comes with the connection or with
// an error, never neither, and no connection is left behind: the pool
// counts none busy once the callers closed what they got.
func TestUpgradeCanceled(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		echo(io.Discard, br)
	})
	e := newEngine(t, Config{Shards: 2})
	tr := e.Transport()
	const n = 150
	for i := 0; i < 2*n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func(d time.Duration) { time.Sleep(d); cancel() }(time.Duration(i%40) * 10 * time.Microsecond)
		if i < n {
			s := &headSink{}
			nc, err := e.Upgrade(ctx, upgradeRequest(t, o.addr()), s)
			if s.status == 101 && nc == nil && err == nil {
				t.Fatalf("request %d: a 101 with neither a connection nor an error", i)
			}
			if nc != nil {
				nc.Close()
			}
			continue
		}
		hr, _ := http.NewRequestWithContext(ctx, "GET", "http://"+o.addr()+"/chat", nil)
		hr.Header.Set("Connection", "Upgrade")
		hr.Header.Set("Upgrade", "echo")
		if resp, err := tr.RoundTrip(hr); err == nil {
			resp.Body.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats()[o.addr()].Pool.Busy != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: connections left busy", e.Stats()[o.addr()].Pool)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTransportUpgradeInterim: a 103 before a 101 reaches the request's
// httptrace hook, as for any request through Transport, and the 101's
// Body is then the upstream connection.
func TestTransportUpgradeInterim(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		echo(c, br)
	})
	e := newEngine(t, Config{Shards: 1})
	var links []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			links = append(links, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		},
	})
	hr, _ := http.NewRequestWithContext(ctx, "GET", "http://"+o.addr()+"/chat", nil)
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", "echo")
	resp, err := e.Transport().RoundTrip(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != 101 || !ok || len(links) != 1 || links[0] != "103 </a>" {
		t.Fatalf("status %d, writable body %v, interim %q", resp.StatusCode, ok, links)
	}
	if _, err := io.WriteString(rw, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(rw, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// TestTransportUpgradeClosesRequestBody: a request that switches
// protocols with a body (an h2c upgrade of a POST, say) has its body
// closed once the 101 came, as the http.RoundTripper contract asks and
// net/http's Transport does; the 101's Body, the upstream connection,
// is the caller's to close.
func TestTransportUpgradeClosesRequestBody(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		if _, err := io.ReadFull(br, make([]byte, 3)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		echo(c, br)
	})
	e := newEngine(t, Config{Shards: 1})
	body := &closeCounter{Reader: strings.NewReader("abc")}
	hr, _ := http.NewRequest("POST", "http://"+o.addr()+"/chat", body)
	hr.ContentLength = 3
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", "echo")
	resp, err := e.Transport().RoundTrip(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 101 || body.closed != 1 {
		t.Fatalf("status %d, request body closed %d times; want 101 and one close", resp.StatusCode, body.closed)
	}
	rw := resp.Body.(io.ReadWriteCloser)
	if _, err := io.WriteString(rw, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(rw, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
}
