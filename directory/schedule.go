package directory

import (
	"fmt"
	"time"
)

// Schedule is the voting timetable every authority of a network must
// share (docs/spec/directory.md, "Voting schedule"). Rounds start at
// valid-after times VA that are multiples of Interval since the Unix
// epoch. For the round VA an authority
//
//	at VA - VoteDelay - SigDelay  makes its vote and sends it to its peers,
//	at VA - SigDelay              fetches missing votes, computes the
//	                              consensus, signs it, sends the signature,
//	at VA                         fetches missing signatures and publishes
//	                              the consensus if more than half signed.
//
// The consensus of round VA is fresh until VA+Interval and valid until
// VA+3*Interval.
type Schedule struct {
	Interval  time.Duration // whole seconds, 1s to 24h
	VoteDelay time.Duration // > 0
	SigDelay  time.Duration // > 0; VoteDelay+SigDelay < Interval
}

// Validate checks the schedule's ranges.
func (s Schedule) Validate() error {
	switch {
	case s.Interval < time.Second || s.Interval > 24*time.Hour || s.Interval%time.Second != 0:
		return fmt.Errorf("%w: interval must be whole seconds between 1s and 24h", ErrBadSchedule)
	case s.VoteDelay <= 0 || s.SigDelay <= 0:
		return fmt.Errorf("%w: delays must be positive", ErrBadSchedule)
	case s.VoteDelay+s.SigDelay >= s.Interval:
		return fmt.Errorf("%w: delays must add up to less than the interval", ErrBadSchedule)
	}
	return nil
}

// Aligned reports whether va is a round start (a multiple of Interval
// since the epoch, with no fraction of a second).
func (s Schedule) Aligned(va time.Time) bool {
	return va.Nanosecond() == 0 && va.Unix()%int64(s.Interval/time.Second) == 0
}

// NextRound returns the earliest round start VA whose vote time
// VA-VoteDelay-SigDelay is not before now: the first round an authority
// started at now can take part in fully.
func (s Schedule) NextRound(now time.Time) time.Time {
	n := now.Add(s.VoteDelay + s.SigDelay).UnixNano()
	iv := s.Interval.Nanoseconds()
	k := n / iv
	if n%iv > 0 {
		k++
	}
	return time.Unix(0, k*iv).UTC()
}

// VoteTime is when authorities make and send their votes for round va.
func (s Schedule) VoteTime(va time.Time) time.Time { return va.Add(-s.VoteDelay - s.SigDelay) }

// SigTime is when authorities compute and sign the consensus for round va.
func (s Schedule) SigTime(va time.Time) time.Time { return va.Add(-s.SigDelay) }

// FreshUntil is the fresh-until time of round va's consensus.
func (s Schedule) FreshUntil(va time.Time) time.Time { return va.Add(s.Interval) }

// ValidUntil is the valid-until time of round va's consensus.
func (s Schedule) ValidUntil(va time.Time) time.Time { return va.Add(3 * s.Interval) }

// inWindow reports whether a document for round va may be accepted at
// now: va is aligned and in [now-Interval, now+2*Interval].
func (s Schedule) inWindow(va, now time.Time) bool {
	return s.Aligned(va) && !va.Before(now.Add(-s.Interval)) && !va.After(now.Add(2*s.Interval))
}
