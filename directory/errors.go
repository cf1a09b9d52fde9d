package directory

import (
	"errors"
	"time"
)

// Limits. Every parser checks its size limit before reading anything else.
const (
	// MaxDescriptorSize bounds a signed descriptor.
	MaxDescriptorSize = 16 << 10
	// MaxVoteSize bounds a signed vote.
	MaxVoteSize = 32 << 20
	// MaxConsensusSize bounds a consensus document with its signatures:
	// MaxRelays entries of about 2 KiB (the ML-KEM key is 1,580
	// characters) and 64 hybrid signature lines.
	MaxConsensusSize = 24 << 20
	// MaxSignatureSize bounds a detached consensus signature document
	// (room for a hybrid certificate and signature).
	MaxSignatureSize = 24 << 10
	// MaxNetworkSize bounds a network file (room for 32 ML-DSA keys).
	MaxNetworkSize = 256 << 10

	// MaxRelays bounds the relays an authority holds, a vote lists and a
	// consensus lists.
	MaxRelays = 8192
	// MaxAuthorities bounds the authorities in a network file.
	MaxAuthorities = 32
	// MaxConsensusSignatures bounds the signature lines of a consensus
	// (duplicates and unknown authorities included).
	MaxConsensusSignatures = 2 * MaxAuthorities
	// MaxPolicyRules bounds the rules of one exit policy (after the
	// "private" alias is expanded).
	MaxPolicyRules = 128
	// MaxFamily bounds the family members a descriptor declares.
	MaxFamily = 64
	// MaxExtraLines bounds a descriptor's non-critical extension lines.
	MaxExtraLines = 16
	// OnionKeyPQSize is the length of an ML-KEM-768 encapsulation key.
	OnionKeyPQSize = 1184

	// MaxBandwidth bounds an advertised bandwidth in bytes per second.
	MaxBandwidth = 1 << 40

	// MaxLineLength bounds one line of any document. The longest legal
	// line is a vote's "descriptor" line: the base64 of a descriptor of
	// at most MaxDescriptorSize bytes.
	MaxLineLength = 24 << 10
)

// Time windows (docs/spec/directory.md, "Times").
const (
	// MaxClockSkew is how far in the future a descriptor's published time
	// may be.
	MaxClockSkew = time.Hour
	// DescriptorLifetime is how long after its published time a descriptor
	// is accepted and voted on. Relays republish well before that.
	DescriptorLifetime = 48 * time.Hour
	// MaxConsensusLifetime bounds valid-until minus valid-after.
	MaxConsensusLifetime = 72 * time.Hour
)

// Sentinel errors. Wrapped errors add a line number and a keyword, never
// key material or addresses.
var (
	ErrTooLarge            = errors.New("directory: document too large")
	ErrMalformed           = errors.New("directory: malformed document")
	ErrNonCanonical        = errors.New("directory: document not in canonical form")
	ErrBadSignature        = errors.New("directory: bad signature")
	ErrDescriptorFuture    = errors.New("directory: descriptor published too far in the future")
	ErrDescriptorExpired   = errors.New("directory: descriptor too old")
	ErrInvalidField        = errors.New("directory: invalid field")
	ErrBadPolicy           = errors.New("directory: malformed exit policy")
	ErrWrongNetwork        = errors.New("directory: document is for another network")
	ErrUnknownAuthority    = errors.New("directory: unknown authority")
	ErrNotEnoughSignatures = errors.New("directory: not enough valid authority signatures")
	ErrNotYetValid         = errors.New("directory: consensus not yet valid")
	ErrExpired             = errors.New("directory: consensus expired")
	ErrNotEnoughVotes      = errors.New("directory: not enough votes for a consensus")
	ErrTooManyRelays       = errors.New("directory: too many relays")
	ErrBadSchedule         = errors.New("directory: invalid voting schedule")
	ErrWrongRound          = errors.New("directory: document is for a round not being held")
	ErrConflict            = errors.New("directory: conflicting document from the same authority")
	ErrStaleDescriptor     = errors.New("directory: descriptor older than the one held")
	ErrNoConsensus         = errors.New("directory: consensus not computed for this round")
	ErrCertNotYetValid     = errors.New("directory: authority certificate not yet valid")
	ErrCertExpired         = errors.New("directory: authority certificate expired")
)
