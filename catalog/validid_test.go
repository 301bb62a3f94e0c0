package catalog

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// ValidID is hand-written for speed; it must agree with the documented
// pattern on every input.
func TestValidIDMatchesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	cases := []string{"", "a", "-", "a-", "-a", "a-b", "acme", "Acme", "a_b", "a.b", "0", "9-9",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a\n", "é", "a b", "a--b"}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "az09-_.A\x00é"
	for i := 0; i < 20000; i++ {
		n := rng.IntN(70)
		var b strings.Builder
		for j := 0; j < n; j++ {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := ValidID(c), pattern.MatchString(c); got != want {
			t.Fatalf("ValidID(%q) = %v, pattern says %v", c, got, want)
		}
	}
}
