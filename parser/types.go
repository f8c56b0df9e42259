package parser

// State is a position in the grammar; errors record the state they hit.
type State uint8

// Head states, then chunked-body states.
const (
	StateStartLine    State = iota // reading the request line or status line
	StateFields                    // reading field lines up to the empty line
	StateDone                      // head complete; views are valid
	StateChunkSize                 // reading chunk-size hex digits
	StateChunkExt                  // inside chunk extensions, up to CR
	StateChunkSizeLF               // after CR of the chunk-size line
	StateChunkData                 // inside chunk data
	StateChunkDataCR               // expecting CR after chunk data
	StateChunkDataLF               // expecting LF after chunk data
	StateTrailerStart              // at the start of a trailer line
	StateTrailerLine               // inside a trailer field line
	StateTrailerLF                 // after CR of a trailer field line
	StateTrailerEndLF              // after CR of the final empty line
	StateChunkDone                 // last chunk and trailers consumed
	numStates
)

var stateNames = [numStates]string{
	"start line", "header fields", "done",
	"chunk size", "chunk extension", "chunk size LF", "chunk data",
	"chunk data CR", "chunk data LF", "trailer start", "trailer line",
	"trailer LF", "trailer end LF", "chunked done",
}

// String names the state.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "invalid state"
}

// Framing is how the body of a message is delimited (RFC 9112 §6.3).
type Framing uint8

// Framings.
const (
	FramingNone       Framing = iota // no body: HEAD, 1xx, 204, 304, or a request without length
	FramingLength                    // exactly ContentLength() bytes
	FramingChunked                   // chunked transfer coding; decode with ChunkedDecoder
	FramingUntilClose                // response body ends when the connection closes
	FramingTunnel                    // the connection becomes a tunnel (2xx to CONNECT, 101)
)

var framingNames = [...]string{"none", "length", "chunked", "until-close", "tunnel"}

// String names the framing.
func (f Framing) String() string {
	if int(f) < len(framingNames) {
		return framingNames[f]
	}
	return "invalid framing"
}

// Version is an HTTP version; only major version 1 parses.
type Version struct{ Major, Minor uint8 }

// AtLeast11 reports whether v is HTTP/1.1 or later within major version 1.
func (v Version) AtLeast11() bool { return v.Major > 1 || v.Minor >= 1 }

// String formats the version as on the wire.
func (v Version) String() string {
	return "HTTP/" + string(rune('0'+v.Major)) + "." + string(rune('0'+v.Minor))
}

// Method identifies the well-known methods so that callers can branch
// without comparing bytes; the bytes themselves stay in Request.Method().
type Method uint8

// Methods. MethodOther is the zero value: any extension method.
const (
	MethodOther Method = iota
	MethodGet
	MethodHead
	MethodPost
	MethodPut
	MethodDelete
	MethodConnect
	MethodOptions
	MethodTrace
	MethodPatch
)

// Idempotent reports whether RFC 9110 §9.2.2 defines the method as
// idempotent, the precondition for replaying a request automatically.
func (m Method) Idempotent() bool {
	switch m {
	case MethodGet, MethodHead, MethodPut, MethodDelete, MethodOptions, MethodTrace:
		return true
	}
	return false
}

func methodID(b []byte) Method {
	switch string(b) { // compiled to length and byte comparisons; no allocation
	case "GET":
		return MethodGet
	case "HEAD":
		return MethodHead
	case "POST":
		return MethodPost
	case "PUT":
		return MethodPut
	case "DELETE":
		return MethodDelete
	case "CONNECT":
		return MethodConnect
	case "OPTIONS":
		return MethodOptions
	case "TRACE":
		return MethodTrace
	case "PATCH":
		return MethodPatch
	}
	return MethodOther
}

// TargetForm is the form of a request target (RFC 9112 §3.2).
type TargetForm uint8

// Target forms.
const (
	FormOrigin    TargetForm = iota // "/path?query"
	FormAbsolute                    // "http://host/path", sent to proxies
	FormAuthority                   // "host:port", CONNECT only
	FormAsterisk                    // "*", OPTIONS only
)

var formNames = [...]string{"origin-form", "absolute-form", "authority-form", "asterisk-form"}

// String names the form.
func (f TargetForm) String() string {
	if int(f) < len(formNames) {
		return formNames[f]
	}
	return "invalid form"
}

// HeaderID names a field the parser indexes for O(1) lookup: the framing,
// connection-management and authentication fields a proxy must act on.
type HeaderID uint8

// Indexed fields. HdrOther is every other field.
const (
	HdrOther HeaderID = iota
	HdrContentLength
	HdrTransferEncoding
	HdrConnection
	HdrKeepAlive
	HdrProxyConnection
	HdrTE
	HdrTrailer
	HdrUpgrade
	HdrExpect
	HdrHost
	HdrAuthorization
	HdrProxyAuthorization
	HdrWWWAuthenticate
	HdrProxyAuthenticate
	HdrProxySupport
	HdrVia
	numHeaderIDs
)

