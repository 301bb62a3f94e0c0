package controller

import (
	"context"
	"net/http"
	"net/url"
	"sort"

	"github.com/gin-gonic/gin"
)

// Console backups: a tenant's backups on its page (listed by backupsOf, as
// GET /v1/tenants/{id}/backups lists them), "Back up now" for operators
// (backupNow, as POST /v1/tenants/{id}/backups starts one) and the job's
// progress pushed over Server-Sent Events.

// backupJobWanted is the backup job a tenant page follows: the page's
// ?job=, when this replica runs or ran it and it is the tenant's.
func (s *Server) backupJobWanted(c *gin.Context, tenant string) (backupJob, bool) {
	id := c.Query("job")
	if id == "" {
		return backupJob{}, false
	}
	job, ok := s.backupJobs().get(id)
	if !ok || job.Tenant != tenant || job.Kind != "backup" {
		return backupJob{}, false
	}
	job.Manifest = nil
	return job, true
}

// addBackups puts the tenant's backups, the store names and the job the
// page follows (streamed while it runs) into a tenant page's data.
func (s *Server) addBackups(ctx context.Context, c *gin.Context, tenant string, data map[string]any) {
	stores := make([]string, 0, len(s.cfg.BackupStores))
	for name := range s.cfg.BackupStores {
		stores = append(stores, name)
	}
	sort.Strings(stores)
	data["Stores"] = stores
	if list, err := s.backupsOf(ctx, tenant); err != nil {
		data["BackupError"] = "backups could not be listed: " + err.Error()
	} else {
		data["Backups"] = list
	}
	if job, ok := s.backupJobWanted(c, tenant); ok {
		data["Job"] = job
		if job.State == "running" {
			c.Set("stream", "/ui/backup-jobs/"+url.PathEscape(job.ID)+"/events")
		}
	}
}

// consoleBackup starts a backup of the tenant ("Back up now") and shows
// the tenant page following its job.
func (s *Server) consoleBackup(c *gin.Context) {
	job, err := s.backupNow(c.Request.Context(), c.Param("id"), c.PostForm("store"), actor(c))
	if err != nil {
		if status, code, ok := backupErrStatus(err); ok {
			s.consoleFail(c, status, code, err.Error())
			return
		}
		s.consoleErr(c, err)
		return
	}
	s.redirectFlash(c, "/ui/tenants/"+url.PathEscape(job.Tenant)+"?job="+url.QueryEscape(job.ID)+"#backups",
		"Backup job "+job.ID+" started (store "+job.Store+").")
}

// backupJobEvents streams a backup job (event "job") until it ends.
func (s *Server) backupJobEvents(c *gin.Context) {
	id := c.Param("id")
	if _, ok := s.backupJobs().get(id); !ok {
		s.consoleFail(c, http.StatusNotFound, "not_found", "no such backup job on this replica")
		return
	}
	s.stream(c, "job", func() (any, bool, error) {
		job, _ := s.backupJobs().get(id)
		job.Manifest = nil
		return job, job.State != "running", nil
	})
}
