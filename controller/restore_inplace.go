package controller

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/backup"
)

// startRestoreInPlace restores a backup onto the tenant itself (see
// backup.RestoreInPlace): the backup and the tenant's schema are checked
// here, before anything changes (409 naming table and column when the
// schema no longer matches); the restore then runs as a job.
func (s *Server) startRestoreInPlace(c *gin.Context, tenant string, req restoreRequest) {
	ctx := c.Request.Context()
	who := actor(c)
	cur, err := s.store.GetTenant(ctx, tenant)
	if err != nil {
		failErr(c, err)
		return
	}
	if req.Target != "" && req.Target != cur.Target {
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "invalid", Field: "target",
			Message: fmt.Sprintf("an in-place restore stays on the tenant's target %s, not %s (restore as a new tenant to go elsewhere)", cur.Target, req.Target)})
		return
	}
	name, st, m, err := s.findBackup(ctx, req.From)
	if err != nil {
		failBackup(c, err)
		return
	}
	target, _, err := s.store.GetTarget(ctx, cur.Target)
	if err != nil {
		failErr(c, err)
		return
	}
	if _, err := backup.CheckInPlace(ctx, st, m.ID, s.cfg.BackupKey, tenant, target); err != nil {
		s.audit(ctx, auditEntry{Actor: who, Action: "restore.refused", Tenant: tenant, Target: target.ID,
			Detail: fmt.Sprintf("in place from backup %s: %v", m.ID, err)})
		failBackup(c, err)
		return
	}
	jobs := s.backupJobs()
	job := jobs.start("restore", tenant, name)
	jobs.update(job, func(b *backupJob) { b.Backup, b.As, b.Target = m.ID, tenant, target.ID })
	go func() {
		res, err := backup.RestoreInPlace(context.Background(), backup.InPlaceRequest{BackupID: m.ID, Store: st, Key: s.cfg.BackupKey,
			Tenant: tenant, Target: target, Holder: s.migrator, Logger: s.log, Retention: s.cfg.Retention,
			Progress: func(p backup.Progress) { jobs.update(job, func(b *backupJob) { b.Progress = p }) }})
		e := auditEntry{Actor: who, Action: "restore.in_place", Tenant: tenant, Target: target.ID}
		if err != nil {
			e.Action, e.Detail = "restore.failed", fmt.Sprintf("in place from backup %s: %v", m.ID, err)
		} else {
			e.Detail = fmt.Sprintf("in place from backup %s: %d rows, held %s, replaced data retained as %s until %s",
				m.ID, res.Rows, res.Hold, res.Retained, res.RetainUntil.Format("2006-01-02T15:04:05Z"))
			jobs.update(job, func(b *backupJob) { b.InPlace = res })
		}
		s.audit(context.Background(), e)
		jobs.finish(job, err)
	}()
	snap, _ := jobs.get(job.ID)
	c.JSON(http.StatusAccepted, snap)
}

// undoRestore gives the tenant back the data its latest in-place restore
// replaced (404 no_retained when there is none within its retention).
func (s *Server) undoRestore(c *gin.Context) {
	ctx := c.Request.Context()
	tenant := c.Param("id")
	cur, err := s.store.GetTenant(ctx, tenant)
	if err != nil {
		failErr(c, err)
		return
	}
	target, _, err := s.store.GetTarget(ctx, cur.Target)
	if err != nil {
		failErr(c, err)
		return
	}
	res, err := backup.UndoInPlace(ctx, backup.UndoRequest{Tenant: tenant, Target: target, Holder: s.migrator, Logger: s.log})
	e := auditEntry{Actor: actor(c), Action: "restore.undo", Tenant: tenant, Target: target.ID}
	if err != nil {
		e.Action, e.Detail = "restore.undo.failed", err.Error()
		s.audit(ctx, e)
		failBackup(c, err)
		return
	}
	e.Detail = fmt.Sprintf("in-place restore undone: held %s, replaced data retained as %s", res.Hold, res.Retained)
	s.audit(ctx, e)
	c.JSON(http.StatusOK, res)
}

// purgeRetainedRestores is the leader's chore for in-place restores: in
// every tenant database (each target's, and each dedicated database),
// the retained copies past their retention are deleted, audited.
func (s *Server) purgeRetainedRestores(ctx context.Context) error {
	dbs, err := s.tenantDatabases(ctx)
	if err != nil {
		return err
	}
	for _, d := range dbs {
		tg := d.target
		for _, dsn := range d.dsns {
			purged, err := backup.PurgeRetained(ctx, dsn)
			for _, p := range purged {
				s.audit(ctx, auditEntry{Actor: "scheduler", Action: "restore.retained_purged", Tenant: p.Tenant, Target: tg.ID,
					Detail: fmt.Sprintf("retention passed: deleted %d rows kept as %s by the in-place restore of backup %s", p.Rows, p.Retained, p.Backup)})
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("purging retained restore copies", "target", tg.ID, "err", err)
			}
		}
	}
	return ctx.Err()
}
