package bench

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"unicode/utf16"
)

// Minimal NTLMSSP messages (MS-NLMP §2.2.1), enough for Squid's
// ntlm_fake_auth, which accepts any well-formed handshake: tests play the
// client whose NTLM handshake a proxy passes through. Each is the value of
// an Authorization or Proxy-Authorization field ("NTLM <base64>").

const (
	ntlmUnicode     = 0x00000001
	ntlmOEM         = 0x00000002
	ntlmReqTarget   = 0x00000004
	ntlmNTLM        = 0x00000200
	ntlmAlwaysSign  = 0x00008000
	ntlmNegotiateFl = ntlmUnicode | ntlmOEM | ntlmReqTarget | ntlmNTLM | ntlmAlwaysSign
)

// NTLMNegotiate is a Type 1 message without domain or workstation.
func NTLMNegotiate() string {
	b := make([]byte, 32)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[12:], ntlmNegotiateFl)
	binary.LittleEndian.PutUint32(b[20:], 32) // domain buffer: empty, at the end
	binary.LittleEndian.PutUint32(b[28:], 32) // workstation buffer: empty, at the end
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

// NTLMAuthenticate is a Type 3 message for domain\user from workstation,
// with zeroed LM/NT responses.
func NTLMAuthenticate(domain, user, workstation string) string {
	const hdr = 64
	b := make([]byte, hdr)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 3)
	u16 := func(s string) []byte {
		var out []byte
		for _, r := range utf16.Encode([]rune(s)) {
			out = binary.LittleEndian.AppendUint16(out, r)
		}
		return out
	}
	put := func(at int, data []byte) {
		binary.LittleEndian.PutUint16(b[at:], uint16(len(data)))
		binary.LittleEndian.PutUint16(b[at+2:], uint16(len(data)))
		binary.LittleEndian.PutUint32(b[at+4:], uint32(len(b)))
		b = append(b, data...)
	}
	put(12, make([]byte, 24)) // LM response
	put(20, make([]byte, 24)) // NT response
	put(28, u16(domain))
	put(36, u16(user))
	put(44, u16(workstation))
	put(52, nil) // session key
	binary.LittleEndian.PutUint32(b[60:], ntlmUnicode|ntlmNTLM)
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

// HeldNTLMParent is a fake parent proxy that answers every request (a
// CONNECT, say) with an NTLM challenge, a 407 with a Type 2 message, and
// keeps the connection: a handshake's middle, which no real parent can be
// held in. The answer to request number hold of a connection (0 for the
// first) waits until Release; Held is closed when such a request came.
type HeldNTLMParent struct {
	*Origin
	Held    <-chan struct{}
	Release func()
}

// NewHeldNTLMParent starts a HeldNTLMParent; Release runs at the end of
// the test if it did not before.
func NewHeldNTLMParent(tb testing.TB, hold int) *HeldNTLMParent {
	held, gate := make(chan struct{}), make(chan struct{})
	var heldOnce, gateOnce sync.Once
	release := func() { gateOnce.Do(func() { close(gate) }) }
	tb.Cleanup(release)
	o := NewOrigin(tb, func(_ int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			if _, err := ReadHead(br); err != nil {
				return
			}
			if n == hold {
				heldOnce.Do(func() { close(held) })
				<-gate
			}
			if _, err := io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+
				"Proxy-Authenticate: NTLM TlRMTVNTUAACAAAAAAAAAAAAAAA=\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	return &HeldNTLMParent{Origin: o, Held: held, Release: release}
}
