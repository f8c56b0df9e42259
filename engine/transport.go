package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"github.com/serverside-go/serverside/parser"
)

// Transport returns an http.RoundTripper that sends requests through the
// engine: the http.Request is serialized into a head, parsed with the
// engine's parser (so it is held to the same rules as a proxied request)
// and sent to URL.Host, a resolved ip:port (port 80 assumed when absent;
// 443 for https; a host name is resolved at each dial, as Upstream.Addr
// says). https:// URLs are verified against the
// system roots, with the URL's host as the server name; TransportTLS takes
// other TLS settings. The response body streams with backpressure; closing
// it early closes the connection. Interim (1xx) responses go to the
// request's httptrace hooks (Got100Continue, Got1xxResponse), as with
// net/http's Transport: that is how httputil.ReverseProxy forwards them.
// A request that asks to switch protocols (Upgrade, with "upgrade" in
// Connection: a WebSocket handshake) goes through Engine.Upgrade: after a
// 101 the Response's Body is the upstream connection, an
// io.ReadWriteCloser, as net/http gives it, which is what
// httputil.ReverseProxy relays. Not supported: trailers (Request.Trailer
// is not sent; a chunked response's trailer fields are dropped, as RFC
// 9112 §7.1.2 allows, and Response.Trailer stays empty; so "trailers" is
// taken out of a TE field, which would promise the origin otherwise).
// CONNECT: a 2xx ends the exchange and closes the connection; open
// tunnels with Engine.Tunnel.
//
// Where it differs from net/http's Transport, as a proxy's upstream half
// should: it adds no header of its own but Host, Content-Length (also
// "Content-Length: 0" for a POST, PUT or PATCH without a body, as
// net/http sends it), Transfer-Encoding and, for Request.Close,
// "Connection: close" (else, without a Connection field in Header, the
// engine's "Connection: keep-alive"): no User-Agent and no
// Accept-Encoding, so it never asks for gzip and never decompresses
// (Response.Uncompressed is false; a body the caller asked compressed
// comes as the origin sent it, with its Content-Encoding and
// Content-Length, as net/http gives it then). Header fields go out as
// http.Header.Write writes them: a field whose name is not a token is
// dropped and line breaks in a value become spaces, where net/http
// refuses the request. A byte of the target beyond ASCII (a raw query)
// goes out percent-encoded, where net/http sends it as it is. A response
// head over the parser's limits (64 KiB, 100 fields; net/http takes up to
// 10 MB) fails the round trip with a *conn.Error of phase protocol.
// Response.TLS is not set. A
// request body longer than its ContentLength is cut there, where net/http
// fails the request (a shorter one fails it with both). As with
// net/http, a response body read cut short by the request's context
// returns the context's own error (context.Canceled,
// context.DeadlineExceeded), and one the upstream cut short an error that
// errors.Is matches with io.ErrUnexpectedEOF.
func (e *Engine) Transport() http.RoundTripper { return transport{e: e, tls: e.defaultTLS} }

// TransportTLS is Transport with cfg for https:// URLs; an empty
// cfg.ServerName takes the URL's host, not the Host field.
func (e *Engine) TransportTLS(cfg *TLS) http.RoundTripper { return transport{e: e, tls: cfg} }

type transport struct {
	e   *Engine
	tls *TLS
}

var headerExclude = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Te": true}

// headerExcludeUA is headerExclude for a request whose User-Agent is set
// to "", which net/http takes for "send none" (httputil.ReverseProxy sets
// it so when the client sent none).
var headerExcludeUA = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Te": true, "User-Agent": true}

