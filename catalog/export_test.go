package catalog

// snapshotFromTenants builds a snapshot the way the watcher does, from
// encoded buckets, without Consul: for benchmarks of the pure lookup path.
func snapshotFromTenants(tenants []Tenant, buckets int) (*Snapshot, error) {
	return snapshotWithPolicy(tenants, buckets, nil)
}

// snapshotWithPolicy is snapshotFromTenants enforcing policy's limits.
func snapshotWithPolicy(tenants []Tenant, buckets int, policy *PlanPolicy) (*Snapshot, error) {
	by := make([]map[string]*Tenant, buckets)
	for i := range tenants {
		b := BucketOf(tenants[i].ID, buckets)
		if by[b] == nil {
			by[b] = map[string]*Tenant{}
		}
		by[b][tenants[i].ID] = &tenants[i]
	}
	names := newNameTable()
	s := &Snapshot{buckets: make([]*bucketView, buckets), changed: make(chan struct{})}
	for b := range by {
		data, err := encodeBucket(1, by[b])
		if err != nil {
			return nil, err
		}
		v, err := decodeBucketView(data, names)
		if err != nil {
			return nil, err
		}
		s.buckets[b] = v
	}
	s.names = names.targets.list
	s.limitTables.index(policy, names)
	return s, nil
}
