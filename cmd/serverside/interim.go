package main

import "github.com/serverside-go/serverside/parser"

// OnInterim relays an origin's interim response (102 Processing, 103
// Early Hints, ...) to the client at once, as a proxy must (RFC 9110
// §15.2): hop-by-hop fields removed, Via added, flushed so that early
// hints arrive early. Two are not relayed: 100 Continue to a request
// that asked for it (Expect), because the demo sends the client its own
// when it starts reading the request body (after the origin's, see
// bodyReader), and any 1xx to an HTTP/1.0 client, which must not get
// one. One to a request that did not ask is relayed as any other. An
// origin's Content-Length on a 1xx is dropped: no server may send one
// (RFC 9110 §8.6), and a client that took it for a length would eat the
// final response.
func (s *sink) OnInterim(resp *parser.Response) error {
	if resp.Status() == 100 && s.cc.rs.req.ExpectContinue() || !s.http11 {
		return nil
	}
	ed := &s.edits
	ed.Reset()
	ed.StripHopByHop = true
	ed.Remove("Content-Length")
	ed.Add("Via", s.cc.p.via11)
	s.bb.Reset()
	if err := parser.WriteResponseHead(&s.bb, resp, ed); err != nil {
		return err
	}
	return s.cc.writeAll(s.bb.B)
}
