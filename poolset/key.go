package poolset

// Key identifies an upstream: two requests may share a connection only when
// every field is equal. It is comparable and is used as a map key as is.
//
// The pool only compares keys; the encodings below are the conventions the
// engine uses to build them. Every field that changes what is on the other
// end of the socket, or who the socket speaks for, must be in the key.
//
//	shape                   Addr            TLS                     Via                 Cred
//	HTTP, direct            origin ip:port  ""                      ""                  ""
//	HTTPS, direct           origin ip:port  "sni=a.example;v=full"  ""                  ""
//	HTTPS, client cert      origin ip:port  "sni=…;v=full;c=9f2c…"  ""                  ""
//	HTTP via a parent       parent ip:port  "", or the parent's     "fwd"               parent login scope
//	tunnel via a parent     origin ip:port  origin TLS identity     "connect=ip:port"   CONNECT login scope
//	tunnel via two parents  origin ip:port  origin TLS identity     "connect=p1,p2"     the chain's scope
//
// For a forwarding parent, Addr is the parent: its connections carry
// requests for any origin. For a tunnel, Addr is the origin: the bytes end
// there, and the tunnel is useful only for that origin.
type Key struct {
	// Addr is the resolved ip:port the connection's bytes end at.
	Addr string
	// TLS is the TLS identity: SNI, verification policy and client
	// certificate fingerprint. Empty for plaintext.
	TLS string
	// Via is the parent proxy or tunnel chain. Empty for a direct
	// connection.
	Via string
	// Cred is the credential scope: an opaque, non-reversible identifier
	// (a hash) of the identity a connection is authenticated as, such as
	// the Proxy-Authorization sent on a CONNECT. A connection authenticated
	// for one identity is never handed to another. It must never hold the
	// secret itself. Empty when the connection carries no identity.
	Cred string
}

// String renders the key for errors and logs. Cred is not printed, only
// whether it is set, so that logs never carry identities.
func (k Key) String() string {
	s := k.Addr
	if k.TLS != "" {
		s += " tls=" + k.TLS
	}
	if k.Via != "" {
		s += " via=" + k.Via
	}
	if k.Cred != "" {
		s += " cred=*"
	}
	return s
}
