package router

import (
	"net"
	"net/http"
	"time"

	"github.com/switchyard/switchyard/router/wire"
)

// upstreamTransport is the net/http engine's client to its backends
// (wire.Transport, or net/http's own).
type upstreamTransport interface {
	http.RoundTripper
	CloseIdleConnections()
}

var (
	_ upstreamTransport = (*wire.Transport)(nil)
	_ upstreamTransport = (*http.Transport)(nil)
)

func newUpstreamTransport(cfg Config) upstreamTransport {
	if cfg.StdTransport {
		return newStdTransport(cfg)
	}
	return wire.NewTransport(cfg.DialTimeout, cfg.UpstreamHeaderTimeout)
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
