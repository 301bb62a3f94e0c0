package controller

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/placement"
)

// restoreRequest restores a backup of the tenant in the path. As names the
// new tenant; without it (or with the tenant's own id) the restore is in
// place (startRestoreInPlace). Target defaults to the target the backup
// was taken from (in place: the tenant's own, the only one allowed).
type restoreRequest struct {
	From   string `json:"from"`
	As     string `json:"as"`
	Target string `json:"target,omitempty"`
}

func (s *Server) startRestore(c *gin.Context) {
	var req restoreRequest
	if !bindJSON(c, &req) {
		return
	}
	ctx := c.Request.Context()
	tenant := c.Param("id")
	if owner, err := backup.TenantOf(req.From); err != nil || owner != tenant {
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "invalid", Field: "from",
			Message: fmt.Sprintf("from %q is not a backup of tenant %s", req.From, tenant)})
		return
	}
	if req.As == "" || req.As == tenant {
		s.startRestoreInPlace(c, tenant, req)
		return
	}
	if !catalog.ValidID(req.As) {
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "invalid", Field: "as",
			Message: fmt.Sprintf("as %q must be a lowercase DNS label", req.As)})
		return
	}
	name, st, m, err := s.findBackup(ctx, req.From)
	if err != nil {
		failBackup(c, err)
		return
	}
	if req.Target == "" {
		req.Target = m.Source.Target
	}
	target, _, err := s.store.GetTarget(ctx, req.Target)
	if err != nil {
		failErr(c, err)
		return
	}
	// The restored tenant keeps the backed-up tenant's residency (as it is
	// now, if it still exists): it may land only inside it.
	if cur, err := s.store.GetTenant(ctx, tenant); err == nil {
		if err := placement.CheckResidency(&cur, &target); err != nil {
			s.auditResidency(ctx, actor(c), tenant, fmt.Sprintf("restore %s as %s onto %s", m.ID, req.As, target.ID), err)
			failErr(c, err)
			return
		}
	}
	jobs := s.backupJobs()
	job := jobs.start("restore", tenant, name)
	jobs.update(job, func(b *backupJob) { b.Backup, b.As, b.Target = m.ID, req.As, target.ID })
	who := actor(c)
	go func() {
		res, err := backup.Restore(context.Background(), backup.RestoreRequest{BackupID: m.ID, Store: st, Key: s.cfg.BackupKey,
			As: req.As, Target: target, Catalog: s.store, Logger: s.log,
			Progress: func(p backup.Progress) { jobs.update(job, func(b *backupJob) { b.Progress = p }) }})
		e := auditEntry{Actor: who, Action: "restore", Tenant: req.As, Target: target.ID}
		if err != nil {
			e.Action, e.Detail = "restore.failed", fmt.Sprintf("backup %s of %s as %s: %v", m.ID, tenant, req.As, err)
		} else {
			e.Detail = fmt.Sprintf("backup %s of %s as %s: %d rows", m.ID, tenant, req.As, res.Rows)
		}
		s.audit(context.Background(), e)
		jobs.finish(job, err)
	}()
	snap, _ := jobs.get(job.ID)
	c.JSON(http.StatusAccepted, snap)
}
