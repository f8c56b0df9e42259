package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// serverside: the engine with a sink that counts body bytes, as a proxy
// embeds it. A proxy has its client's request head parsed already and keeps
// one Edits per client connection, so each caller reuses a parsed head and
// an Edits: what is measured is the engine's path (pool, netpoll I/O,
// response parsing, and the shard and worker hops where they are taken),
// not head building.
//
//	serverside       Engine.Exchange: the blocking form, which runs the
//	                 exchange on the caller's goroutine when an idle
//	                 connection is free (the path for a proxy that serves
//	                 each client connection on its own goroutine).
//	serverside-send  Engine.Send: the asynchronous form, through a shard
//	                 and an exchange worker; the caller waits for OnDone.
//	serverside-gonet Engine.Exchange with Config.GoNetIO: upstream
//	                 connections on Go's net package and runtime poller.
func init() {
	registerClient("serverside", func(cfg clientConfig) (client, error) {
		return newServersideClient(cfg, false)
	})
	registerClient("serverside-send", func(cfg clientConfig) (client, error) {
		return newServersideClient(cfg, true)
	})
	registerClient("serverside-gonet", func(cfg clientConfig) (client, error) {
		return newServersideClient(cfg, false, func(c *engine.Config) { c.GoNetIO = true })
	})
	// Pipelining to the origin (Upstream.Pipeline): nginx answers
	// pipelined requests in order.
	registerClient("serverside-pipelined", func(cfg clientConfig) (client, error) {
		c, err := newServersideClient(cfg, false)
		if err == nil {
			c.(*serversideClient).pipeline = 8
		}
		return c, err
	})
}

func newServersideClient(cfg clientConfig, async bool, opts ...func(*engine.Config)) (client, error) {
	ecfg := engine.Config{
		MaxConnsPerUpstream: cfg.MaxConns,
		MaxIdlePerUpstream:  cfg.MaxConns,
		PendingTimeout:      5 * time.Second, // wait for a connection instead of failing at once
		// The other clients' read timeouts are 10s.
		ResponseHeaderTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(&ecfg)
	}
	e, err := engine.New(ecfg)
	if err != nil {
		return nil, err
	}
	c := &serversideClient{e: e, addr: cfg.Addr, async: async}
	c.callers.New = func() any { return new(serversideCaller) }
	return c, nil
}

type serversideClient struct {
	e     *engine.Engine
	addr  string
	async bool // Send instead of Exchange
	// pipeline is the requests' Upstream.Pipeline.
	pipeline int
	// callers holds per-caller state. A caller takes one for the length
	// of a request, so no two requests in flight share a head or an
	// Edits (the engine adds the body framing to an Edits).
	callers sync.Pool
}

// serversideCaller is one caller's reusable request and sink.
type serversideCaller struct {
	url   string // the URL head was built for
	raw   []byte // head's bytes; the parsed views point into them
	head  parser.Request
	edits parser.Edits
	req   engine.Request
	sink  countSink
}

// countSink records the status and counts body bytes; for Send, OnDone
// hands the outcome to the waiting caller.
type countSink struct {
	status int
	n      int
	done   chan error // nil for Exchange, which returns the outcome itself
}

func (s *countSink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *countSink) OnBody(p []byte) error           { s.n += len(p); return nil }
func (s *countSink) OnDone(err error) {
	if s.done != nil {
		s.done <- err
	}
}

// prepare parses the head of "GET url" once per caller and URL.
func (sc *serversideCaller) prepare(addr, url string, async bool, pipeline int) error {
	if sc.url == url && sc.head.Done() {
		return nil
	}
	rest, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return fmt.Errorf("serverside client: %q is not an http:// URL", url)
	}
	host, path := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, path = rest[:i], rest[i:]
	}
	if host != addr {
		return fmt.Errorf("serverside client: %q is not on the origin %s", url, addr)
	}
	sc.raw = []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: serverside\r\n\r\n")
	sc.head.Reset()
	if _, err := sc.head.Parse(sc.raw); err != nil {
		sc.url = ""
		return fmt.Errorf("serverside client: request head: %w", err)
	}
	sc.url = url
	sc.req = engine.Request{Upstream: engine.Upstream{Addr: addr, Pipeline: pipeline}, Head: &sc.head, Edits: &sc.edits}
	if async && sc.sink.done == nil {
		sc.sink.done = make(chan error, 1)
	}
	return nil
}

func (c *serversideClient) Get(url string) (int, int, error) {
	sc := c.callers.Get().(*serversideCaller)
	defer c.callers.Put(sc)
	if err := sc.prepare(c.addr, url, c.async, c.pipeline); err != nil {
		return 0, 0, err
	}
	sc.edits.Reset()
	sc.sink.status, sc.sink.n = 0, 0
	var err error
	if c.async {
		if err = c.e.Send(context.Background(), &sc.req, &sc.sink); err == nil {
			err = <-sc.sink.done
		}
	} else {
		err = c.e.Exchange(context.Background(), &sc.req, &sc.sink)
	}
	if err != nil {
		return 0, 0, err
	}
	return sc.sink.status, sc.sink.n, nil
}

func (c *serversideClient) Close() error {
	if err := c.e.Close(); err != nil && !errors.Is(err, engine.ErrClosed) {
		return err
	}
	return nil
}
