package auth

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Credentials are a user name and password the engine holds for one
// upstream.
type Credentials struct {
	User, Password string
}

// ErrUnsupported reports a challenge this package cannot answer (an
// unknown algorithm, qop=auth-int only, a missing nonce).
var ErrUnsupported = errors.New("auth: unsupported challenge")

// Basic returns the credentials for the Basic scheme (RFC 7617):
// "Basic " followed by base64(user ":" password), UTF-8 as given.
func Basic(c Credentials) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.User+":"+c.Password))
}

// ConnectionBased reports whether scheme authenticates a connection rather
// than a request: NTLM and Negotiate (and Kerberos, which some servers
// announce by that name). Their handshakes need every message on one
// connection, so the connection must be pinned to the client.
func ConnectionBased(scheme string) bool {
	return strings.EqualFold(scheme, "NTLM") || strings.EqualFold(scheme, "Negotiate") ||
		strings.EqualFold(scheme, "Kerberos")
}

// CredentialsScheme returns the auth-scheme of an Authorization or
// Proxy-Authorization value ("NTLM TlRMTVNT..." gives "NTLM").
func CredentialsScheme(value string) string {
	value = strings.TrimLeft(value, " \t")
	if i := strings.IndexAny(value, " \t"); i >= 0 {
		return value[:i]
	}
	return value
}

// AnyConnectionBased reports whether any of the challenges uses a
// connection-based scheme.
func AnyConnectionBased(cs []Challenge) bool {
	for i := range cs {
		if ConnectionBased(cs[i].Scheme) {
			return true
		}
	}
	return false
}
