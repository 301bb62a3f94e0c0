package catalog

// ResidentIn reports whether region is one the tenant's data may live in:
// true when the tenant has no residency constraint or lists region.
func (t *Tenant) ResidentIn(region string) bool {
	if len(t.Residency) == 0 {
		return true
	}
	for _, r := range t.Residency {
		if r == region {
			return true
		}
	}
	return false
}