// RoundTrip implements http.RoundTripper.
func (t transport) RoundTrip(hr *http.Request) (*http.Response, error) {
	closeBody := func() {
		if hr.Body != nil {
			_ = hr.Body.Close()
		}
	}
	if hr.URL == nil || hr.URL.Scheme != "http" && hr.URL.Scheme != "https" {
		closeBody()
		return nil, errors.New("engine: transport supports http:// and https:// URLs only")
	}
	if hr.URL.Host == "" {
		// Dialing ":80" would reach this machine, whatever the caller
		// meant; net/http refuses the request too.
		closeBody()
		return nil, errors.New("engine: transport: no host in the request URL")
	}
	port := "80"
	var tlsCfg *TLS
	if hr.URL.Scheme == "https" {
		port, tlsCfg = "443", t.tls
	}
	addr := hr.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), port)
	}
	host := hr.Host
	if host == "" {
		host = hr.URL.Host
	}
	var body io.Reader
	cl := hr.ContentLength
	if hr.Body != nil && hr.Body != http.NoBody {
		body = hr.Body
		if cl == 0 {
			cl = -1 // net/http: 0 with a body means unknown
		}
	} else {
		cl = 0
	}

	var b strings.Builder
	method := hr.Method
	if method == "" {
		method = http.MethodGet
	}
	b.WriteString(method)
	b.WriteByte(' ')
	writeTarget(&b, hr.URL.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(host)
	b.WriteString("\r\n")
	if hr.Close && hr.Header.Get("Connection") == "" {
		b.WriteString("Connection: close\r\n")
	}
	exclude := headerExclude
	if ua, ok := hr.Header["User-Agent"]; ok && len(ua) == 1 && ua[0] == "" {
		exclude = headerExcludeUA
	}
	if err := hr.Header.WriteSubset(&b, exclude); err != nil {
		closeBody()
		return nil, fmt.Errorf("engine: transport: %w", err)
	}
	if te := teWithoutTrailers(hr.Header.Values("Te")); te != "" {
		b.WriteString("TE: " + te + "\r\n")
	}
	switch {
	case body == nil:
		// RFC 9110 §8.6: a user agent SHOULD send Content-Length when the
		// method defines a meaning for content, even for none; some
		// origins answer 411 without it. net/http sends it for these
		// methods, and httputil.ReverseProxy hands a client's
		// "Content-Length: 0" on as a nil Body.
		if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
			b.WriteString("Content-Length: 0\r\n")
		}
	case cl >= 0:
		b.WriteString("Content-Length: " + strconv.FormatInt(cl, 10) + "\r\n")
	default:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	}
	b.WriteString("\r\n")
	head := new(parser.Request)
	if _, err := head.Parse([]byte(b.String())); err != nil {
		closeBody()
		return nil, fmt.Errorf("engine: transport: request head: %w", err)
	}
	req := &Request{Upstream: Upstream{Addr: addr, TLS: tlsCfg}, Head: head, Body: body, ContentLength: cl}
	if tlsCfg != nil {
		req.tlsHost = hr.URL.Hostname()
	}
	if hr.GetBody != nil {
		req.GetBody = func() (io.Reader, error) { return hr.GetBody() }
	}
	var resp *Response
	var err error
	if head.Upgrade() {
		resp, err = t.e.doUpgrade(hr.Context(), req, interimTrace(hr.Context()))
	} else {
		resp, err = t.e.do(hr.Context(), req, interimTrace(hr.Context()))
	}
	if err != nil {
		closeBody()
		return nil, err
	}
	if resp.Status == 101 {
		// The request is over, its body sent: the Body returned is the
		// upstream connection, which does not close the request body.
		closeBody()
		return &http.Response{
			Status:     statusText(101, resp.Reason),
			StatusCode: 101,
			Proto:      resp.Version.String(),
			ProtoMajor: int(resp.Version.Major),
			ProtoMinor: int(resp.Version.Minor),
			Header:     resp.Header,
			Body:       resp.Body, // the upstream connection
			Request:    hr,
		}, nil
	}
	// As net/http's client gives them: the transfer codings out of Header
	// (the body is decoded) and into TransferEncoding, outermost first
	// (the reverse of the field's order: "gzip, chunked" is chunked
	// over gzip), and whether the connection closes in Close.
	var codings []string
	for _, v := range resp.Header.Values("Transfer-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" {
				codings = append(codings, c)
			}
		}
	}
	slices.Reverse(codings)
	resp.Header.Del("Transfer-Encoding")
	return &http.Response{
		Status:           statusText(resp.Status, resp.Reason),
		StatusCode:       resp.Status,
		Proto:            resp.Version.String(),
		ProtoMajor:       int(resp.Version.Major),
		ProtoMinor:       int(resp.Version.Minor),
		Header:           resp.Header,
		ContentLength:    resp.ContentLength,
		TransferEncoding: codings,
		Close:            resp.Close,
		Body:             &respBody{ReadCloser: resp.Body, ctx: hr.Context(), closeReq: closeBody},
		Request:          hr,
	}, nil
}

