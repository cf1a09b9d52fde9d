package directory

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// An ExitPolicy is an ordered list of accept/reject rules in Tor's syntax
// (docs/spec/directory.md, "Exit policies"). The first rule that matches
// an address and port decides; if none matches, the connection is
// refused. The zero ExitPolicy (and a nil *ExitPolicy) refuses everything.
//
// An ExitPolicy is immutable once parsed and safe for concurrent use.
type ExitPolicy struct {
	rules []PolicyRule
}

// PolicyRule is one rule of an exit policy.
type PolicyRule struct {
	Accept bool
	// Any is true for the address pattern "*" (every IPv4 and IPv6
	// address); otherwise Prefix holds the range ("*4" is 0.0.0.0/0 and
	// "*6" is ::/0).
	Any    bool
	Prefix netip.Prefix
	// LoPort and HiPort bound the port range, 1 <= LoPort <= HiPort.
	LoPort, HiPort uint16
}

// privatePrefixes are what the "private" alias expands to, in order.
var privatePrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::/127"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// RejectAllPolicy returns the policy of a relay that is not an exit:
// "reject *:*".
func RejectAllPolicy() *ExitPolicy {
	return &ExitPolicy{rules: []PolicyRule{{Accept: false, Any: true, LoPort: 1, HiPort: 65535}}}
}

// ParseExitPolicy parses rules separated by commas or newlines, e.g.
// "accept *:80, accept *:443, reject *:*". Space and tab around each rule
// are ignored, as are empty items. The result has at most MaxPolicyRules
// rules after "private" is expanded; an input with no rules gives the
// empty policy, which refuses everything.
func ParseExitPolicy(s string) (*ExitPolicy, error) {
	if len(s) > 16<<10 {
		return nil, fmt.Errorf("%w: too long", ErrBadPolicy)
	}
	items := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' })
	return ParseExitPolicyLines(items)
}

// ParseExitPolicyLines parses one rule per element; surrounding space and
// tab are ignored and empty elements skipped.
func ParseExitPolicyLines(lines []string) (*ExitPolicy, error) {
	p := &ExitPolicy{}
	for _, l := range lines {
		l = strings.Trim(l, " \t\r")
		if l == "" {
			continue
		}
		rules, err := parseRule(l)
		if err != nil {
			return nil, err
		}
		if len(p.rules)+len(rules) > MaxPolicyRules {
			return nil, fmt.Errorf("%w: more than %d rules", ErrBadPolicy, MaxPolicyRules)
		}
		p.rules = append(p.rules, rules...)
	}
	return p, nil
}

// parseRule parses "accept|reject SP address:ports"; it returns several
// rules for the "private" alias.
func parseRule(s string) ([]PolicyRule, error) {
	action, target, ok := strings.Cut(s, " ")
	if !ok {
		return nil, fmt.Errorf("%w: missing target", ErrBadPolicy)
	}
	var r PolicyRule
	switch action {
	case "accept":
		r.Accept = true
	case "reject":
	default:
		return nil, fmt.Errorf("%w: unknown action", ErrBadPolicy)
	}
	i := strings.LastIndexByte(target, ':')
	if i < 0 {
		return nil, fmt.Errorf("%w: missing port", ErrBadPolicy)
	}
	addr, ports := target[:i], target[i+1:]
	var err error
	if r.LoPort, r.HiPort, err = parsePorts(ports); err != nil {
		return nil, err
	}
	switch addr {
	case "*":
		r.Any = true
		return []PolicyRule{r}, nil
	case "*4":
		r.Prefix = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		return []PolicyRule{r}, nil
	case "*6":
		r.Prefix = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		return []PolicyRule{r}, nil
	case "private":
		out := make([]PolicyRule, len(privatePrefixes))
		for j, pfx := range privatePrefixes {
			out[j] = r
			out[j].Prefix = pfx
		}
		return out, nil
	}
	if r.Prefix, err = parsePolicyPrefix(addr); err != nil {
		return nil, err
	}
	return []PolicyRule{r}, nil
}

