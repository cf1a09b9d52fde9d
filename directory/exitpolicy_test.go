package directory

import (
	"errors"
	"net/netip"
	"testing"
)

func TestExitPolicyAllows(t *testing.T) {
	type probe struct {
		addr string
		port uint16
		want bool
	}
	tests := []struct {
		policy string
		probes []probe
	}{
		{"accept *:80, reject *:*", []probe{
			{"1.2.3.4", 80, true}, {"1.2.3.4", 81, false}, {"2001:db8::1", 80, true}, {"::ffff:1.2.3.4", 80, true},
		}},
		{"reject 10.0.0.0/8:*, accept *:*", []probe{
			{"10.1.2.3", 80, false}, {"11.1.2.3", 80, true}, {"::ffff:10.0.0.1", 22, false}, {"1.2.3.4", 0, false},
		}},
		{"accept [::]/0:443", []probe{
			{"2001:db8::1", 443, true}, {"1.2.3.4", 443, false}, {"2001:db8::1", 80, false},
		}},
		{"accept *:1-65535", []probe{{"8.8.8.8", 1, true}, {"8.8.8.8", 65535, true}, {"::1", 22, true}}},
		{"accept 192.0.2.7:20-22, reject *:*", []probe{
			{"192.0.2.7", 19, false}, {"192.0.2.7", 20, true}, {"192.0.2.7", 22, true}, {"192.0.2.8", 21, false},
		}},
		{"reject private:*, accept *:*", []probe{
			{"127.0.0.1", 80, false}, {"192.168.1.1", 80, false}, {"fe80::1", 80, false}, {"::1", 80, false},
			{"1.1.1.1", 80, true}, {"2606:4700::1111", 80, true},
		}},
		{"accept *4:*", []probe{{"1.2.3.4", 5, true}, {"2001:db8::1", 5, false}}},
		{"", []probe{{"1.2.3.4", 80, false}}},
	}
	for _, tc := range tests {
		p, err := ParseExitPolicy(tc.policy)
		if err != nil {
			t.Fatalf("ParseExitPolicy(%q): %v", tc.policy, err)
		}
		for _, pr := range tc.probes {
			if got := p.Allows(netip.MustParseAddr(pr.addr), pr.port); got != pr.want {
				t.Errorf("%q.Allows(%s, %d) = %v, want %v", tc.policy, pr.addr, pr.port, got, pr.want)
			}
		}
	}
	var nilPolicy *ExitPolicy
	if nilPolicy.Allows(netip.MustParseAddr("1.2.3.4"), 80) {
		t.Error("nil policy allowed a connection")
	}
	if RejectAllPolicy().Allows(netip.MustParseAddr("1.2.3.4"), 80) {
		t.Error("reject *:* allowed a connection")
	}
}

func TestExitPolicyAllowsPortAndIsExit(t *testing.T) {
	tests := []struct {
		policy string
		ports  map[uint16]bool
		exit   bool
	}{
		{"reject *:*", map[uint16]bool{80: false, 443: false}, false},
		{"accept *:80, reject *:*", map[uint16]bool{80: true, 443: false}, true},
		{"reject 10.0.0.0/8:*, accept *:443, reject *:*", map[uint16]bool{443: true, 80: false}, true},
		{"reject *4:80, reject *6:80, accept *:80", map[uint16]bool{80: false}, false},
		{"reject *4:80, accept *:80", map[uint16]bool{80: true}, true},
		{"reject *4:*, accept 1.2.3.4:*", map[uint16]bool{80: false}, false},
		{"reject *:1-1000, accept *:*", map[uint16]bool{80: false, 1000: false, 1001: true, 65535: true}, true},
		{"accept *:65535", map[uint16]bool{65535: true, 65534: false}, true},
		{"", map[uint16]bool{80: false}, false},
	}
	for _, tc := range tests {
		p, err := ParseExitPolicy(tc.policy)
		if err != nil {
			t.Fatalf("ParseExitPolicy(%q): %v", tc.policy, err)
		}
		for port, want := range tc.ports {
			if got := p.AllowsPort(port); got != want {
				t.Errorf("%q.AllowsPort(%d) = %v, want %v", tc.policy, port, got, want)
			}
		}
		if got := p.IsExit(); got != tc.exit {
			t.Errorf("%q.IsExit() = %v, want %v", tc.policy, got, tc.exit)
		}
	}
}

func TestExitPolicyParse(t *testing.T) {
	canonical := map[string]string{
		"accept *:80":                  "accept *:80",
		"accept *:1-65535":             "accept *:*",
		"accept [::]/0:443":            "accept *6:443",
		"accept 0.0.0.0/0:443":         "accept *4:443",
		"reject 10.0.0.0/8:*":          "reject 10.0.0.0/8:*",
		"accept 1.2.3.4/32:80-80":      "accept 1.2.3.4:80",
		"accept [2001:DB8::]/32:22":    "accept [2001:db8::]/32:22",
		"  accept *:80 ,\n reject *:*": "accept *:80, reject *:*",
	}
	for in, want := range canonical {
		p, err := ParseExitPolicy(in)
		if err != nil {
			t.Errorf("ParseExitPolicy(%q): %v", in, err)
			continue
		}
		if p.String() != want {
			t.Errorf("ParseExitPolicy(%q).String() = %q, want %q", in, p.String(), want)
		}
		back, err := ParseExitPolicy(p.String())
		if err != nil || !back.Equal(p) {
			t.Errorf("%q did not round-trip: %v", want, err)
		}
	}
	bad := []string{
		"allow *:80", "accept", "accept *", "accept *:0", "accept *:80-79", "accept *:65536",
		"accept 10.0.0.1/8:*", "accept 1.2.3.4/33:*", "accept [1.2.3.4]:80", "accept ::1:80",
		"accept [::ffff:1.2.3.4]:80", "accept [fe80::1%eth0]:80", "accept *:080", "accept *:-1",
		"accept 1.2.3.4/08:80", "accept *5:80", "accept *:80 reject *:*",
	}
	for _, in := range bad {
		if _, err := ParseExitPolicy(in); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("ParseExitPolicy(%q) = %v, want ErrBadPolicy", in, err)
		}
	}
	many := ""
	for i := 0; i < 13; i++ {
		many += "reject private:*, "
	}
	if _, err := ParseExitPolicy(many); !errors.Is(err, ErrBadPolicy) {
		t.Errorf("policy of %d rules accepted: %v", 13*len(privatePrefixes), err)
	}
}
