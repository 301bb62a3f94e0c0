package catalog

import (
	"fmt"
	"strings"
)

// RegionLabel is the target label that names the region a target's data
// lives in ("region": "eu"). A tenant with a residency constraint may live
// only on targets whose region is one of its regions; a target without the
// label is in no known region and takes no resident tenant.
const RegionLabel = "region"

// Region is the target's region (its RegionLabel label), "" when unknown.
func (t *Target) Region() string { return t.Labels[RegionLabel] }

// FormatRegions renders a residency list for messages: "[eu, eu2]".
func FormatRegions(regions []string) string {
	return "[" + strings.Join(regions, ", ") + "]"
}

// residencyProblems checks a residency list: every region a lowercase id
// (a DNS label, as target ids), none twice.
func residencyProblems(regions []string) []string {
	var errs []string
	seen := make(map[string]bool, len(regions))
	for _, r := range regions {
		switch {
		case !ValidID(r):
			errs = append(errs, fmt.Sprintf("residency: region %q must be a lowercase id (a-z, 0-9, '-', at most 63)", r))
		case seen[r]:
			errs = append(errs, fmt.Sprintf("residency: region %q is listed twice", r))
		}
		seen[r] = true
	}
	return errs
}
