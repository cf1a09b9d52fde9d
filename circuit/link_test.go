package circuit

import (
	"bytes"
	"testing"

	"github.com/flynn/noise"
)

// TestFrameRekey: both ends change keys after RekeyFrames frames without a
// message, keep interoperating across the change, and the new key is
// Noise's REKEY of the old one (checked against flynn/noise's CipherState).
func TestFrameRekey(t *testing.T) {
	key := [32]byte{1, 2, 3}
	send, _ := NewFrameCipher(key)
	recv, _ := NewFrameCipher(key)
	buf := make([]byte, FrameHeaderSize+CellSize+TagSize)
	for i := range RekeyFrames + 3 {
		buf[FrameHeaderSize] = byte(i)
		frame, err := send.SealFrame(buf, CellSize)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := recv.OpenFrame(frame[FrameHeaderSize:])
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if pt[0] != byte(i) {
			t.Fatalf("frame %d decrypted wrongly", i)
		}
	}
	if send.Rekeys != 1 || recv.Rekeys != 1 {
		t.Fatalf("rekeys %d/%d, want 1/1", send.Rekeys, recv.Rekeys)
	}
	cs := noise.UnsafeNewCipherState(noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashBLAKE2s), key, 0)
	cs.Rekey()
	if got := cs.UnsafeKey(); !bytes.Equal(got[:], send.key[:]) {
		t.Fatal("our rekey differs from Noise's REKEY")
	}
	// A receiver that missed a frame cannot follow.
	lost, _ := NewFrameCipher(key)
	frame, _ := send.SealFrame(buf, CellSize)
	if _, err := lost.OpenFrame(frame[FrameHeaderSize:]); err == nil {
		t.Fatal("out-of-step receiver opened a frame")
	}
}
