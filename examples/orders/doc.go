// Package orders is Switchyard's reference tenant app: a small orders API
// that a SaaS team can copy, and that every end-to-end test drives.
//
// It shows what an app behind the Switchyard router has to do:
//
//   - take the tenant only from the X-Tenant-Id header and the placement
//     target only from X-Tenant-Target (the router sets both and strips any
//     client copies);
//   - resolve the target in a catalog snapshot kept current by a
//     [catalog.Watcher] (never a Consul query per request), refuse targets
//     this instance's service does not serve with 421 Misdirected Request,
//     and open the tenant's database with [catalog.Target.DSNFor];
//   - scope every SQL statement with tenant_id = $1, so one schema serves
//     the shared pool, dedicated databases and dedicated clusters alike;
//   - translate a fencing trigger's error (SQLSTATE P0001, "switchyard:
//     tenant ... fenced") into 503 tenant_fenced with Retry-After, so a
//     write that races a cutover is retried by the client instead of lost;
//   - register in Consul with a health check, and deregister then drain on
//     shutdown.
//
// The HTTP API:
//
//	POST   /orders                      create  → 201 Order
//	GET    /orders?limit=&after_id=     list    → 200 {"orders": [...], "next_after_id": n|null}
//	GET    /orders/{id}                 read    → 200 Order | 404
//	PUT    /orders/{id}                 replace → 200 Order (version+1) | 404
//	DELETE /orders/{id}                 delete  → 204 | 404
//	GET    /livez, /readyz, /metrics
//
// Errors are JSON {"error": code, "message": text} (plus "field" when one
// request field is at fault).
package orders