// parsePolicyPrefix parses "a.b.c.d", "a.b.c.d/n", "[v6]" or "[v6]/n".
// Host bits beyond the prefix length must be zero; IPv4-mapped IPv6
// addresses and zones are refused.
func parsePolicyPrefix(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%w: bad address", ErrBadPolicy)
	host, bitsStr, hasBits := strings.Cut(s, "/")
	v6 := strings.HasPrefix(host, "[")
	if v6 {
		if len(host) < 2 || host[len(host)-1] != ']' {
			return netip.Prefix{}, bad
		}
		host = host[1 : len(host)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" || a.Is4() == v6 || a.Is4In6() {
		return netip.Prefix{}, bad
	}
	bits := a.BitLen()
	if hasBits {
		n, err := parseInt(bitsStr, int64(a.BitLen()))
		if err != nil {
			return netip.Prefix{}, bad
		}
		bits = int(n)
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w: address has bits set beyond its prefix length", ErrBadPolicy)
	}
	return p, nil
}

// parsePorts parses "*", "N" or "N-M" with 1 <= N <= M <= 65535.
func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "*" {
		return 1, 65535, nil
	}
	loS, hiS, isRange := strings.Cut(s, "-")
	if !isRange {
		hiS = loS
	}
	l, err1 := parseInt(loS, 65535)
	h, err2 := parseInt(hiS, 65535)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return 0, 0, fmt.Errorf("%w: bad port range", ErrBadPolicy)
	}
	return uint16(l), uint16(h), nil
}

// Rules returns a copy of the rules in order.
func (p *ExitPolicy) Rules() []PolicyRule {
	if p == nil {
		return nil
	}
	return append([]PolicyRule(nil), p.rules...)
}

// Allows reports whether the policy lets an exit connect to addr:port.
// IPv4-mapped IPv6 addresses are checked as IPv4; an invalid address, an
// address with a zone, or port 0 is refused.
func (p *ExitPolicy) Allows(addr netip.Addr, port uint16) bool {
	if p == nil || !addr.IsValid() || addr.Zone() != "" || port == 0 {
		return false
	}
	addr = addr.Unmap()
	for _, r := range p.rules {
		if port < r.LoPort || port > r.HiPort {
			continue
		}
		if r.Any || r.Prefix.Contains(addr) {
			return r.Accept
		}
	}
	return false
}

// AllowsPort reports whether some address might be allowed on port: true
// if an accept rule covering port comes before the rules covering port
// reject every IPv4 and every IPv6 address. Clients use it to pick an
// exit before they know the destination's address.
func (p *ExitPolicy) AllowsPort(port uint16) bool {
	if p == nil || port == 0 {
		return false
	}
	v4Closed, v6Closed := false, false
	for _, r := range p.rules {
		if port < r.LoPort || port > r.HiPort {
			continue
		}
		is4 := !r.Any && r.Prefix.Addr().Is4()
		is6 := !r.Any && !is4
		if r.Accept {
			if (r.Any && !(v4Closed && v6Closed)) || (is4 && !v4Closed) || (is6 && !v6Closed) {
				return true
			}
			continue
		}
		if r.Any || r.Prefix.Bits() == 0 {
			v4Closed = v4Closed || r.Any || is4
			v6Closed = v6Closed || r.Any || is6
			if v4Closed && v6Closed {
				return false
			}
		}
	}
	return false
}

// IsExit reports whether AllowsPort holds for at least one port. It is
// the rule for the consensus Exit flag in this version of the protocol.
func (p *ExitPolicy) IsExit() bool {
	if p == nil {
		return false
	}
	// AllowsPort is constant between rule boundaries, so testing the
	// first port of every segment is exhaustive.
	candidates := []uint16{1}
	for _, r := range p.rules {
		candidates = append(candidates, r.LoPort)
		if r.HiPort < 65535 {
			candidates = append(candidates, r.HiPort+1)
		}
	}
	for _, port := range candidates {
		if p.AllowsPort(port) {
			return true
		}
	}
	return false
}

