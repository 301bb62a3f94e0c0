// Command seed prepares a Consul agent for the proxy benchmark
// (scripts/bench-proxy.sh): an initialised catalog with one shared target,
// "bench-pool", served by the Consul service "bench-upstream", one tenant,
// "bench", on it, and the benchmark upstream registered as that service with
// a passing check. Running it again is harmless.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
)

func main() {
	consulAddr := flag.String("consul", "127.0.0.1:8500", "Consul HTTP address")
	upstream := flag.Int("upstream-port", 18080, "port of the benchmark upstream on 127.0.0.1")
	certFile := flag.String("cert", "", "also store this PEM certificate (and -key) as the routers' default TLS certificate (scripts/bench-tls.sh)")
	keyFile := flag.String("key", "", "the PEM key of -cert")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := seed(ctx, *consulAddr, *upstream); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
	if *certFile != "" {
		if err := seedCert(ctx, *consulAddr, *certFile, *keyFile); err != nil {
			fmt.Fprintln(os.Stderr, "seed:", err)
			os.Exit(1)
		}
	}
}

// seedCert stores the default TLS certificate.
func seedCert(ctx context.Context, consulAddr, certFile, keyFile string) error {
	cfg := api.DefaultConfig()
	cfg.Address = consulAddr
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	info, err := catalog.NewStore(client, "").PutCertificate(ctx, catalog.Certificate{Name: "default", CertPEM: string(certPEM), KeyPEM: string(keyPEM)})
	if err != nil {
		return err
	}
	fmt.Printf("seed: default certificate for %v stored\n", info.DNSNames)
	return nil
}

func seed(ctx context.Context, consulAddr string, upstreamPort int) error {
	cfg := api.DefaultConfig()
	cfg.Address = consulAddr
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	store := catalog.NewStore(client, "")
	if err := store.Init(ctx, 4096); err != nil {
		return fmt.Errorf("init catalog: %w", err)
	}
	err = store.CreateTarget(ctx, catalog.Target{
		ID: "bench-pool", Tier: catalog.TierShared, Service: "bench-upstream",
		DSN: "postgres://x@127.0.0.1:1/bench",
	})
	if err != nil && !errors.Is(err, catalog.ErrExists) {
		return fmt.Errorf("create target: %w", err)
	}
	_, err = store.CreateTenant(ctx, catalog.Tenant{
		ID: "bench", Plan: "free", Tier: catalog.TierShared, Target: "bench-pool",
	})
	if err != nil && !errors.Is(err, catalog.ErrExists) {
		return fmt.Errorf("create tenant: %w", err)
	}
	// Limits on the tenant's plan, far above what a run sends: every
	// request pays for the limit checks (token bucket, concurrency, body
	// size) without ever being refused, as issue 11's benchmark asks.
	if _, err := store.UpdatePolicy(ctx, func(p *catalog.PlanPolicy) error {
		if p.Limits == nil {
			p.Limits = map[string]catalog.Limits{}
		}
		p.Limits["free"] = catalog.Limits{RequestsPerSecond: 10_000_000, Burst: 10_000_000, ConcurrentRequests: 100_000, MaxBodyBytes: 1 << 20}
		return nil
	}); err != nil {
		return fmt.Errorf("plan limits: %w", err)
	}
	// A TTL check that starts passing and outlives any run: the benchmark
	// measures forwarding, not health checking, so nothing probes the upstream.
	reg := &api.AgentServiceRegistration{
		ID: "bench-upstream-1", Name: "bench-upstream", Address: "127.0.0.1", Port: upstreamPort,
		Check: &api.AgentServiceCheck{CheckID: "bench-upstream-1-ttl", TTL: "24h", Status: api.HealthPassing},
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("register bench-upstream: %w", err)
	}
	if err := client.Agent().UpdateTTLOpts("bench-upstream-1-ttl", "benchmark", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("mark bench-upstream passing: %w", err)
	}
	fmt.Printf("seed: catalog ready (target bench-pool, tenant bench); bench-upstream = 127.0.0.1:%d passing\n", upstreamPort)
	return nil
}
