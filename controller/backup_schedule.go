package controller

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
)

// scheduledBackups is the leader's backup chore: every tenant whose plan
// has a backup plan in the policy is backed up once its newest backup is
// older than the plan's interval, to the first store (by name) its
// residency allows, and its backups older than the plan's retention are
// deleted (the newest always stays). Backups run one at a time, inside
// housekeeping.
func (s *Server) scheduledBackups(ctx context.Context) error {
	if len(s.cfg.BackupStores) == 0 {
		return nil
	}
	policy, err := s.store.Policy(ctx)
	if err != nil || len(policy.Backups) == 0 {
		return err
	}
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		plan, ok := policy.Backups[t.Plan]
		if !ok || t.State != catalog.StateActive {
			continue
		}
		if err := s.backupOnSchedule(ctx, t, plan); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduled backup", "tenant", t.ID, "err", err)
		}
	}
	return ctx.Err()
}

// residentStore is the first store (by name) the tenant may live in.
func (s *Server) residentStore(t *catalog.Tenant) (string, backup.Store, bool) {
	names := make([]string, 0, len(s.cfg.BackupStores))
	for n := range s.cfg.BackupStores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if t.ResidentIn(s.cfg.BackupStores[n].Region()) {
			return n, s.cfg.BackupStores[n], true
		}
	}
	return "", nil, false
}

func (s *Server) backupOnSchedule(ctx context.Context, t catalog.Tenant, plan catalog.BackupPlan) error {
	name, st, ok := s.residentStore(&t)
	if !ok {
		return fmt.Errorf("%w: tenant %s may live only in %v; no store is there", backup.ErrResidency, t.ID, t.Residency)
	}
	list, err := backup.List(ctx, st, t.ID)
	if err != nil {
		return err
	}
	if len(list) == 0 || time.Since(list[0].CreatedAt) >= plan.Interval() {
		target, _, err := s.store.GetTarget(ctx, t.Target)
		if err != nil {
			return err
		}
		m, err := backup.Backup(ctx, backup.Request{Tenant: t, Target: target, Store: st, Key: s.cfg.BackupKey, Logger: s.log})
		if err != nil {
			s.audit(ctx, auditEntry{Actor: "scheduler", Action: "backup.failed", Tenant: t.ID, Target: t.Target, Detail: err.Error()})
			return err
		}
		s.audit(ctx, auditEntry{Actor: "scheduler", Action: "backup", Tenant: t.ID, Target: t.Target,
			Detail: fmt.Sprintf("scheduled backup %s to store %s (plan %s, every %s): %d rows", m.ID, name, t.Plan, plan.Every, m.Rows())})
		list = append([]*backup.Manifest{m}, list...)
	}
	for _, old := range list[1:] {
		if time.Since(old.CreatedAt) <= plan.Retention() {
			continue
		}
		if err := backup.Delete(ctx, st, old.ID); err != nil {
			return err
		}
		s.audit(ctx, auditEntry{Actor: "scheduler", Action: "backup.expire", Tenant: t.ID,
			Detail: fmt.Sprintf("backup %s from store %s, older than plan %s's keep %s", old.ID, name, t.Plan, plan.Keep)})
	}
	return nil
}
