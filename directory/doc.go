// Package directory holds veil's directory protocol: relay descriptors,
// exit policies, authority votes, the consensus, detached consensus
// signatures, the network file, the authority's voting logic and the
// client-side consensus check. The byte-level specification is
// docs/spec/directory.md.
//
// The package is sans-IO: it never imports net, starts no goroutines,
// never sleeps and never reads the clock. Time is an argument; the driver
// is relay/authority (authorities) and internal/dirclient (transport).
//
// Every document is ASCII text, one "keyword arg arg\n" per line, in a
// fixed order, with exactly one accepted spelling of each content (the
// parsers re-encode and compare). Signatures are Ed25519 over a
// per-document context string, a NUL byte and the signed bytes:
//
//	descriptor  veil-descriptor 1 ... accept/reject ... | signature S
//	            S = Sign(relay, "veil-descriptor-v1" 0x00 body)
//	vote        veil-vote 1 ... descriptor <base64>* | signature S
//	            S = Sign(authority, "veil-vote-v1" 0x00 body)
//	consensus   veil-consensus 1 ... relay entries* | signature A S (1..64)
//	            S = Sign(A, "veil-consensus-v1" 0x00 SHA-256(body))
//	detached    veil-consensus-signature 1, network, valid-after,
//	            digest, authority A, signature S (same S as above)
//
// where body is every byte before the first signature line.
//
// Trust flows from the network file (ParseNetwork): VerifyConsensus
// accepts a consensus only with valid signatures from more than half of
// the authorities it lists, and only between valid-after and
// valid-until.
package directory
