package authority

import (
	"context"
	"sync"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/relay/dircache"
)

// peers returns the indexes of the other authorities.
func (a *Authority) peers() []int {
	var out []int
	for i := range a.cfg.Network.Authorities {
		if i != a.self {
			out = append(out, i)
		}
	}
	return out
}

// eachPeer runs f for every other authority concurrently and waits.
func (a *Authority) eachPeer(f func(i int, info directory.AuthorityInfo)) {
	var wg sync.WaitGroup
	for _, i := range a.peers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, a.cfg.Network.Authorities[i])
		}()
	}
	wg.Wait()
}

// voteStep makes this authority's vote for round va, dated at (which
// may not be after va), and sends it to every peer, giving up on peers
// that have not taken it by sendBy.
func (a *Authority) voteStep(ctx context.Context, va, at, sendBy time.Time) {
	a.mu.Lock()
	vote, err := a.core.MakeVote(va, at)
	n := a.core.Descriptors()
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("cannot make vote", "valid_after", va, "err", err)
		return
	}
	a.log.Debug("voting", "valid_after", va, "descriptors", n)
	pctx, cancel := a.until(ctx, sendBy)
	defer cancel()
	a.eachPeer(func(_ int, p directory.AuthorityInfo) {
		if err := a.client.PostVote(pctx, p.Address, vote); err != nil {
			a.log.Warn("peer did not take our vote", "peer", p.Name, "err", err)
		}
	})
}

// sigStep fetches the votes still missing, computes and signs the
// consensus of round va, and sends the signature to every peer, giving up
// on peers that have not taken it by sendBy.
func (a *Authority) sigStep(ctx context.Context, va, sendBy time.Time) {
	fctx, fcancel := a.until(ctx, a.now().Add(a.sched.SigDelay/2))
	a.fetchMissing(fctx, va, true)
	fcancel()

	a.mu.Lock()
	sig, err := a.core.SignConsensus(va)
	var relays int
	if c := a.core.Consensus(va); c != nil {
		relays = len(c.Relays)
	}
	missing := len(a.core.MissingVotes(va))
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("cannot compute consensus", "valid_after", va, "missing_votes", missing, "err", err)
		return
	}
	a.log.Debug("signed consensus", "valid_after", va, "relays", relays, "missing_votes", missing)
	pctx, cancel := a.until(ctx, sendBy)
	defer cancel()
	a.eachPeer(func(_ int, p directory.AuthorityInfo) {
		if err := a.client.PostSignature(pctx, p.Address, sig); err != nil {
			a.log.Warn("peer did not take our signature", "peer", p.Name, "err", err)
		}
	})
}

// publishStep fetches the signatures still missing and publishes round
// va's consensus if more than half of the authorities signed it.
func (a *Authority) publishStep(ctx context.Context, va time.Time) {
	fctx, cancel := a.until(ctx, a.now().Add(a.sched.SigDelay/2))
	a.fetchMissing(fctx, va, false)
	cancel()
	if err := a.tryPublish(va); err != nil {
		a.log.Warn("no consensus this round", "valid_after", va, "err", err)
	}
	a.mu.Lock()
	a.roundsDone++
	a.mu.Unlock()
}

// tryPublish assembles round va's consensus and serves it if it has a
// majority of signatures and is newer than, or has more signatures than,
// the one served. It never publishes before va.
func (a *Authority) tryPublish(va time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.now().Before(va) {
		return nil
	}
	doc, n, err := a.core.Assemble(va)
	if err != nil {
		return err
	}
	if va.Before(a.publishedVA) || (va.Equal(a.publishedVA) && n <= a.publishedSigs) {
		return nil
	}
	// Check what we serve exactly as clients will.
	c, err := directory.VerifyConsensus(doc, a.cfg.Network, a.now())
	if err != nil {
		return err
	}
	a.published, a.publishedVA, a.publishedVU, a.publishedSigs = doc, c.ValidAfter, c.ValidUntil, n
	a.publishedDoc = dircache.NewDocument(doc, c.ValidUntil)
	a.log.Info("published consensus", "valid_after", va, "relays", len(c.Relays), "signatures", n)
	return nil
}

// fetchMissing asks every peer for the votes (or signatures) of round va
// this authority lacks, until ctx ends or none is missing.
func (a *Authority) fetchMissing(ctx context.Context, va time.Time, votes bool) {
	missing := func() []int {
		a.mu.Lock()
		defer a.mu.Unlock()
		if votes {
			return a.core.MissingVotes(va)
		}
		return a.core.MissingSignatures(va)
	}
	if len(missing()) == 0 {
		return
	}
	a.eachPeer(func(_ int, p directory.AuthorityInfo) {
		for _, m := range missing() {
			if ctx.Err() != nil || m == a.self {
				continue
			}
			id := a.cfg.Network.Authorities[m].Identity
			var raw []byte
			var err error
			if votes {
				raw, err = a.client.FetchVote(ctx, p.Address, va, id)
			} else {
				raw, err = a.client.FetchSignature(ctx, p.Address, va, id)
			}
			if err != nil {
				continue
			}
			a.mu.Lock()
			if votes {
				_, err = a.core.AddVote(raw, a.now())
			} else {
				_, err = a.core.AddSignature(raw, a.now())
			}
			a.mu.Unlock()
			if err != nil {
				a.log.Debug("fetched document rejected", "peer", p.Name, "err", err)
			}
		}
	})
}
