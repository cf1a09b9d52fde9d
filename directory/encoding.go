package directory

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file holds the line grammar shared by every text document
// (docs/spec/directory.md, "Common grammar"):
//
//	document = 1*line
//	line     = keyword *(SP argument) LF
//	keyword  = 1*(a-z / 0-9 / "-")
//	argument = 1*(%x21-7E)
//
// Only the bytes 0x20-0x7E and LF may appear; there are no empty lines, no
// leading, trailing or doubled spaces, and the last byte is LF.

// timeLayout is the one time format of every document: RFC 3339 in UTC
// with second precision.
const timeLayout = "2006-01-02T15:04:05Z"

// b64 is the one binary-to-text encoding of every document: standard
// base64 with padding, decoded strictly.
var (
	b64       = base64.StdEncoding
	b64strict = base64.StdEncoding.Strict()
)

// line is one parsed line of a document.
type line struct {
	kw    string
	args  []string
	start int // offset of the first byte of the line
	num   int // 1-based line number
}

// lineReader walks the lines of a document that passed checkBytes.
type lineReader struct {
	b      []byte
	off    int
	num    int
	peeked *line
}

// newLineReader checks the size and byte-level grammar of b.
func newLineReader(b []byte, max int) (*lineReader, error) {
	if len(b) > max {
		return nil, ErrTooLarge
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%w: missing final newline", ErrMalformed)
	}
	for i, c := range b {
		if c != '\n' && (c < 0x20 || c > 0x7e) {
			return nil, fmt.Errorf("%w: forbidden byte at offset %d", ErrMalformed, i)
		}
	}
	return &lineReader{b: b}, nil
}

// errAt wraps err with the position of l.
func errAt(err error, l line, format string, args ...any) error {
	return fmt.Errorf("%w: line %d (%.24s): %s", err, l.num, l.kw, fmt.Sprintf(format, args...))
}

// next returns the next line; ok is false at the end of the document.
func (r *lineReader) next() (l line, ok bool, err error) {
	if r.peeked != nil {
		l = *r.peeked
		r.peeked = nil
		return l, true, nil
	}
	if r.off >= len(r.b) {
		return line{}, false, nil
	}
	end := bytes.IndexByte(r.b[r.off:], '\n') // present: the document ends in LF
	s := string(r.b[r.off : r.off+end])
	r.num++
	l = line{start: r.off, num: r.num}
	r.off += end + 1
	if len(s) > MaxLineLength {
		return line{}, false, fmt.Errorf("%w: line %d too long", ErrMalformed, l.num)
	}
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' || strings.Contains(s, "  ") {
		return line{}, false, fmt.Errorf("%w: line %d: bad spacing", ErrMalformed, l.num)
	}
	fields := strings.Split(s, " ")
	l.kw, l.args = fields[0], fields[1:]
	for _, c := range []byte(l.kw) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return line{}, false, fmt.Errorf("%w: line %d: bad keyword", ErrMalformed, l.num)
		}
	}
	return l, true, nil
}

// peek returns the next line without consuming it.
func (r *lineReader) peek() (line, bool, error) {
	l, ok, err := r.next()
	if err != nil || !ok {
		return l, ok, err
	}
	r.peeked = &l
	return l, true, nil
}

// expect reads the next line and checks its keyword and argument count
// (nargs < 0 accepts any count).
func (r *lineReader) expect(kw string, nargs int) (line, error) {
	l, ok, err := r.next()
	if err != nil {
		return line{}, err
	}
	if !ok {
		return line{}, fmt.Errorf("%w: missing %q line", ErrMalformed, kw)
	}
	if l.kw != kw {
		return line{}, errAt(ErrMalformed, l, "expected %q", kw)
	}
	if nargs >= 0 && len(l.args) != nargs {
		return line{}, errAt(ErrMalformed, l, "want %d arguments, have %d", nargs, len(l.args))
	}
	return l, nil
}

// expectEnd fails unless the whole document has been read.
func (r *lineReader) expectEnd() error {
	l, ok, err := r.next()
	if err != nil {
		return err
	}
	if ok {
		return errAt(ErrMalformed, l, "trailing data")
	}
	return nil
}

// writer builds a document line by line.
type writer struct{ bytes.Buffer }

func (w *writer) line(kw string, args ...string) {
	w.WriteString(kw)
	for _, a := range args {
		w.WriteByte(' ')
		w.WriteString(a)
	}
	w.WriteByte('\n')
}

// decodeFixed decodes the base64 of exactly len(dst) bytes into dst.
func decodeFixed(dst []byte, s string) error {
	if len(s) != b64.EncodedLen(len(dst)) {
		return ErrInvalidField
	}
	// Decode needs room for DecodedLen bytes, which exceeds len(dst)
	// when the padding was replaced by data.
	tmp := make([]byte, b64.DecodedLen(len(s)))
	n, err := b64strict.Decode(tmp, []byte(s))
	if err != nil || n != len(dst) || b64.EncodeToString(tmp[:n]) != s {
		return ErrInvalidField
	}
	copy(dst, tmp[:n])
	return nil
}

// decodeVar decodes a base64 argument of at most max bytes, rejecting any
// non-canonical encoding.
func decodeVar(s string, max int) ([]byte, error) {
	if len(s) > b64.EncodedLen(max) {
		return nil, ErrInvalidField
	}
	out, err := b64strict.DecodeString(s)
	if err != nil || len(out) > max || b64.EncodeToString(out) != s {
		return nil, ErrInvalidField
	}
	return out, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// parseTime parses a canonical document time.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil || t.Format(timeLayout) != s {
		return time.Time{}, ErrInvalidField
	}
	return t, nil
}

// parseInt parses a canonical non-negative decimal integer <= max.
func parseInt(s string, max int64) (int64, error) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, ErrInvalidField
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, ErrInvalidField
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > max {
		return 0, ErrInvalidField
	}
	return v, nil
}

// signedMessage returns the message an Ed25519 signature covers: the
// domain-separation context, a NUL byte, then data.
func signedMessage(context string, data []byte) []byte {
	m := make([]byte, 0, len(context)+1+len(data))
	m = append(m, context...)
	m = append(m, 0)
	return append(m, data...)
}

// Signature contexts (docs/spec/directory.md, "Signatures"). Distinct
// contexts make a signature over one kind of document worthless as a
// signature over another.
const (
	contextDescriptor = "veil-descriptor-v1"
	contextVote       = "veil-vote-v1"
	contextConsensus  = "veil-consensus-v1"
)

// Digest is a SHA-256 digest of a document.
type Digest [sha256.Size]byte

// String returns the base64 form used in documents.
func (d Digest) String() string { return b64.EncodeToString(d[:]) }

// sha256Digest returns the SHA-256 digest of b.
func sha256Digest(b []byte) Digest { return sha256.Sum256(b) }
