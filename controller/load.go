package controller

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// Load figures feed the planner, gathered off the request path:
//
//	<prefix>/load/routers/<router id>   {"at", "window_s", "rps": {tenant: requests/s}}
//	                                    written by each router every few seconds
//	<prefix>/load/bytes/<target id>     {"at", "bytes": {tenant: bytes}}
//	                                    measured in PostgreSQL by the leader
type bytesLoad struct {
	At    time.Time        `json:"at"`
	Bytes map[string]int64 `json:"bytes"`
}

// tenantFigures returns tenant → bytes and tenant → requests/s as last
// reported (reports of routers gone or older than a minute are ignored).
func (s *Server) tenantFigures(ctx context.Context) (map[string]int64, map[string]float64, error) {
	bytes := map[string]int64{}
	rps := map[string]float64{}
	q := (&api.QueryOptions{}).WithContext(ctx)
	pairs, _, err := s.client.KV().List(s.store.Keys().ByteLoads(), q)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range pairs {
		var b bytesLoad
		if json.Unmarshal(p.Value, &b) == nil {
			for t, n := range b.Bytes {
				bytes[t] += n
			}
		}
	}
	loads, err := s.store.RouterLoads(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range loads {
		if time.Since(r.At) < time.Minute {
			for t, v := range r.RPS {
				rps[t] += v
			}
		}
	}
	return bytes, rps, nil
}

// targetDatabases is a target and the databases its tenants' rows live in.
type targetDatabases struct {
	target catalog.Target
	dsns   []string
}

// tenantDatabases lists every target with its tenant databases: the
// target's own database, or for a dedicated-db target each of its
// tenants' databases.
func (s *Server) tenantDatabases(ctx context.Context) ([]targetDatabases, error) {
	targets, err := s.store.ListTargets(ctx)
	if err != nil {
		return nil, err
	}
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]targetDatabases, 0, len(targets))
	for _, tg := range targets {
		d := targetDatabases{target: tg, dsns: []string{tg.DSN}}
		if tg.Tier == catalog.TierDedicatedDB {
			d.dsns = nil
			for _, t := range tenants {
				if t.Target == tg.ID {
					dsn, _ := tg.DSNFor(t.ID)
					d.dsns = append(d.dsns, dsn)
				}
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// measureBytes records every tenant's data size per target, from
// PostgreSQL (row sizes summed per tenant over the tenant tables).
func (s *Server) measureBytes(ctx context.Context) error {
	dbs, err := s.tenantDatabases(ctx)
	if err != nil {
		return err
	}
	for _, d := range dbs {
		tg := d.target
		out := bytesLoad{At: time.Now().UTC(), Bytes: map[string]int64{}}
		for _, dsn := range d.dsns {
			if err := sizeTenants(ctx, dsn, s.moveOptions().KeyColumn, out.Bytes); err != nil {
				s.log.Debug("measuring tenant sizes", "target", tg.ID, "err", err)
			}
		}
		data, _ := json.Marshal(out)
		if _, err := s.client.KV().Put(&api.KVPair{Key: s.store.Keys().ByteLoad(tg.ID), Value: data}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			return err
		}
	}
	return nil
}

// sizeTenants adds each tenant's row sizes, summed over the tenant tables
// (found as moves find them, by the key column moves use), to into.
func sizeTenants(ctx context.Context, dsn, keyColumn string, into map[string]int64) error {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tables, err := migrator.DiscoverTables(cctx, db, keyColumn)
	if err != nil {
		return err
	}
	key := pq.QuoteIdentifier(cmp.Or(keyColumn, migrator.DefaultKeyColumn))
	for _, t := range tables {
		rows, err := db.QueryContext(cctx, fmt.Sprintf(`SELECT %s::text, sum(pg_column_size(x.*))::bigint FROM %s x GROUP BY 1`, key, t.Ident()))
		if err != nil {
			var pqErr *pq.Error
			if errors.As(err, &pqErr) && pqErr.Code == "42P01" { // undefined_table: dropped meanwhile
				continue
			}
			return fmt.Errorf("%s: %w", t.Key(), err)
		}
		for rows.Next() {
			var id string
			var n int64
			if err := rows.Scan(&id, &n); err == nil {
				into[id] += n
			}
		}
		rows.Close()
	}
	return nil
}
