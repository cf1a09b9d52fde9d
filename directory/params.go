package directory

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Consensus parameters (docs/spec/directory.md, "Parameters").
const (
	// MaxParams bounds the parameters of a vote or consensus.
	MaxParams = 64
	// MaxParamValue bounds a parameter's value.
	MaxParamValue = 1<<31 - 1
)

// Param is one consensus parameter: a name of 1-32 characters
// [a-z0-9_-] and a value in 0..MaxParamValue. Authorities propose them in
// their votes; the consensus takes those proposed by more than half of
// the voters, with the low median of their values.
type Param struct {
	Name  string
	Value int64
}

// Params is a list of parameters sorted by name, names distinct.
type Params []Param

// Get returns the value of the named parameter, or def if absent.
func (ps Params) Get(name string, def int64) int64 {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Name >= name })
	if i < len(ps) && ps[i].Name == name {
		return ps[i].Value
	}
	return def
}

func validParamName(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Validate checks names, values, order and count.
func (ps Params) Validate() error {
	if len(ps) > MaxParams {
		return fmt.Errorf("%w: too many parameters", ErrInvalidField)
	}
	for i, p := range ps {
		if !validParamName(p.Name) || p.Value < 0 || p.Value > MaxParamValue || i > 0 && ps[i-1].Name >= p.Name {
			return fmt.Errorf("%w: parameter", ErrInvalidField)
		}
	}
	return nil
}

// ParseParams parses "name=value" items (a configuration's or a
// document's), sorts them and validates them.
func ParseParams(items []string) (Params, error) {
	if len(items) > MaxParams {
		return nil, fmt.Errorf("%w: too many parameters", ErrInvalidField)
	}
	ps := make(Params, 0, len(items))
	for _, it := range items {
		name, val, ok := strings.Cut(it, "=")
		if !ok {
			return nil, fmt.Errorf("%w: parameter %q", ErrInvalidField, it)
		}
		v, err := parseInt(val, MaxParamValue)
		if err != nil {
			return nil, fmt.Errorf("%w: parameter value", ErrInvalidField)
		}
		ps = append(ps, Param{name, v})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	if err := ps.Validate(); err != nil {
		return nil, err
	}
	return ps, nil
}

// args returns the document form: one "name=value" per parameter.
func (ps Params) args() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name + "=" + strconv.FormatInt(p.Value, 10)
	}
	return out
}

// majorityParams returns the parameters proposed by more than half of
// the voters (len(lists)), each with the low median of the values
// proposed.
func majorityParams(lists []Params) Params {
	vals := map[string][]int64{}
	for _, ps := range lists {
		for _, p := range ps {
			vals[p.Name] = append(vals[p.Name], p.Value)
		}
	}
	var out Params
	for name, vs := range vals {
		if 2*len(vs) <= len(lists) {
			continue
		}
		sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
		out = append(out, Param{name, vs[(len(vs)-1)/2]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
