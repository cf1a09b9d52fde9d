package crypto

import (
	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// X25519 with one scalar multiplication per operation.
//
// golang.org/x/crypto/curve25519 now wraps crypto/ecdh, whose
// NewPrivateKey derives the public key on every call: each DH costs two
// multiplications, and a handshake twice what it should
// (DEPENDENCIES.md). Here a DH is one Montgomery ladder (RFC 7748 §5) over
// filippo.io/edwards25519's field arithmetic (the same assembly crypto/ecdh
// uses), and a public key is one fixed-base multiplication on the
// birationally equivalent Edwards curve, about three times faster than a
// ladder. Both are checked against crypto/ecdh in x25519_test.go.

// a24 is (486662 - 2) / 4, the ladder constant of Curve25519 (RFC 7748).
const a24 = 121665

// x25519 computes scalar · point (u-coordinates, RFC 7748) into dst.
func x25519(dst, scalar, point *[32]byte) {
	var k [32]byte
	copy(k[:], scalar[:])
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64

	var x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb field.Element
	x1.SetBytes(point[:]) // ignores the top bit, as RFC 7748 requires
	x2.One()
	z2.Zero()
	x3.Set(&x1)
	z3.One()
	swap := 0
	for t := 254; t >= 0; t-- {
		kt := int(k[t/8]>>(t%8)) & 1
		swap ^= kt
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = kt

		a.Add(&x2, &z2)
		aa.Square(&a)
		b.Subtract(&x2, &z2)
		bb.Square(&b)
		e.Subtract(&aa, &bb)
		c.Add(&x3, &z3)
		d.Subtract(&x3, &z3)
		da.Multiply(&d, &a)
		cb.Multiply(&c, &b)
		x3.Add(&da, &cb)
		x3.Square(&x3)
		z3.Subtract(&da, &cb)
		z3.Square(&z3)
		z3.Multiply(&x1, &z3)
		x2.Multiply(&aa, &bb)
		z2.Mult32(&e, a24)
		z2.Add(&aa, &z2)
		z2.Multiply(&e, &z2)
	}
	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)
	z2.Invert(&z2)
	x2.Multiply(&x2, &z2)
	copy(dst[:], x2.Bytes())
}

// x25519Base computes scalar · 9 (the public key of a private key).
func x25519Base(dst, scalar *[32]byte) {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(scalar[:])
	if err != nil {
		panic("crypto: 32-byte scalar refused") // cannot happen: the length is fixed
	}
	p := new(edwards25519.Point).ScalarBaseMult(s)
	copy(dst[:], p.BytesMontgomery())
}
