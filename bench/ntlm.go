package bench

import (
	"encoding/base64"
	"encoding/binary"
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