// String returns the canonical form: rules joined by ", ". It parses back
// to an equal policy with ParseExitPolicy.
func (p *ExitPolicy) String() string {
	if p == nil {
		return ""
	}
	parts := make([]string, len(p.rules))
	for i, r := range p.rules {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// Equal reports whether p and q have the same rules in the same order.
func (p *ExitPolicy) Equal(q *ExitPolicy) bool {
	if p == nil || q == nil {
		return p == q
	}
	if len(p.rules) != len(q.rules) {
		return false
	}
	for i := range p.rules {
		if p.rules[i] != q.rules[i] {
			return false
		}
	}
	return true
}

// String returns the canonical form of one rule, as it appears on a
// document line: "accept 10.0.0.0/8:80-88".
func (r PolicyRule) String() string {
	var b strings.Builder
	if r.Accept {
		b.WriteString("accept ")
	} else {
		b.WriteString("reject ")
	}
	switch {
	case r.Any:
		b.WriteString("*")
	case r.Prefix.Bits() == 0 && r.Prefix.Addr().Is4():
		b.WriteString("*4")
	case r.Prefix.Bits() == 0:
		b.WriteString("*6")
	case r.Prefix.Addr().Is4():
		b.WriteString(r.Prefix.Addr().String())
		if r.Prefix.Bits() != 32 {
			b.WriteString("/" + strconv.Itoa(r.Prefix.Bits()))
		}
	default:
		b.WriteString("[" + r.Prefix.Addr().String() + "]")
		if r.Prefix.Bits() != 128 {
			b.WriteString("/" + strconv.Itoa(r.Prefix.Bits()))
		}
	}
	b.WriteByte(':')
	switch {
	case r.LoPort == 1 && r.HiPort == 65535:
		b.WriteString("*")
	case r.LoPort == r.HiPort:
		b.WriteString(strconv.Itoa(int(r.LoPort)))
	default:
		b.WriteString(strconv.Itoa(int(r.LoPort)) + "-" + strconv.Itoa(int(r.HiPort)))
	}
	return b.String()
}

// policyLines returns the document lines of p; an empty or nil policy is
// written as "reject *:*" so that every document lists at least one rule.
func (p *ExitPolicy) policyLines() []PolicyRule {
	if p == nil || len(p.rules) == 0 {
		return RejectAllPolicy().rules
	}
	return p.rules
}

// parsePolicyLine parses one document line whose keyword is accept or
// reject, requiring the canonical form of a single rule.
func parsePolicyLine(l line) (PolicyRule, error) {
	if len(l.args) != 1 {
		return PolicyRule{}, errAt(ErrMalformed, l, "policy rule takes one argument")
	}
	rules, err := parseRule(l.kw + " " + l.args[0])
	if err != nil {
		return PolicyRule{}, errAt(ErrMalformed, l, "%v", err)
	}
	if len(rules) != 1 || rules[0].String() != l.kw+" "+l.args[0] {
		return PolicyRule{}, errAt(ErrNonCanonical, l, "policy rule")
	}
	return rules[0], nil
}

// readPolicy reads the run of accept/reject lines at the reader's
// position; there must be at least one.
func readPolicy(r *lineReader) (*ExitPolicy, error) {
	p := &ExitPolicy{}
	for {
		l, ok, err := r.peek()
		if err != nil {
			return nil, err
		}
		if !ok || (l.kw != "accept" && l.kw != "reject") {
			break
		}
		r.peeked = nil
		if len(p.rules) == MaxPolicyRules {
			return nil, errAt(ErrMalformed, l, "more than %d policy rules", MaxPolicyRules)
		}
		rule, err := parsePolicyLine(l)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, rule)
	}
	if len(p.rules) == 0 {
		return nil, fmt.Errorf("%w: missing exit policy", ErrMalformed)
	}
	return p, nil
}

// writePolicy writes the policy lines of p.
func writePolicy(w *writer, p *ExitPolicy) {
	for _, r := range p.policyLines() {
		w.WriteString(r.String())
		w.WriteByte('\n')
	}
}
