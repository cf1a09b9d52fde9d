package directory

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// WeightScale is the unit of bandwidth weights: 10000 means "all".
const WeightScale = 10000

// Weights tell clients which share of a relay's bandwidth to count when
// choosing it for a position (docs/spec/directory.md, "Bandwidth
// weights"), so that guard, middle and exit positions each get about a
// third of the network's capacity. Wxy is the weight, in units of
// 1/WeightScale, of a relay of class y in position x: positions g
// (guard), m (middle), e (exit); classes g (Guard, not exit), e (exit,
// not Guard), d (both), m (neither). "Exit" here means the Exit flag
// without BadExit. A relay of class m is only weighted in the middle
// (weight WeightScale); a guard-position pick considers only Guard relays
// and an exit-position pick only exits.
type Weights struct {
	Wgg, Wgd, Wee, Wed, Wmg, Wme, Wmd, Wmm int64
}

var weightNames = [...]string{"Wgg", "Wgd", "Wee", "Wed", "Wmg", "Wme", "Wmd", "Wmm"}

func (w *Weights) fields() [8]*int64 {
	return [8]*int64{&w.Wgg, &w.Wgd, &w.Wee, &w.Wed, &w.Wmg, &w.Wme, &w.Wmd, &w.Wmm}
}

// ForPosition returns the weight of r for position pos ('g', 'm' or
// 'e'), in units of 1/WeightScale; 0 if r does not fit the position.
func (w *Weights) ForPosition(r *RouterStatus, pos byte) int64 {
	guard := r.Flags.Has(FlagGuard)
	exit := r.Flags.Has(FlagExit) && !r.Flags.Has(FlagBadExit)
	switch pos {
	case 'g':
		switch {
		case guard && exit:
			return w.Wgd
		case guard:
			return w.Wgg
		}
	case 'e':
		switch {
		case guard && exit:
			return w.Wed
		case exit:
			return w.Wee
		}
	case 'm':
		switch {
		case guard && exit:
			return w.Wmd
		case guard:
			return w.Wmg
		case exit:
			return w.Wme
		default:
			return w.Wmm
		}
	}
	return 0
}

// computeWeights applies the weight rule to the relays of c:
//
//	T = G+E+D+M (bandwidth sums by class), S = T/3
//	fe = min(1, S/(E+D))           (1 if E+D = 0)
//	fg = min(1, S/(G+D*(1-fe)))    (1 if the divisor is 0)
//	Wee = Wed = fe;  Wgg = fg;  Wgd = fg*(1-fe)
//	Wmg = 1-fg;  Wme = 1-fe;  Wmd = (1-fe)*(1-fg);  Wmm = 1
//
// in integer units of 1/WeightScale, rounding down at each step: scarce
// exits are kept for exiting, then guards for guarding, and middles take
// the rest. Every class's weights over the positions it may take sum to
// at most WeightScale.
func computeWeights(c *Consensus) Weights {
	var g, e, d, m big.Int
	for i := range c.Relays {
		r := &c.Relays[i]
		bw := big.NewInt(r.Bandwidth)
		guard := r.Flags.Has(FlagGuard)
		exit := r.Flags.Has(FlagExit) && !r.Flags.Has(FlagBadExit)
		switch {
		case guard && exit:
			d.Add(&d, bw)
		case guard:
			g.Add(&g, bw)
		case exit:
			e.Add(&e, bw)
		default:
			m.Add(&m, bw)
		}
	}
	var t, s big.Int
	t.Add(&g, &e).Add(&t, &d).Add(&t, &m)
	s.Div(&t, big.NewInt(3))
	var ed big.Int
	ed.Add(&e, &d)
	fe := fraction(&s, &ed)
	// G + D*(1-fe), in units of 1/WeightScale.
	var gd, tmp big.Int
	gd.Mul(&g, big.NewInt(WeightScale))
	tmp.Mul(&d, big.NewInt(WeightScale-fe))
	gd.Add(&gd, &tmp)
	var s2 big.Int
	s2.Mul(&s, big.NewInt(WeightScale))
	fg := fraction(&s2, &gd)
	return Weights{
		Wee: fe, Wed: fe,
		Wgg: fg, Wgd: fg * (WeightScale - fe) / WeightScale,
		Wmg: WeightScale - fg, Wme: WeightScale - fe,
		Wmd: (WeightScale - fe) * (WeightScale - fg) / WeightScale,
		Wmm: WeightScale,
	}
}

// fraction returns min(WeightScale, floor(num*WeightScale/den)), and
// WeightScale when den is 0.
func fraction(num, den *big.Int) int64 {
	if den.Sign() == 0 {
		return WeightScale
	}
	var q big.Int
	q.Mul(num, big.NewInt(WeightScale)).Div(&q, den)
	if q.Cmp(big.NewInt(WeightScale)) >= 0 {
		return WeightScale
	}
	return q.Int64()
}

// args returns the document form "Wgg=N ... Wmm=N".
func (w Weights) args() []string {
	out := make([]string, len(weightNames))
	for i, p := range w.fields() {
		out[i] = weightNames[i] + "=" + strconv.FormatInt(*p, 10)
	}
	return out
}

// parseWeights parses the arguments of a "weights" line.
func parseWeights(args []string) (Weights, error) {
	var w Weights
	if len(args) != len(weightNames) {
		return w, ErrInvalidField
	}
	for i, p := range w.fields() {
		v, ok := strings.CutPrefix(args[i], weightNames[i]+"=")
		if !ok {
			return w, ErrInvalidField
		}
		n, err := parseInt(v, WeightScale)
		if err != nil {
			return w, err
		}
		*p = n
	}
	return w, nil
}

// validate checks every weight is in 0..WeightScale.
func (w Weights) validate() error {
	for _, p := range w.fields() {
		if *p < 0 || *p > WeightScale {
			return fmt.Errorf("%w: weights", ErrInvalidField)
		}
	}
	return nil
}
