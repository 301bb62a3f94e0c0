package catalog

import "testing"

// The layout is what a running installation has in Consul: a key that
// moves strands data written by the previous version.
func TestKeysLayout(t *testing.T) {
	k := NewKeys("sy/")
	cases := []struct{ got, want string }{
		{NewKeys("").Manifest(), "switchyard/tenants/manifest"},
		{k.Prefix(), "sy"},
		{k.Manifest(), "sy/tenants/manifest"},
		{k.Bucket(0x2a), "sy/tenants/b/002a"},
		{k.BucketGroup(0x2a), "sy/tenants/b/2a"},
		{k.Target("pg1"), "sy/config/targets/pg1"},
		{k.Policy(), "sy/config/policy"},
		{k.Idempotency(), "sy/idempotency/"},
		{k.ControllerLeader(), "sy/controller/leader"},
		{k.Offboard("acme"), "sy/offboard/acme"},
		{k.Audit("20260101T000000-ab"), "sy/audit/20260101T000000-ab"},
		{k.Move("m1"), "sy/moves/by-id/m1"},
		{k.ActiveMove("acme"), "sy/moves/active/acme"},
		{k.MoveLock("acme"), "sy/locks/moves/acme"},
		{k.Router("r1"), "sy/routers/r1"},
		{k.Freeze("acme"), "sy/freezes/acme"},
		{k.Ack("acme", "r1"), "sy/acks/acme/r1"},
		{k.RouterLoad("r1"), "sy/load/routers/r1"},
		{k.ByteLoad("pg1"), "sy/load/bytes/pg1"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}
