package auth

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax reports a challenge field that breaks the grammar of RFC 9110
// §11.
var ErrSyntax = errors.New("auth: malformed challenge")

// Challenge is one challenge of a WWW-Authenticate or Proxy-Authenticate
// field: an auth-scheme followed by either a token68 or auth-params.
type Challenge struct {
	// Scheme is the auth-scheme as received; schemes compare
	// case-insensitively (use Is).
	Scheme string
	// Token68 is the token68 form of the credentials-challenge (NTLM and
	// Negotiate use it), empty when the challenge has auth-params.
	Token68 string
	// Params are the auth-params in order, names lower-cased (parameter
	// names are case-insensitive) and quoted-string values unescaped.
	Params []Param
}

// Param is one auth-param.
type Param struct {
	Name, Value string
}

// Is reports whether the challenge's scheme is scheme, ignoring case.
func (c *Challenge) Is(scheme string) bool { return strings.EqualFold(c.Scheme, scheme) }

// Param returns the value of the auth-param name (case-insensitive) and
// whether it is present.
func (c *Challenge) Param(name string) (string, bool) {
	for _, p := range c.Params {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// ParseChallenges parses the values of every WWW-Authenticate (or every
// Proxy-Authenticate) field of one response, in order: a field may carry
// several challenges, and several fields add up to one list (RFC 9110
// §5.3). Empty list elements are skipped. A parameter named twice in one
// challenge is an error (RFC 9110 §11.2), as is any other deviation from
// the grammar; nothing is returned then.
func ParseChallenges(values ...string) ([]Challenge, error) {
	var out []Challenge
	for _, v := range values {
		p := parser{s: v}
		cs, err := p.challenges()
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d", ErrSyntax, fmt.Sprintf(format, args...), p.i)
}

func (p *parser) ows() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// skipSeparators skips OWS and the commas of empty list elements.
func (p *parser) skipSeparators() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

func (p *parser) token() string {
	j := p.i
	for j < len(p.s) && isTchar(p.s[j]) {
		j++
	}
	t := p.s[p.i:j]
	p.i = j
	return t
}

// paramAhead reports whether an auth-param (token BWS "=") starts at the
// current position, without consuming anything. A token followed by "="
// that is itself followed by "=" or the end is a token68, not a param.
func (p *parser) paramAhead() bool {
	j := p.i
	for j < len(p.s) && isTchar(p.s[j]) {
		j++
	}
	if j == p.i {
		return false
	}
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	if j >= len(p.s) || p.s[j] != '=' {
		return false
	}
	j++
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	return j < len(p.s) && (p.s[j] == '"' || isTchar(p.s[j]))
}

func (p *parser) challenges() ([]Challenge, error) {
	var out []Challenge
	for {
		p.skipSeparators()
		if p.i >= len(p.s) {
			return out, nil
		}
		scheme := p.token()
		if scheme == "" {
			return nil, p.errorf("auth-scheme expected")
		}
		c := Challenge{Scheme: scheme}
		sp := p.i
		p.ows()
		if p.i > sp && p.i < len(p.s) && p.s[p.i] != ',' {
			if p.s[sp] != ' ' {
				return nil, p.errorf("auth-scheme must be followed by a space")
			}
			if p.paramAhead() {
				if err := p.params(&c); err != nil {
					return nil, err
				}
			} else if err := p.token68(&c); err != nil {
				return nil, err
			}
		}
		p.ows()
		if p.i < len(p.s) && p.s[p.i] != ',' {
			return nil, p.errorf("unexpected %q", p.s[p.i])
		}
		out = append(out, c)
	}
}

func (p *parser) token68(c *Challenge) error {
	j := p.i
	for j < len(p.s) && isToken68(p.s[j]) {
		j++
	}
	if j == p.i {
		return p.errorf("token68 or auth-param expected")
	}
	for j < len(p.s) && p.s[j] == '=' {
		j++
	}
	c.Token68 = p.s[p.i:j]
	p.i = j
	return nil
}

// params reads the auth-params of one challenge: after each comma, the
// list continues with this challenge while an auth-param follows, and a
// new challenge starts otherwise.
func (p *parser) params(c *Challenge) error {
	for {
		name := strings.ToLower(p.token())
		p.ows()
		p.i++ // "=", checked by paramAhead
		p.ows()
		var val string
		if p.s[p.i] == '"' {
			v, err := p.quoted()
			if err != nil {
				return err
			}
			val = v
		} else {
			val = p.token()
		}
		if _, dup := c.Param(name); dup {
			return p.errorf("auth-param %q repeated", name)
		}
		c.Params = append(c.Params, Param{Name: name, Value: val})
		// Look past separators for another param of this challenge.
		save := p.i
		p.ows()
		if p.i >= len(p.s) || p.s[p.i] != ',' {
			p.i = save
			return nil
		}
		p.skipSeparators()
		if !p.paramAhead() {
			p.i = save
			return nil
		}
	}
}

// quoted reads a quoted-string, returning its unescaped value.
func (p *parser) quoted() (string, error) {
	p.i++ // opening DQUOTE
	var b strings.Builder
	for p.i < len(p.s) {
		ch := p.s[p.i]
		switch {
		case ch == '"':
			p.i++
			return b.String(), nil
		case ch == '\\':
			if p.i+1 >= len(p.s) || !isQuotedPairChar(p.s[p.i+1]) {
				return "", p.errorf("bad quoted-pair")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) || (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80:
			b.WriteByte(ch)
			p.i++
		default:
			return "", p.errorf("control character in quoted-string")
		}
	}
	return "", p.errorf("unterminated quoted-string")
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80
}

// Quote renders s as a quoted-string, escaping DQUOTE and backslash.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
