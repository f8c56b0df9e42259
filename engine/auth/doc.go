// Package auth is the pure part of upstream authentication: parsing
// WWW-Authenticate and Proxy-Authenticate challenges (RFC 9110 §11),
// answering Basic (RFC 7617) and Digest (RFC 7616) challenges, and
// recognizing the connection-based schemes (NTLM, Negotiate) whose
// handshakes pin a connection.
//
// It does no I/O and keeps no global state; the engine decides when a
// challenge is answered and on which connection.
package auth
