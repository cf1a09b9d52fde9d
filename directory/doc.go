// Package directory holds veil's directory protocol: relay descriptors,
// exit policies, authority certificates, votes, the consensus, detached
// consensus signatures, the network file, the authority's voting logic
// (flags, reachability bookkeeping, bandwidth weights) and the
// client-side consensus check. The byte-level specification is
// docs/spec/directory.md.
//
// The package is sans-IO: it never imports net, starts no goroutines,
// never sleeps and never reads the clock. Time is an argument; the
// drivers are relay/authority (authorities), relay/dircache (caches) and
// internal/dirclient (transport and the client's Manager). Package
// directory/dirtest simulates a whole directory in virtual time.
//
// Every document is ASCII text, one "keyword arg arg\n" per line, in a
// fixed order, with exactly one accepted spelling of each content (the
// parsers re-encode and compare). Signatures cover a per-document
// context string, a NUL byte and the signed bytes; authority signatures
// are Ed25519, or hybrid Ed25519 + ML-DSA-65 (both must verify):
//
//	descriptor  veil-descriptor 1 ... | signature S
//	            S = Sign(relay identity, "veil-descriptor-v1" 0x00 body)
//	certificate veil-authority-cert 1, identity, signing-key(s), times
//	            | signature S [signature-pq P], by the identity key(s)
//	vote        veil-vote 1, cert, ..., (descriptor, flags)* | signature
//	            by the certified signing key, "veil-vote-v1" 0x00 body
//	consensus   veil-consensus 1 ... relay entries* | signature CERT S [P]
//	            (1..64), S = Sign(signing key, "veil-consensus-v1" 0x00
//	            SHA-256(body))
//	detached    veil-consensus-signature 1, network, valid-after,
//	            digest, cert, signature (same S as above)
//
// where body is every byte before the first signature line.
//
// Trust flows from the network file (ParseNetwork): VerifyConsensus
// accepts a consensus only with valid signatures from more than half of
// the authorities it lists, each under a signing key certified by the
// authority's identity key and unexpired, and only between valid-after
// and valid-until.
package directory