var headerNames = [numHeaderIDs]string{
	"", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
	"Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect", "Host",
	"Authorization", "Proxy-Authorization", "WWW-Authenticate",
	"Proxy-Authenticate", "Proxy-Support", "Via",
}

// String returns the canonical field name, or "" for HdrOther.
func (id HeaderID) String() string {
	if id < numHeaderIDs {
		return headerNames[id]
	}
	return ""
}

// LookupHeaderID classifies a field name, ignoring case.
func LookupHeaderID(name []byte) HeaderID {
	if len(name) < 2 {
		return HdrOther
	}
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return HdrTE
		}
	case 3:
		if equalFold(name, "via") {
			return HdrVia
		}
	case 4:
		if equalFold(name, "host") {
			return HdrHost
		}
	case 6:
		if equalFold(name, "expect") {
			return HdrExpect
		}
	case 7:
		switch lower(name[0]) {
		case 'u':
			if equalFold(name, "upgrade") {
				return HdrUpgrade
			}
		case 't':
			if equalFold(name, "trailer") {
				return HdrTrailer
			}
		}
	case 10:
		switch lower(name[0]) {
		case 'c':
			if equalFold(name, "connection") {
				return HdrConnection
			}
		case 'k':
			if equalFold(name, "keep-alive") {
				return HdrKeepAlive
			}
		}
	case 13:
		switch lower(name[0]) {
		case 'a':
			if equalFold(name, "authorization") {
				return HdrAuthorization
			}
		case 'p':
			if equalFold(name, "proxy-support") {
				return HdrProxySupport
			}
		}
	case 14:
		if equalFold(name, "content-length") {
			return HdrContentLength
		}
	case 16:
		switch lower(name[0]) {
		case 'p':
			if equalFold(name, "proxy-connection") {
				return HdrProxyConnection
			}
		case 'w':
			if equalFold(name, "www-authenticate") {
				return HdrWWWAuthenticate
			}
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return HdrTransferEncoding
		}
	case 18:
		if equalFold(name, "proxy-authenticate") {
			return HdrProxyAuthenticate
		}
	case 19:
		if equalFold(name, "proxy-authorization") {
			return HdrProxyAuthorization
		}
	}
	return HdrOther
}

// HeaderSet is a set of indexed fields, used to say which hop-by-hop
// fields a forwarding policy keeps.
type HeaderSet uint32

// Has reports whether id is in the set.
func (s HeaderSet) Has(id HeaderID) bool { return s&(1<<id) != 0 }

// With returns the set plus ids.
func (s HeaderSet) With(ids ...HeaderID) HeaderSet {
	for _, id := range ids {
		s |= 1 << id
	}
	return s
}

// hopByHop is the fixed hop-by-hop set of RFC 9110 §7.6.1 plus the
// de-facto ones (Proxy-Connection, Keep-Alive) and the proxy credentials,
// which belong to one hop.
var hopByHop = HeaderSet(0).With(HdrConnection, HdrKeepAlive, HdrProxyConnection,
	HdrTE, HdrTrailer, HdrTransferEncoding, HdrUpgrade, HdrProxyAuthorization,
	HdrProxyAuthenticate)

// Limits bound what one head may cost; the zero value means the defaults.
type Limits struct {
	// MaxHeadBytes bounds the start line plus header section, CRLFs
	// included. Default 64 KiB.
	MaxHeadBytes int
	// MaxFields bounds the number of field lines. Default 100.
	MaxFields int
}

// Defaults.
const (
	DefaultMaxHeadBytes = 64 << 10
	DefaultMaxFields    = 100
)

func (l Limits) maxHead() int {
	if l.MaxHeadBytes > 0 {
		return min(l.MaxHeadBytes, 1<<31-1) // offsets are int32
	}
	return DefaultMaxHeadBytes
}

func (l Limits) maxFields() int {
	if l.MaxFields > 0 {
		return l.MaxFields
	}
	return DefaultMaxFields
}

// Options are parser settings; they survive Reset.
type Options struct {
	Limits
	// StrictCRLF rejects a bare LF line terminator in the head. By default
	// a bare LF ends a line (RFC 9112 §2.2 allows it): heads are always
	// re-serialized with CRLF, so no peer downstream sees the difference.
	// Chunked framing requires CRLF regardless.
	StrictCRLF bool
	// RejectObsFold rejects obs-fold in responses too. By default a folded
	// response field is unfolded in place, each obs-fold replaced by spaces
	// (RFC 9112 §5.2). Requests with obs-fold are always rejected.
	RejectObsFold bool
}
