package scenario

import (
	"path"
	"testing"
)

// FuzzParse: scenario files are bytes from disk. Parse never panics, and a
// scenario it accepts stays valid (defaults applied once more change
// nothing that Validate would refuse).
func FuzzParse(f *testing.F) {
	for _, name := range Builtins() {
		b, err := builtin.ReadFile(path.Join("builtin", name+".toml"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("name = \"x\"\nduration = \"-1s\"\n"))
	f.Add([]byte("[[events]]\nat = \"1m\"\naction = \"crash\"\nfraction = 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			if s != nil {
				t.Fatal("a refused scenario was returned")
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted, then invalid: %v", err)
		}
	})
}
