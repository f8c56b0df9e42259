package parser

// Character classes as 256-entry tables: one load per byte on the hot path.
var (
	tokenTable [256]bool // tchar, RFC 9110 §5.6.2
	valueTable [256]bool // field-vchar / SP / HTAB, RFC 9110 §5.5 (obs-text allowed)
	hexTable   [256]int8 // hex digit value, -1 when not a digit
	hostTable  [256]bool // characters of uri-host [":" port], RFC 3986 §3.2.2
)

// IsTokenChar reports whether c may be part of a token (tchar, RFC 9110
// §5.6.2): a method, a field name, a Via received-by pseudonym.
func IsTokenChar(c byte) bool { return tokenTable[c] }

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenTable[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenTable[c] = true
		tokenTable[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		tokenTable[c] = true
	}
	for c := 0; c < 256; c++ {
		valueTable[c] = c == '\t' || (c >= 0x20 && c != 0x7f)
		hexTable[c] = -1
	}
	for c := 0; c < 10; c++ {
		hexTable['0'+c] = int8(c)
	}
	for c := 0; c < 6; c++ {
		hexTable['a'+c] = int8(10 + c)
		hexTable['A'+c] = int8(10 + c)
	}
	for c := '0'; c <= '9'; c++ {
		hostTable[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		hostTable[c] = true
		hostTable[c-'a'+'A'] = true
	}
	// unreserved, sub-delims, ':' for the port and IP literals, '%' for
	// pct-encoded reg-names and zone IDs. The brackets of an IP literal
	// are not host characters: validAuthority checks them by position.
	for _, c := range "-._~!$&'()*+,;=:%" {
		hostTable[c] = true
	}
}

// lower folds an ASCII letter to lower case; other bytes pass unchanged.
func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// the case of b.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// equalFoldBytes compares two byte strings, ignoring ASCII case.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// trimOWS strips optional whitespace from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextListElem splits the first element off a comma-separated list
// (RFC 9110 §5.6.1), trimming whitespace; empty elements are returned empty.
func nextListElem(b []byte) (elem, rest []byte) {
	for i := 0; i < len(b); i++ {
		if b[i] == ',' {
			return trimOWS(b[:i]), b[i+1:]
		}
	}
	return trimOWS(b), nil
}
