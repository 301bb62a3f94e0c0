package router

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is the JSON body of every error the router itself answers.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Tenant  string `json:"tenant,omitempty"`
}

// writeError answers with a JSON error body. retryAfter > 0 adds the header.
func writeError(w http.ResponseWriter, status int, code, msg, tenant string, retryAfter int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Error: code, Message: msg, Tenant: tenant})
}
