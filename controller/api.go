package controller

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/placement"
)

// apiError is every error body: a stable code and a human message.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	// Field names the request field that was wrong, where one was.
	Field string `json:"field,omitempty"`
}

func fail(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, apiError{Error: code, Message: msg})
}

// failErr answers a domain error with its status and code (errStatus).
func failErr(c *gin.Context, err error) {
	status, code, msg := errStatus(err)
	fail(c, status, code, msg)
	if status == http.StatusServiceUnavailable {
		c.Error(err) //nolint:errcheck // logged by the access log
	}
}

// errStatus maps a domain error to a status, a code and a message (the
// API's JSON errors and the console's error pages).
func errStatus(err error) (int, string, string) {
	switch {
	case errors.Is(err, catalog.ErrInvalid):
		return http.StatusBadRequest, "invalid", err.Error()
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, migrator.ErrMoveNotFound):
		return http.StatusNotFound, "not_found", err.Error()
	case errors.Is(err, catalog.ErrExists):
		return http.StatusConflict, "exists", err.Error()
	case errors.Is(err, catalog.ErrConflict), errors.Is(err, migrator.ErrMoveExists):
		return http.StatusConflict, "conflict", err.Error()
	case errors.Is(err, migrator.ErrStaleDatabase):
		return http.StatusConflict, "stale_database", err.Error()
	case errors.Is(err, migrator.ErrNotPaused):
		return http.StatusConflict, "not_paused", err.Error()
	case errors.Is(err, migrator.ErrTooLateToAbort):
		return http.StatusConflict, "too_late", err.Error()
	case errors.Is(err, placement.ErrResidency):
		// Before preflight and no-target: a residency refusal says so.
		return http.StatusUnprocessableEntity, "residency", err.Error()
	case errors.Is(err, migrator.ErrPreflight):
		return http.StatusUnprocessableEntity, "preflight_failed", err.Error()
	case errors.Is(err, placement.ErrNoTarget):
		return http.StatusUnprocessableEntity, "no_target", err.Error()
	case errors.Is(err, placement.ErrUnknownPlan):
		return http.StatusBadRequest, "unknown_plan", err.Error()
	case errors.Is(err, placement.ErrInvalidInput), errors.Is(err, placement.ErrInvalidConfig):
		return http.StatusUnprocessableEntity, "cannot_plan", err.Error()
	case errors.Is(err, placement.ErrUnknownTarget):
		return http.StatusNotFound, "not_found", err.Error()
	default:
		return http.StatusServiceUnavailable, "unavailable", "the control plane could not complete the request; retry"
	}
}

// bindJSON decodes a body strictly: unknown fields and trailing data are
// errors that name what was wrong.
func bindJSON(c *gin.Context, v any) bool { return decodeBody(c, v, false) }

// bindOptionalJSON is bindJSON for endpoints whose body may be left out: an
// empty body leaves v as it was (its zero value, read as the defaults).
func bindOptionalJSON(c *gin.Context, v any) bool { return decodeBody(c, v, true) }

func decodeBody(c *gin.Context, v any, optional bool) bool {
	if c.ContentType() != "application/json" && c.Request.ContentLength != 0 {
		fail(c, http.StatusUnsupportedMediaType, "bad_content_type", "send application/json")
		return false
	}
	dec := jsonDecoder(c.Request.Body)
	if err := dec.Decode(v); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return true // no body at all (io.ErrUnexpectedEOF is a cut-off one)
		}
		fail(c, http.StatusBadRequest, "bad_json", "request body: "+strings.TrimPrefix(err.Error(), "json: "))
		return false
	}
	if dec.More() {
		fail(c, http.StatusBadRequest, "bad_json", "request body: trailing data after the JSON object")
		return false
	}
	return true
}

// auth checks the bearer token and that its role is one of allowed.
func (s *Server) auth(allowed ...Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
			c.Header("WWW-Authenticate", `Bearer realm="switchyard"`)
			fail(c, http.StatusUnauthorized, "unauthenticated", "send Authorization: Bearer <token>")
			return
		}
		role, ok := s.cfg.Tokens[tok]
		if !ok {
			fail(c, http.StatusUnauthorized, "unauthenticated", "unknown token")
			return
		}
		for _, r := range allowed {
			if r == role {
				c.Set("role", role)
				c.Set("actor", string(role)+":"+tokenID(tok))
				c.Next()
				return
			}
		}
		fail(c, http.StatusForbidden, "forbidden", "role "+string(role)+" may not do this")
	}
}

func actor(c *gin.Context) string { return c.GetString("actor") }

// queryLimit reads the "limit" query parameter (def when absent); it
// answers 400 itself and returns false when the value is not in 1..max.
func queryLimit(c *gin.Context, def, max int) (int, bool) {
	v := c.Query("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("limit must be an integer from 1 to %d", max))
		return 0, false
	}
	return n, true
}
