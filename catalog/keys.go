package catalog

import (
	"fmt"
	"strings"
)

// Keys is Switchyard's Consul KV layout: every key any package reads or
// writes is built here, under one prefix (DefaultPrefix by default).
//
//	<prefix>/tenants/manifest               the version of every bucket (routers watch it)
//	<prefix>/tenants/b/<bucket, 4 hex>      the tenants of one bucket
//	<prefix>/config/targets/<target>        a storage target
//	<prefix>/config/policy                  the placement policy
//	<prefix>/idempotency/<namespace>/<hash> the controller's idempotency records
//	<prefix>/controller/leader              the controller's leader lock
//	<prefix>/offboard/<tenant>              an offboarded tenant awaiting removal
//	<prefix>/audit/<time>-<random>          the control API's audit log
//	<prefix>/moves/by-id/<move>             a move's record
//	<prefix>/moves/active/<tenant>          the tenant's move in progress
//	<prefix>/locks/moves/<tenant>           the lock of the tenant's move runner
//	<prefix>/domains/<domain>               a tenant's custom domain (domains.go)
//
// and the cutover coordination between migrators and routers (see
// coordination.go), whose router keys are held by each router's session:
//
//	<prefix>/routers/<router>               a live router
//	<prefix>/freezes/<tenant>               a cutover in progress
//	<prefix>/acks/<tenant>/<router>         a router's acknowledgement of it
//	<prefix>/load/routers/<router>          a router's request rates per tenant
//	<prefix>/load/bytes/<target>            the tenants' data sizes on a target
type Keys struct{ prefix string }

// NewKeys returns the layout under prefix (DefaultPrefix if empty).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: strings.TrimSuffix(prefix, "/")}
}

// Prefix is the prefix every key is under, without a trailing slash.
func (k Keys) Prefix() string { return k.prefix }

// Manifest is the catalog manifest's key.
func (k Keys) Manifest() string { return k.prefix + "/tenants/manifest" }

// Buckets is the prefix of every tenant bucket.
func (k Keys) Buckets() string { return k.prefix + "/tenants/b/" }

// Bucket is the key of tenant bucket b.
func (k Keys) Bucket(b int) string { return fmt.Sprintf("%s%04x", k.Buckets(), b) }

// BucketGroup is the prefix of the 256 buckets whose keys share their first
// two hex digits g (bucket>>8).
func (k Keys) BucketGroup(g int) string { return fmt.Sprintf("%s%02x", k.Buckets(), g) }

// Config is the prefix of the catalog's configuration (targets, policy).
func (k Keys) Config() string { return k.prefix + "/config/" }

// Targets is the prefix of every target.
func (k Keys) Targets() string { return k.Config() + "targets/" }

// Target is the key of a target.
func (k Keys) Target(id string) string { return k.Targets() + id }

// Policy is the placement policy's key.
func (k Keys) Policy() string { return k.Config() + "policy" }

// Idempotency is the prefix of the controller's idempotency records:
// <prefix>/idempotency/<namespace>/<SHA-256 of the key, hex>.
func (k Keys) Idempotency() string { return k.prefix + "/idempotency/" }

// ControllerLeader is the key of the controller replicas' leader lock.
func (k Keys) ControllerLeader() string { return k.prefix + "/controller/leader" }

// Offboards is the prefix of the offboarded tenants awaiting removal.
func (k Keys) Offboards() string { return k.prefix + "/offboard/" }

// Offboard is the key of an offboarded tenant's removal schedule.
func (k Keys) Offboard(tenant string) string { return k.Offboards() + tenant }

// Audits is the prefix of the audit log.
func (k Keys) Audits() string { return k.prefix + "/audit/" }

// Audit is the key of one audit entry; name sorts by time.
func (k Keys) Audit(name string) string { return k.Audits() + name }

// Move is the key of a move's record.
func (k Keys) Move(id string) string { return k.Moves() + id }

// Moves is the prefix of every move by id.
func (k Keys) Moves() string { return k.prefix + "/moves/by-id/" }

// ActiveMove is the key naming the tenant's move in progress.
func (k Keys) ActiveMove(tenant string) string { return k.prefix + "/moves/active/" + tenant }

// MoveLock is the key of the lock held by the tenant's move runner.
func (k Keys) MoveLock(tenant string) string { return k.prefix + "/locks/moves/" + tenant }

// Routers is the prefix of the live routers' keys.
func (k Keys) Routers() string { return k.prefix + "/routers/" }

// Router is the key a router's session holds while it lives.
func (k Keys) Router(id string) string { return k.Routers() + id }

// Freezes is the prefix routers watch for cutovers.
func (k Keys) Freezes() string { return k.prefix + "/freezes/" }

// Freeze is the key announcing the tenant's cutover.
func (k Keys) Freeze(tenant string) string { return k.Freezes() + tenant }

// Acks is the prefix of the routers' acknowledgements of the tenant's
// freeze.
func (k Keys) Acks(tenant string) string { return k.prefix + "/acks/" + tenant + "/" }

// Ack is the key of one router's acknowledgement of the tenant's freeze.
func (k Keys) Ack(tenant, router string) string { return k.Acks(tenant) + router }

// RouterLoads is the prefix of the routers' load reports.
func (k Keys) RouterLoads() string { return k.prefix + "/load/routers/" }

// RouterLoad is the key of a router's load report.
func (k Keys) RouterLoad(router string) string { return k.RouterLoads() + router }

// ByteLoads is the prefix of the per-target data sizes.
func (k Keys) ByteLoads() string { return k.prefix + "/load/bytes/" }

// ByteLoad is the key of a target's tenant data sizes.
func (k Keys) ByteLoad(target string) string { return k.ByteLoads() + target }

// Usage is the prefix of the routers' published usage (usage.go):
// <Usage><YYYYMMDDHH>/<MM>/<router id>.<incarnation>.
func (k Keys) Usage() string { return k.prefix + "/usage/" }

// Domains is the prefix of every custom domain (routers watch it).
func (k Keys) Domains() string { return k.prefix + "/domains/" }

// Domain is the key of one custom domain (normalised: lower case, no
// trailing dot): the claim a check-and-set makes unique.
func (k Keys) Domain(name string) string { return k.Domains() + name }
