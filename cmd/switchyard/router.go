package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/router"
)

func consulClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return c, nil
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("trusted cidr %q: %w", part, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func runRouter(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	var cfg router.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "proxy listen address")
	fs.StringVar(&cfg.AdminListen, "admin", "127.0.0.1:9080", "admin listen address (/livez, /readyz, /metrics)")
	fs.StringVar(&cfg.ID, "id", "", "router instance id (default host-pid)")
	consulAddr := fs.String("consul", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address")
	prefix := fs.String("catalog-prefix", "switchyard", "catalog KV prefix")
	fs.StringVar(&cfg.Extract.BaseDomain, "base-domain", "", "extract the tenant from Host <tenant>.<base-domain>")
	fs.BoolVar(&cfg.Extract.PathPrefix, "path-prefix", true, "extract the tenant from /t/<tenant>/... (stripped)")
	jwtFile := fs.String("jwt-secret-file", "", "file holding the HS256 secret for bearer tokens (or $SWITCHYARD_JWT_SECRET)")
	trusted := fs.String("trusted-cidrs", "", "comma-separated CIDRs whose X-Tenant-ID header is honoured")
	fs.DurationVar(&cfg.HoldMax, "hold-max", 2*time.Second, "longest a frozen tenant's request is held")
	fs.DurationVar(&cfg.UpstreamHeaderTimeout, "upstream-timeout", 30*time.Second, "wait for backend response headers")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body", 32<<20, "largest request body")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 10*time.Second, "forward only this long after the last acknowledged Consul session renewal")
	fs.DurationVar(&cfg.BodyIdleTimeout, "body-idle-timeout", 10*time.Second, "a request body that sends nothing for this long gets 408")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", 60*time.Second, "a request body not complete this long after its head gets 408")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header", 64<<10, "largest request header block")
	fs.BoolVar(&cfg.NetHTTPOnly, "net-http-only", os.Getenv("SWITCHYARD_ROUTER_NET_HTTP") == "1", "serve every connection with net/http, not the fast path (or $SWITCHYARD_ROUTER_NET_HTTP=1)")
	fs.BoolVar(&cfg.StdTransport, "std-transport", os.Getenv("SWITCHYARD_ROUTER_STD_TRANSPORT") == "1", "use net/http's Transport towards backends (or $SWITCHYARD_ROUTER_STD_TRANSPORT=1)")
	fs.BoolVar(&cfg.AdminPprof, "admin-pprof", false, "serve /debug/pprof/ on the admin listener")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	accessLog := addObserveFlags(fs, &cfg.Observe)
	edge := addEdgeFlags(fs, &cfg.TLS)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := edge(); err != nil {
		return err
	}
	closeLog, err := accessLog()
	if err != nil {
		return err
	}
	defer closeLog()
	secret := []byte(os.Getenv("SWITCHYARD_JWT_SECRET"))
	if *jwtFile != "" {
		b, err := os.ReadFile(*jwtFile)
		if err != nil {
			return fmt.Errorf("jwt secret: %w", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	}
	cfg.Extract.JWTSecret = secret
	cidrs, err := parseCIDRs(*trusted)
	if err != nil {
		return err
	}
	cfg.Extract.TrustedCIDRs = cidrs
	client, err := consulClient(*consulAddr)
	if err != nil {
		return err
	}
	r, err := router.New(cfg, client, *prefix, newLogger(*logLevel))
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
