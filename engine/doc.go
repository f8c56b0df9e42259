// Package engine is the public library surface that HTTP proxies embed to
// talk to origin servers and parent proxies.
//
// An Engine is built from a Config and runs a set of event-loop shards. Do
// sends one request upstream and streams the reply into a caller-supplied
// sink, with backpressure; a RoundTripper adapter lets net/http clients use
// the engine unchanged; Stats reports connections, pool and request counters.
package engine
