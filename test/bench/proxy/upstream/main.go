// Command upstream is the tiny backend of the proxy benchmark
// (scripts/bench-proxy.sh): it answers any path with a small JSON body naming
// the X-Tenant-Id it was sent, so the direct run, nginx, HAProxy and the
// Switchyard router all put the same bytes on the wire.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:18080", "listen address")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: http.HandlerFunc(serve)}
	log.Printf("upstream listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}

var contentType = []string{"application/json"}

func serve(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, 0, 64)
	body = append(body, `{"ok":true,"tenant":`...)
	body = appendJSONString(body, r.Header.Get("X-Tenant-Id"))
	body = append(body, "}\n"...)
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	_, _ = w.Write(body)
}

// appendJSONString quotes s as a JSON string: tenant ids are plain DNS
// labels, so the fast path copies; anything else goes through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
