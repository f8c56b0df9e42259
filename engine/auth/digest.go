package auth

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// Digest answers one Digest challenge (RFC 7616) for one set of
// credentials. It counts the requests made with the challenge's nonce
// (nc), so one Digest may answer several requests; it is not safe for
// concurrent use.
type Digest struct {
	cred      Credentials
	realm     string
	nonce     string
	opaque    string
	algorithm string // as announced, "" when absent
	newHash   func() hash.Hash
	sess      bool
	qop       bool // qop=auth chosen; false: RFC 2069 compatibility
	userhash  bool
	nc        uint32

	// Cnonce, when set, returns the client nonce; tests fix it to check
	// the RFC's example vectors. Default: 24 bytes from crypto/rand.
	Cnonce func() string
}

// NewDigest prepares answers to the Digest challenge c with cred. It
// fails with ErrUnsupported for an algorithm other than MD5, SHA-256 and
// SHA-512-256 (each also in its -sess variant), for a qop list without
// "auth", and for a challenge without a nonce.
func NewDigest(c *Challenge, cred Credentials) (*Digest, error) {
	if !c.Is("Digest") {
		return nil, fmt.Errorf("%w: scheme %q is not Digest", ErrUnsupported, c.Scheme)
	}
	d := &Digest{cred: cred}
	var ok bool
	if d.nonce, ok = c.Param("nonce"); !ok || d.nonce == "" {
		return nil, fmt.Errorf("%w: Digest challenge without nonce", ErrUnsupported)
	}
	d.realm, _ = c.Param("realm")
	d.opaque, _ = c.Param("opaque")
	d.algorithm, _ = c.Param("algorithm")
	alg := strings.ToUpper(d.algorithm)
	if s, found := strings.CutSuffix(alg, "-SESS"); found {
		alg, d.sess = s, true
	}
	switch alg {
	case "", "MD5":
		d.newHash = md5.New
	case "SHA-256":
		d.newHash = sha256.New
	case "SHA-512-256":
		d.newHash = sha512.New512_256
	default:
		return nil, fmt.Errorf("%w: Digest algorithm %q", ErrUnsupported, d.algorithm)
	}
	if q, present := c.Param("qop"); present {
		for _, o := range strings.Split(q, ",") {
			if strings.EqualFold(strings.TrimSpace(o), "auth") {
				d.qop = true
			}
		}
		if !d.qop {
			return nil, fmt.Errorf("%w: Digest qop %q (only auth is supported)", ErrUnsupported, q)
		}
	} else if d.sess {
		// The -sess variants need a cnonce, which only comes with qop.
		return nil, fmt.Errorf("%w: Digest %s without qop", ErrUnsupported, d.algorithm)
	}
	if u, _ := c.Param("userhash"); strings.EqualFold(u, "true") {
		d.userhash = true
	}
	return d, nil
}

// Stale reports whether c is a Digest challenge with stale=true: the
// server refused only the nonce, not the credentials, so answering the new
// nonce is not a failed attempt.
func Stale(c *Challenge) bool {
	v, _ := c.Param("stale")
	return c.Is("Digest") && strings.EqualFold(v, "true")
}

// Realm is the challenge's realm.
func (d *Digest) Realm() string { return d.realm }

func (d *Digest) h(parts ...string) string {
	h := d.newHash()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func randomCnonce() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+
		// panics rather than return an error).
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// Authorize returns the credentials for one request (method and
// request-target as sent on the request line), counting it against the
// nonce: each call uses the next nonce count.
func (d *Digest) Authorize(method, uri string) string {
	d.nc++
	nc := fmt.Sprintf("%08x", d.nc)
	var cnonce string
	if d.qop {
		if d.Cnonce != nil {
			cnonce = d.Cnonce()
		} else {
			cnonce = randomCnonce()
		}
	}
	ha1 := d.h(d.cred.User, d.realm, d.cred.Password)
	if d.sess {
		ha1 = d.h(ha1, d.nonce, cnonce)
	}
	ha2 := d.h(method, uri)
	var response string
	if d.qop {
		response = d.h(ha1, d.nonce, nc, cnonce, "auth", ha2)
	} else {
		response = d.h(ha1, d.nonce, ha2)
	}
	user := d.cred.User
	if d.userhash {
		user = d.h(d.cred.User, d.realm)
	}
	var b strings.Builder
	b.WriteString("Digest username=")
	b.WriteString(Quote(user))
	b.WriteString(", realm=")
	b.WriteString(Quote(d.realm))
	b.WriteString(", uri=")
	b.WriteString(Quote(uri))
	if d.algorithm != "" {
		b.WriteString(", algorithm=")
		b.WriteString(d.algorithm)
	}
	b.WriteString(", nonce=")
	b.WriteString(Quote(d.nonce))
	if d.qop {
		b.WriteString(", nc=")
		b.WriteString(nc)
		b.WriteString(", cnonce=")
		b.WriteString(Quote(cnonce))
		b.WriteString(", qop=auth")
	}
	b.WriteString(", response=")
	b.WriteString(Quote(response))
	if d.opaque != "" {
		b.WriteString(", opaque=")
		b.WriteString(Quote(d.opaque))
	}
	if d.userhash {
		b.WriteString(", userhash=true")
	}
	return b.String()
}

// Pick returns the strongest challenge among cs this package can answer:
// Digest before Basic, and among Digest challenges SHA-512-256, then
// SHA-256, then MD5 (RFC 7616 §3.7: a client picks the strongest it
// supports). It returns nil when none can be answered.
func Pick(cs []Challenge) *Challenge {
	var best *Challenge
	bestRank := 0
	for i := range cs {
		c := &cs[i]
		rank := 0
		switch {
		case c.Is("Basic"):
			rank = 1
		case c.Is("Digest"):
			if _, err := NewDigest(c, Credentials{}); err != nil {
				continue
			}
			alg, _ := c.Param("algorithm")
			alg, _ = strings.CutSuffix(strings.ToUpper(alg), "-SESS")
			switch alg {
			case "", "MD5":
				rank = 2
			case "SHA-256":
				rank = 3
			case "SHA-512-256":
				rank = 4
			}
		}
		if rank > bestRank {
			best, bestRank = c, rank
		}
	}
	return best
}
