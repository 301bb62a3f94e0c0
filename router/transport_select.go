package router

import (
	"net"
	"net/http"
	"os"
	"time"
)

// upstreamTransport is the client side of the proxy.
type upstreamTransport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// stdTransportEnv, set to 1, makes the router use net/http's Transport
// towards backends instead of the synchronous one (a fallback, and for
// A/B benchmarks).
const stdTransportEnv = "SWITCHYARD_ROUTER_STD_TRANSPORT"

func newUpstreamTransport(cfg Config) upstreamTransport {
	if os.Getenv(stdTransportEnv) == "1" {
		return newStdTransport(cfg)
	}
	return newSyncTransport(cfg.DialTimeout, cfg.UpstreamHeaderTimeout)
}

func newStdTransport(cfg Config) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.UpstreamHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}
