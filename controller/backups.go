package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// backupJob is a backup or restore running on this replica; the CLI polls
// it for progress. Jobs live in the replica's memory (an hour after they
// end): poll the replica that started one.
type backupJob struct {
	ID       string           `json:"id"`
	Kind     string           `json:"kind"` // backup | restore
	Tenant   string           `json:"tenant"`
	Store    string           `json:"store"`
	State    string           `json:"state"` // running | done | failed
	Progress backup.Progress  `json:"progress"`
	Backup   string           `json:"backup,omitempty"`
	As       string           `json:"as,omitempty"`
	Target   string           `json:"target,omitempty"`
	Error    string           `json:"error,omitempty"`
	Started  time.Time        `json:"started"`
	Ended    *time.Time       `json:"ended,omitempty"`
	Manifest *backup.Manifest `json:"manifest,omitempty"`
	// InPlace is an in-place restore's outcome (hold, retained copy).
	InPlace *backup.InPlaceResult `json:"in_place,omitempty"`
}

// backupJobs is the replica's jobs.
type backupJobs struct {
	mu   sync.Mutex
	jobs map[string]*backupJob
}

func newBackupJobs() *backupJobs { return &backupJobs{jobs: map[string]*backupJob{}} }

func (s *Server) backupJobs() *backupJobs { return s.jobs }

func (j *backupJobs) start(kind, tenant, store string) *backupJob {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	job := &backupJob{ID: kind + "-" + hex.EncodeToString(b), Kind: kind, Tenant: tenant, Store: store, State: "running", Started: time.Now().UTC()}
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, old := range j.jobs {
		if old.Ended != nil && time.Since(*old.Ended) > time.Hour {
			delete(j.jobs, id)
		}
	}
	j.jobs[job.ID] = job
	return job
}

func (j *backupJobs) update(job *backupJob, fn func(*backupJob)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(job)
}

func (j *backupJobs) get(id string) (backupJob, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job, ok := j.jobs[id]
	if !ok {
		return backupJob{}, false
	}
	return *job, true
}

func (j *backupJobs) finish(job *backupJob, err error) {
	j.update(job, func(b *backupJob) {
		now := time.Now().UTC()
		b.Ended, b.State = &now, "done"
		if err != nil {
			b.State, b.Error = "failed", err.Error()
		}
	})
}

func (s *Server) backupRoutes(v1 *gin.RouterGroup, read, operator gin.HandlerFunc) {
	v1.POST("/tenants/:id/backups", operator, s.startBackup)
	v1.GET("/tenants/:id/backups", read, s.listBackups)
	v1.GET("/backups/:id", read, s.getBackup)
	v1.DELETE("/backups/:id", operator, s.deleteBackup)
	v1.POST("/tenants/:id/restore", operator, s.startRestore)
	v1.POST("/tenants/:id/restore/undo", operator, s.undoRestore)
	v1.GET("/backup-jobs/:id", read, s.getBackupJob)
}

// errNoBackupStore: the controller has no backup store configured (503).
var errNoBackupStore = errors.New("this controller has no backup store configured")

// backupErrStatus maps the backup package's errors (and errNoBackupStore)
// to a status and a code; ok is false for any other error (errStatus's).
func backupErrStatus(err error) (status int, code string, ok bool) {
	switch {
	case errors.Is(err, errNoBackupStore):
		return http.StatusServiceUnavailable, "no_backup_store", true
	case errors.Is(err, backup.ErrInvalid):
		return http.StatusBadRequest, "invalid", true
	case errors.Is(err, backup.ErrNotFound):
		return http.StatusNotFound, "not_found", true
	case errors.Is(err, backup.ErrResidency):
		return http.StatusUnprocessableEntity, "residency", true
	case errors.Is(err, backup.ErrCorrupt):
		return http.StatusUnprocessableEntity, "corrupt", true
	case errors.Is(err, backup.ErrWrongKey):
		return http.StatusUnprocessableEntity, "wrong_key", true
	case errors.Is(err, backup.ErrDestination), errors.Is(err, migrator.ErrShapeMismatch):
		return http.StatusConflict, "destination", true
	case errors.Is(err, backup.ErrNoRetained):
		return http.StatusNotFound, "no_retained", true
	case errors.Is(err, migrator.ErrTenantBusy):
		return http.StatusConflict, "busy", true
	}
	return 0, "", false
}

// failBackup maps the backup package's errors, then the common ones.
func failBackup(c *gin.Context, err error) {
	if status, code, ok := backupErrStatus(err); ok {
		fail(c, status, code, err.Error())
		return
	}
	failErr(c, err)
}

// pickStore picks the named store, or the first (by name) the tenant may
// live in; a residency refusal is audited (as who).
func (s *Server) pickStore(ctx context.Context, who string, t *catalog.Tenant, name string) (string, backup.Store, error) {
	if len(s.cfg.BackupStores) == 0 {
		return "", nil, errNoBackupStore
	}
	var err error
	if name != "" {
		st, ok := s.cfg.BackupStores[name]
		if !ok {
			return "", nil, fmt.Errorf("%w: no backup store named %q", backup.ErrInvalid, name)
		}
		if err = backup.CheckResidency(t, st); err == nil {
			return name, st, nil
		}
	} else if n, st, ok := s.residentStore(t); ok {
		return n, st, nil
	} else {
		err = fmt.Errorf("%w: tenant %s may live only in %v; no backup store is in one of those regions", backup.ErrResidency, t.ID, t.Residency)
	}
	s.audit(ctx, auditEntry{Actor: who, Action: "backup.refused", Tenant: t.ID, Detail: err.Error()})
	return "", nil, err
}

