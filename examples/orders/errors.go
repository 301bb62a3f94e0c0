package orders

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
)

// Error codes in the "error" field of error responses.
const (
	CodeBadJSON         = "bad_json"
	CodeInvalidField    = "invalid_field"
	CodeMissingTenant   = "missing_tenant"
	CodeMissingTarget   = "missing_target"
	CodeNotFound        = "not_found"
	CodeMethod          = "method_not_allowed"
	CodeBodyTooLarge    = "body_too_large"
	CodeMisdirected     = "misdirected"
	CodeNotReady        = "not_ready"
	CodeTenantFenced    = "tenant_fenced"
	CodeDBUnavailable   = "db_unavailable"
	CodeInternal        = "internal"
	retryAfterSeconds   = 1
	fencedMessagePrefix = "switchyard: tenant"
)

// ErrorResponse is the body of every error response. Field names the request
// field (or header or query parameter) at fault, when there is one.
type ErrorResponse struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// apiError is an error with its HTTP answer.
type apiError struct {
	status     int
	body       ErrorResponse
	retryAfter bool
}

func (e *apiError) Error() string { return e.body.Error + ": " + e.body.Message }

func newAPIError(status int, code, msg string) *apiError {
	return &apiError{status: status, body: ErrorResponse{Error: code, Message: msg}}
}

// fieldError is a 400 naming the offending field.
func fieldError(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, body: ErrorResponse{Error: CodeInvalidField, Message: msg, Field: field}}
}

// classify maps any error to its HTTP answer. Database and internal errors
// get a generic message: SQL text and driver details are only logged.
func classify(err error) *apiError {
	if ae, ok := errors.AsType[*apiError](err); ok {
		return ae
	}
	switch {
	case errors.Is(err, errNotFound):
		return newAPIError(http.StatusNotFound, CodeNotFound, "order not found")
	case isFenced(err):
		e := newAPIError(http.StatusServiceUnavailable, CodeTenantFenced, "the tenant is being moved and its writes are paused; retry shortly")
		e.retryAfter = true
		return e
	case isUnavailable(err):
		e := newAPIError(http.StatusServiceUnavailable, CodeDBUnavailable, "the tenant's database is unavailable; retry shortly")
		e.retryAfter = true
		return e
	}
	return newAPIError(http.StatusInternalServerError, CodeInternal, "internal error")
}

// isFenced reports the error a fencing trigger raises on a tenant whose
// writes are paused for a cutover: SQLSTATE P0001 (raise_exception) with a
// message like "switchyard: tenant acme is fenced".
func isFenced(err error) bool {
	e := pq.As(err, pqerror.RaiseException)
	return e != nil && strings.Contains(e.Message, fencedMessagePrefix) && strings.Contains(e.Message, "fenced")
}

// isUnavailable reports errors that mean the database cannot serve now
// (down, restarting, unreachable, read-only, or the tenant's database not
// there yet) rather than a bug: the client should retry.
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, errPoolsClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	if e := pq.As(err); e != nil {
		switch e.Code.Class() {
		case "08", // connection exception
			"53", // insufficient resources (too many connections, disk full)
			"57": // operator intervention (shutdown, cannot connect now)
			return true
		}
		switch e.Code {
		case pqerror.ReadOnlySQLTransaction, // a standby, or a primary being demoted
			pqerror.InvalidCatalogName: // the tenant's database does not exist (yet)
			return true
		}
	}
	return false
}

// writeError answers with err's JSON error body and aborts the chain.
func writeError(c *gin.Context, e *apiError) {
	if e.retryAfter {
		c.Header("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(e.status, e.body)
}
