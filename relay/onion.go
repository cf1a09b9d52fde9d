package relay

import (
	"context"
	"time"

	"github.com/veilnet/veil/crypto"
)

// Onion key rotation (docs/spec/circuit.md §3): every OnionKeyRotation the
// relay makes a new onion key, publishes it in a new descriptor and keeps
// accepting the previous one for OnionKeyOverlap, long enough for every
// consensus that lists the old key to expire. Then the previous key is
// erased. With a DataDir the keys live in onion.key and onion.key.prev.

// initOnionKeys sets the key list from the config.
func (r *Relay) initOnionKeys() {
	now := r.cfg.Now()
	r.onionAt = r.cfg.OnionKeyCreated
	if r.onionAt.IsZero() || r.onionAt.After(now) {
		r.onionAt = now
	}
	keys := []*crypto.OnionKey{r.cfg.OnionKey}
	if p := r.cfg.PrevOnionKey; p != nil {
		r.prevAt = r.cfg.PrevOnionKeyRetired.Add(r.cfg.OnionKeyOverlap)
		if now.Before(r.prevAt) {
			keys = append(keys, p)
		}
	}
	r.onions.Store(&keys)
}

// onionKeys are the keys a CREATE may use, current first.
func (r *Relay) onionKeys() []*crypto.OnionKey { return *r.onions.Load() }

func (r *Relay) currentOnionKey() *crypto.OnionKey { return r.onionKeys()[0] }

// nextOnionEvent is when rotateOnion has something to do, or zero.
func (r *Relay) nextOnionEvent() time.Time {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	var t time.Time
	if r.cfg.OnionKeyRotation > 0 {
		t = r.onionAt.Add(r.cfg.OnionKeyRotation)
	}
	if len(r.onionKeys()) > 1 && (t.IsZero() || r.prevAt.Before(t)) {
		t = r.prevAt
	}
	return t
}

// rotateOnion rotates the onion key if it is due and drops the previous
// key once its overlap is over. It reports whether the descriptor changed.
func (r *Relay) rotateOnion(now time.Time) (bool, error) {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	keys := r.onionKeys()
	if len(keys) > 1 && !now.Before(r.prevAt) {
		keys = keys[:1]
		r.onions.Store(&keys)
		if r.cfg.DataDir != "" {
			if err := removePrevOnionFile(r.cfg.DataDir); err != nil {
				return false, err
			}
		}
		r.log.Info("previous onion key expired")
	}
	if r.cfg.OnionKeyRotation <= 0 || now.Before(r.onionAt.Add(r.cfg.OnionKeyRotation)) {
		return false, nil
	}
	next, err := crypto.GenerateOnionKey(r.cfg.Rand)
	if err != nil {
		return false, err
	}
	if r.cfg.DataDir != "" {
		if err := rotateOnionFiles(r.cfg.DataDir, next, now); err != nil {
			return false, err
		}
	}
	rotated := []*crypto.OnionKey{next, keys[0]}
	r.onions.Store(&rotated)
	r.onionAt, r.prevAt = now, now.Add(r.cfg.OnionKeyOverlap)
	r.metrics.OnionRotated.Inc()
	r.log.Info("onion key rotated", "previous_accepted_until", r.prevAt.UTC().Format(time.RFC3339))
	return true, nil
}

// rotateLoop runs rotateOnion on schedule until ctx is done.
func (r *Relay) rotateLoop(ctx context.Context) {
	for {
		at := r.nextOnionEvent()
		if at.IsZero() {
			return
		}
		t := time.NewTimer(max(at.Sub(r.cfg.Now()), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		changed, err := r.rotateOnion(r.cfg.Now())
		if err != nil {
			r.log.Error("onion key rotation failed; retrying in an hour", "err", err)
			t := time.NewTimer(time.Hour)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if changed {
			r.descriptorChanged()
		}
	}
}
