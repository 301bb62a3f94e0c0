package controller

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
)

// The API and the console answer a backup error with the same status and
// code: backupErrStatus maps the backup package's errors (wrapped too) and
// leaves the others to errStatus.
func TestBackupErrStatus(t *testing.T) {
	for _, tc := range []struct {
		err        error
		wantStatus int
		wantCode   string
		wantOK     bool
	}{
		{errNoBackupStore, http.StatusServiceUnavailable, "no_backup_store", true},
		{fmt.Errorf("%w: no backup store named %q", backup.ErrInvalid, "x"), http.StatusBadRequest, "invalid", true},
		{fmt.Errorf("list: %w", backup.ErrNotFound), http.StatusNotFound, "not_found", true},
		{fmt.Errorf("%w: eu only", backup.ErrResidency), http.StatusUnprocessableEntity, "residency", true},
		{backup.ErrCorrupt, http.StatusUnprocessableEntity, "corrupt", true},
		{backup.ErrWrongKey, http.StatusUnprocessableEntity, "wrong_key", true},
		{backup.ErrDestination, http.StatusConflict, "destination", true},
		{fmt.Errorf("tenant: %w", catalog.ErrNotFound), 0, "", false},
		{errors.New("something else"), 0, "", false},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			status, code, ok := backupErrStatus(tc.err)
			if status != tc.wantStatus || code != tc.wantCode || ok != tc.wantOK {
				t.Errorf("got %d %q %v, want %d %q %v", status, code, ok, tc.wantStatus, tc.wantCode, tc.wantOK)
			}
		})
	}
}
