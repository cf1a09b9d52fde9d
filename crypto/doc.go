// Package crypto holds veil's key types, key files and the Noise
// configuration shared by the link and circuit handshakes.
//
// It is the leaf of veil's import graph: it never imports net, starts no
// goroutines and never reads the clock. Randomness is always an io.Reader
// argument so handshakes and keys are reproducible in tests.
package crypto
