package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/serverside-go/serverside/parser"
)

// Response is a response head copied out of the connection's buffer, with
// the body still streaming.
type Response struct {
	// Status and Reason are from the status line; Version is the
	// upstream's HTTP version.
	Status  int
	Reason  string
	Version parser.Version
	// Header holds every field as received (names canonicalized by
	// http.Header), hop-by-hop fields included.
	Header http.Header
	// ContentLength is the body length, -1 when unknown. For a response
	// to HEAD it is the length the response announces, -1 when it
	// announces none, as net/http reports it.
	ContentLength int64
	// Close reports that the connection ends with this response
	// ("Connection: close", HTTP/1.0 without keep-alive, a body delimited
	// by the close): it is not reused.
	Close bool
	// Body streams the body with backpressure: the connection reads on as
	// the caller reads. Reading it to EOF (or, with a known length, all of
	// it) returns the connection to the pool; closing it early ends the
	// request as its context's end would (counted in Stats Canceled) and
	// closes the connection at once. Callers must close it.
	Body io.ReadCloser
}

// Do sends req and returns once the response head arrived. The body
// streams through Response.Body, bound to ctx.
func (e *Engine) Do(ctx context.Context, req *Request) (*Response, error) {
	return e.do(ctx, req, nil)
}

// do is Do, with interim (when set) taking the interim responses.
func (e *Engine) do(ctx context.Context, req *Request, interim func(*parser.Response) error) (*Response, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: nil context", ErrBadRequest)
	}
	ctx, s, sink, abandon := e.newDoSink(ctx, interim)
	if err := e.Send(ctx, req, sink); err != nil {
		s.cancel()
		return nil, err
	}
	return s.awaitHead(ctx, abandon)
}

// newDoSink returns a doSink for a request bound to ctx, and the context
// the request runs under: the body pipe must also give up when the engine
// closes, even if the caller never reads or closes the body. With
// interim, the sink to send with also takes the interim responses, and
// abandon stops that once the caller gave up; otherwise sink is s and
// abandon nil.
func (e *Engine) newDoSink(ctx context.Context, interim func(*parser.Response) error) (_ context.Context, s *doSink, sink Sink, abandon func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.root, cancel)
	s = &doSink{pipe: newBodyPipe(ctx, cancel), head: make(chan headResult, 1), cancel: func() {
		stop()
		cancel()
	}}
	if interim == nil {
		return ctx, s, s, nil
	}
	is := &interimDoSink{doSink: s, interim: interim}
	return ctx, s, is, is.abandon
}

// awaitHead waits for the response head, or for the request's failure,
// or for ctx to end; then abandon (when set) runs before the error
// returns.
func (s *doSink) awaitHead(ctx context.Context, abandon func()) (*Response, error) {
	var r headResult
	select {
	case r = <-s.head:
	case <-ctx.Done():
		// OnDone cancels ctx after delivering its result: prefer that.
		select {
		case r = <-s.head:
		default:
			_ = s.pipe.Close()
			if abandon != nil {
				abandon()
			}
			return nil, ctx.Err()
		}
	}
	return r.resp, r.err
}

type headResult struct {
	resp *Response
	err  error
}

// doSink adapts Sink to Do: the head goes to a channel, the body into the
// pipe.
type doSink struct {
	pipe   *bodyPipe
	head   chan headResult
	sent   bool   // head delivered; touched by the worker, then by OnDone after it
	cancel func() // ends the request's context and its watch on the engine
}

func (s *doSink) OnHead(r *parser.Response) error {
	h := make(http.Header, r.Len())
	for i := 0; i < r.Len(); i++ {
		h.Add(string(r.Name(i)), string(r.Value(i)))
	}
	cl := r.ContentLength()
	switch r.Framing() {
	case parser.FramingLength:
	case parser.FramingNone:
		// No body follows. A response to HEAD still announces the length
		// of the representation (-1 when it names none), as net/http
		// reports it; a 304 (or 204, 1xx) to another method has no body
		// whatever length it names, and net/http reports 0:
		// ContentLength ≥ 0 promises that many bytes from Body.
		if r.RequestMethod() != parser.MethodHead {
			cl = 0
		}
	default:
		cl = -1
	}
	s.sent = true
	if r.Framing() == parser.FramingLength {
		s.pipe.setLength(cl)
	}
	s.head <- headResult{resp: &Response{Status: r.Status(), Reason: string(r.Reason()), Version: r.Version(),
		Header: h, ContentLength: cl, Close: !r.KeepAlive(), Body: s.pipe}}
	return nil
}

// interimDoSink is a doSink that also takes the interim responses, but
// never once do has returned without a head: the caller of a RoundTrip
// that failed (an httputil.ReverseProxy handler that wrote its 502 and
// returned, say) must not be called back.
type interimDoSink struct {
	*doSink
	interim func(*parser.Response) error
	mu      sync.Mutex
	gone    bool
}

func (s *interimDoSink) OnInterim(r *parser.Response) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return s.pipe.ctx.Err() // do returned because it ended
	}
	return s.interim(r)
}

// abandon waits out a call in progress and stops later ones.
func (s *interimDoSink) abandon() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
}

func (s *doSink) OnBody(p []byte) error { return s.pipe.write(p) }

func (s *doSink) OnDone(err error) {
	if !s.sent {
		s.head <- headResult{err: err}
	}
	s.pipe.finish(err)
	s.cancel()
}
