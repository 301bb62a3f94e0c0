package router

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
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

// isGRPC: the request is a gRPC call (application/grpc, +proto, +json...).
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return r.ProtoMajor == 2 && strings.HasPrefix(ct, "application/grpc") &&
		(len(ct) == len("application/grpc") || ct[len("application/grpc")] == '+' || ct[len("application/grpc")] == ';')
}

// writeGRPCStatus answers a gRPC call with a trailers-only response: HTTP
// 200 and the status in the one HEADERS frame, no body.
func writeGRPCStatus(w http.ResponseWriter, code uint32, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.FormatUint(uint64(code), 10))
	h.Set("Grpc-Message", grpcPercentEncode(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcPercentEncode encodes a grpc-message as the gRPC spec says: bytes
// outside printable ASCII, and '%', as %XX.
func grpcPercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)>>4, 16)+strconv.FormatUint(uint64(c)&15, 16)))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