// teWithoutTrailers is the TE field to send for the values vs: without
// "trailers", which promises that trailer fields are not discarded (RFC
// 9110 §10.1.4), and this Transport discards them.
// httputil.ReverseProxy sends "Te: trailers" for a client that offered
// it, and an origin that takes the promise at its word may send fields
// as trailers only.
func teWithoutTrailers(vs []string) string {
	var keep []string
	for _, v := range vs {
		for m := range strings.SplitSeq(v, ",") {
			m = strings.TrimSpace(m)
			name, _, _ := strings.Cut(m, ";")
			if m != "" && !strings.EqualFold(strings.TrimSpace(name), "trailers") {
				keep = append(keep, m)
			}
		}
	}
	return strings.Join(keep, ", ")
}

// doUpgrade is do for a request that asks to switch protocols: after a
// 101 the Response's Body is the upstream connection (Upgrade), any other
// response streams as from do. interim, when set, takes the interim
// responses before the final one.
func (e *Engine) doUpgrade(ctx context.Context, req *Request, interim func(*parser.Response) error) (*Response, error) {
	ctx, s, sink, stopInterim := e.newDoSink(ctx, interim)
	type upgraded struct {
		nc  net.Conn
		err error
	}
	done := make(chan upgraded, 1)
	go func() {
		// The engine calls s.OnDone before Upgrade returns.
		nc, err := e.Upgrade(ctx, req, sink)
		done <- upgraded{nc, err}
	}()
	resp, err := s.awaitHead(ctx, func() {
		if stopInterim != nil {
			stopInterim()
		}
		// ctx ended before the head: whatever Upgrade still hands over
		// has nobody to take it.
		go func() {
			if u := <-done; u.nc != nil {
				_ = u.nc.Close()
			}
		}()
	})
	if err != nil || resp.Status != 101 {
		return resp, err
	}
	u := <-done // a 101 has no body: Upgrade returns right after the head
	if u.err != nil {
		return nil, u.err
	}
	if u.nc == nil {
		return nil, fmt.Errorf("engine: transport: a 101 without the upstream connection")
	}
	resp.Body = u.nc
	return resp, nil
}

// interimTrace returns what hands interim responses to the request's
// httptrace hooks, as net/http's Transport does (Got100Continue for a 100,
// then Got1xxResponse), or nil when it has none: httputil.ReverseProxy
// forwards interim responses to its client from Got1xxResponse.
func interimTrace(ctx context.Context) func(*parser.Response) error {
	trace := httptrace.ContextClientTrace(ctx)
	if trace == nil || trace.Got100Continue == nil && trace.Got1xxResponse == nil {
		return nil
	}
	return func(r *parser.Response) error {
		if r.Status() == 100 && trace.Got100Continue != nil {
			trace.Got100Continue()
		}
		if trace.Got1xxResponse == nil {
			return nil
		}
		h := make(textproto.MIMEHeader, r.Len())
		for i := 0; i < r.Len(); i++ {
			h.Add(string(r.Name(i)), string(r.Value(i)))
		}
		return trace.Got1xxResponse(r.Status(), h)
	}
}

// respBody closes the request body along with the response body, as the
// RoundTripper contract asks, and reports a read cut short by the end of
// the request's context as that context's error, as net/http's Transport
// does: httputil.ReverseProxy compares a body read error with
// context.Canceled (not with errors.Is) to stay quiet when its client
// went away, and would log every such request otherwise.
type respBody struct {
	io.ReadCloser
	ctx      context.Context
	closeReq func()
}

func (r *respBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if cerr := r.ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			err = cerr
		}
	}
	return n, err
}

func (r *respBody) Close() error {
	err := r.ReadCloser.Close()
	r.closeReq()
	return err
}

// statusText is http.Response.Status: the code and the reason phrase, or
// the code alone when the upstream sent no reason, as net/http gives it.
func statusText(code int, reason string) string {
	if reason == "" {
		return strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + reason
}

// writeTarget writes the request target uri to b, with each byte a target
// may not hold (beyond ASCII, a control, a space) percent-encoded: net/http
// leaves a query's bytes as they are (a client's raw UTF-8 reaches a
// handler so), but a URI is ASCII (RFC 3986 §2) and the parser refuses any
// other byte. Encoding it is how an IRI becomes a URI (RFC 3987 §3.1).
func writeTarget(b *strings.Builder, uri string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c >= 0x7f {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		} else {
			b.WriteByte(c)
		}
	}
}
