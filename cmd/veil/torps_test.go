package main

import (
	"slices"
	"testing"
)

func TestAnalysisArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		name string
		rest []string
		ok   bool
	}{
		{[]string{"--analysis", "torps", "--days", "3"}, "torps", []string{"--days", "3"}, true},
		{[]string{"-analysis=torps"}, "torps", []string{}, true},
		{[]string{"--scenario", "tiny"}, "", nil, false},
		{[]string{"--analysis"}, "", nil, false},
		{[]string{"analysis", "torps"}, "", nil, false},
		{nil, "", nil, false},
	} {
		name, rest, ok := analysisArgs(tc.args)
		if name != tc.name || ok != tc.ok || !slices.Equal(rest, tc.rest) {
			t.Errorf("%q: got %q %q %v", tc.args, name, rest, ok)
		}
	}
}
