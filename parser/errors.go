package parser

import (
	"errors"
	"strconv"
)

// ErrNeedMore reports that the input ends inside a message element: call
// again with the same bytes plus more. It is returned unwrapped, so a plain
// comparison (err == ErrNeedMore) is enough and costs no allocation.
var ErrNeedMore = errors.New("parser: need more data")

// Error is one rule of RFC 9112 / RFC 9110 that a message broke. Each rule
// is a distinct sentinel value, so callers branch with errors.Is; the
// position of the offence travels in a *SyntaxError that wraps it.
type Error struct {
	// Msg says what was wrong, in words a user can act on.
	Msg string
	// Ref names the RFC section that sets the rule.
	Ref string
	// Status is the status a server or proxy answers a request with when
	// the request breaks this rule (400, 414, 431, 501 or 505). For a
	// response from an upstream, a proxy answers 502 whatever this says.
	Status int
}

// Error implements error.
func (e *Error) Error() string { return "parser: " + e.Msg + " (" + e.Ref + ")" }

func rule(msg, ref string, status int) *Error { return &Error{Msg: msg, Ref: ref, Status: status} }

// The rules. Each is returned wrapped in a *SyntaxError.
var (
	ErrStartLineTooLong = rule("start line exceeds the head size limit", "RFC 9112 §3", 414)
	ErrHeadTooLarge     = rule("header section exceeds the size limit", "RFC 9110 §5.4", 431)
	ErrTooManyFields    = rule("too many header fields", "RFC 9110 §5.4", 431)

	ErrBadMethod        = rule("method is not a token", "RFC 9110 §9.1", 400)
	ErrBadRequestLine   = rule("malformed request line", "RFC 9112 §3", 400)
	ErrBadTarget        = rule("malformed request target", "RFC 9112 §3.2", 400)
	ErrBadVersion       = rule("malformed HTTP version", "RFC 9112 §2.3", 400)
	ErrVersionNotHTTP1  = rule("unsupported HTTP major version", "RFC 9112 §2.3", 505)
	ErrBadStatusLine    = rule("malformed status line", "RFC 9112 §4", 400)
	ErrBadStatusCode    = rule("status code is not three digits from 100", "RFC 9110 §15", 400)
	ErrBareCR           = rule("bare CR not followed by LF", "RFC 9112 §2.2", 400)
	ErrBareLF           = rule("bare LF line terminator where CRLF is required", "RFC 9112 §2.2", 400)
	ErrLeadingSpace     = rule("whitespace before the first header field", "RFC 9112 §2.2", 400)
	ErrBadFieldName     = rule("field name is empty or not a token", "RFC 9110 §5.1", 400)
	ErrSpaceBeforeColon = rule("whitespace between field name and colon", "RFC 9112 §5.1", 400)
	ErrNoColon          = rule("field line has no colon", "RFC 9112 §5", 400)
	ErrBadFieldValue    = rule("field value contains CR, LF, NUL or another control character", "RFC 9110 §5.5", 400)
	ErrObsFold          = rule("obsolete line folding", "RFC 9112 §5.2", 400)

	ErrShortBuffer        = rule("buffer shorter than the bytes already parsed", "RFC 9112 §2.2", 400)
	ErrTooManyConnOptions = rule("too many field names in Connection", "RFC 9110 §7.6.1", 400)
	ErrBadSwitch          = rule("101 Switching Protocols without Upgrade", "RFC 9110 §15.2.2", 400)

	ErrTEAndCL          = rule("both Transfer-Encoding and Content-Length", "RFC 9112 §6.3", 400)
	ErrBadContentLength = rule("Content-Length is not a non-negative decimal integer", "RFC 9110 §8.6", 400)
	ErrCLOverflow       = rule("Content-Length overflows", "RFC 9110 §8.6", 400)
	ErrCLMismatch       = rule("several differing Content-Length values", "RFC 9110 §8.6", 400)
	ErrUnknownTE        = rule("unknown transfer coding", "RFC 9112 §6.1", 501)
	ErrTENotChunked     = rule("Transfer-Encoding in a request whose final coding is not chunked", "RFC 9112 §6.3", 400)
	ErrChunkedTwice     = rule("chunked applied more than once or not last", "RFC 9112 §6.1", 400)
	ErrTEInHTTP10       = rule("Transfer-Encoding in an HTTP/1.0 message", "RFC 9112 §6.1", 400)
	ErrMissingHost      = rule("HTTP/1.1 request without Host", "RFC 9112 §3.2", 400)
	ErrDuplicateHost    = rule("more than one Host field", "RFC 9112 §3.2", 400)
	ErrBadHost          = rule("Host value is not a valid authority", "RFC 9112 §3.2", 400)

	ErrBadChunkSize      = rule("chunk size is not hexadecimal", "RFC 9112 §7.1", 400)
	ErrChunkSizeOverflow = rule("chunk size overflows", "RFC 9112 §7.1", 400)
	ErrBadChunkExt       = rule("malformed chunk extension", "RFC 9112 §7.1.1", 400)
	ErrChunkLineTooLong  = rule("chunk size line exceeds the limit", "RFC 9112 §7.1", 400)
	ErrChunkNoCRLF       = rule("chunk data not followed by CRLF", "RFC 9112 §7.1", 400)
	ErrTrailerTooLarge   = rule("trailer section exceeds the size limit", "RFC 9112 §7.1.2", 400)
)

// SyntaxError wraps a rule with where it was broken.
type SyntaxError struct {
	Err    *Error // the rule broken; errors.Is matches it
	Offset int    // byte offset in the input where the offence was found
	State  State  // parser state at the offence
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return e.Err.Error() + " at offset " + strconv.Itoa(e.Offset) + " in " + e.State.String()
}

// Unwrap returns the rule, for errors.Is and errors.As.
func (e *SyntaxError) Unwrap() error { return e.Err }

// Rule returns the rule an error from this package broke, or nil.
func Rule(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