type backupRequest struct {
	Store string `json:"store,omitempty"`
}

func (s *Server) startBackup(c *gin.Context) {
	var req backupRequest
	if !bindOptionalJSON(c, &req) {
		return
	}
	job, err := s.backupNow(c.Request.Context(), c.Param("id"), req.Store, actor(c))
	if err != nil {
		failBackup(c, err)
		return
	}
	c.JSON(http.StatusAccepted, job)
}

// backupNow starts a backup job of tenant into the named store (or the
// first it may live in) and returns the job as it starts; the backup runs
// on, audited (as who) when it ends. POST /v1/tenants/{id}/backups and
// the console's "Back up now" both start backups here.
func (s *Server) backupNow(ctx context.Context, tenant, storeName, who string) (backupJob, error) {
	t, err := s.store.GetTenant(ctx, tenant)
	if err != nil {
		return backupJob{}, err
	}
	target, _, err := s.store.GetTarget(ctx, t.Target)
	if err != nil {
		return backupJob{}, err
	}
	name, st, err := s.pickStore(ctx, who, &t, storeName)
	if err != nil {
		return backupJob{}, err
	}
	jobs := s.backupJobs()
	job := jobs.start("backup", t.ID, name)
	go func() {
		m, err := backup.Backup(context.Background(), backup.Request{Tenant: t, Target: target, Store: st, Key: s.cfg.BackupKey,
			Logger: s.log, Progress: func(p backup.Progress) { jobs.update(job, func(b *backupJob) { b.Progress = p }) }})
		e := auditEntry{Actor: who, Action: "backup", Tenant: t.ID, Target: t.Target}
		if err != nil {
			e.Action, e.Detail = "backup.failed", err.Error()
		} else {
			jobs.update(job, func(b *backupJob) { b.Backup, b.Manifest = m.ID, m })
			e.Detail = fmt.Sprintf("backup %s to store %s (region %s): %d rows, encrypted %v", m.ID, name, m.Region, m.Rows(), m.Encryption != "")
		}
		s.audit(context.Background(), e)
		jobs.finish(job, err)
	}()
	snap, _ := jobs.get(job.ID)
	return snap, nil
}

func (s *Server) getBackupJob(c *gin.Context) {
	job, ok := s.backupJobs().get(c.Param("id"))
	if !ok {
		fail(c, http.StatusNotFound, "not_found", "no such job on this replica")
		return
	}
	c.JSON(http.StatusOK, job)
}

// backupListing is a backup as listed: its manifest and its store.
type backupListing struct {
	Store string `json:"store"`
	*backup.Manifest
}

func (s *Server) listBackups(c *gin.Context) {
	out, err := s.backupsOf(c.Request.Context(), c.Param("id"))
	if err != nil {
		failBackup(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"backups": out})
}

// backupsOf lists a tenant's backups in every store, newest first (GET
// /v1/tenants/{id}/backups and the console's tenant page).
func (s *Server) backupsOf(ctx context.Context, tenant string) ([]backupListing, error) {
	if !catalog.ValidID(tenant) {
		return nil, fmt.Errorf("%w: tenant id %q is not valid", backup.ErrInvalid, tenant)
	}
	out := []backupListing{}
	for name, st := range s.cfg.BackupStores {
		ms, err := backup.List(ctx, st, tenant)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out = append(out, backupListing{Store: name, Manifest: m})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// findBackup returns the store holding backup id and its manifest.
func (s *Server) findBackup(ctx context.Context, id string) (string, backup.Store, *backup.Manifest, error) {
	if _, err := backup.TenantOf(id); err != nil {
		return "", nil, nil, err
	}
	for name, st := range s.cfg.BackupStores {
		m, err := backup.Describe(ctx, st, id)
		if err == nil {
			return name, st, m, nil
		}
		if !errors.Is(err, backup.ErrNotFound) {
			return "", nil, nil, err
		}
	}
	return "", nil, nil, fmt.Errorf("%w: %s", backup.ErrNotFound, id)
}

func (s *Server) getBackup(c *gin.Context) {
	name, _, m, err := s.findBackup(c.Request.Context(), c.Param("id"))
	if err != nil {
		failBackup(c, err)
		return
	}
	c.JSON(http.StatusOK, backupListing{Store: name, Manifest: m})
}

func (s *Server) deleteBackup(c *gin.Context) {
	ctx := c.Request.Context()
	name, st, m, err := s.findBackup(ctx, c.Param("id"))
	if err != nil {
		failBackup(c, err)
		return
	}
	if err := backup.Delete(ctx, st, m.ID); err != nil {
		failBackup(c, err)
		return
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "backup.delete", Tenant: m.Tenant, Detail: fmt.Sprintf("backup %s from store %s", m.ID, name)})
	c.JSON(http.StatusOK, gin.H{"deleted": m.ID})
}
