package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"strings"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
)

func runController(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	var cfg controller.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "API listen address")
	fs.StringVar(&cfg.ID, "id", "", "replica id (default host-pid)")
	consulAddr := fs.String("consul", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address")
	fs.StringVar(&cfg.Prefix, "catalog-prefix", "switchyard", "catalog KV prefix")
	tokens := fs.String("tokens", os.Getenv("SWITCHYARD_API_TOKENS"), "token:role,… (roles: viewer, billing, operator); or $SWITCHYARD_API_TOKENS")
	secret := fs.String("webhook-secret", os.Getenv("SWITCHYARD_WEBHOOK_SECRET"), "billing webhook HMAC secret; or $SWITCHYARD_WEBHOOK_SECRET")
	fs.IntVar(&cfg.MaxConcurrentMoves, "max-moves", 2, "moves the leader runs at once")
	fs.DurationVar(&cfg.LeaderTTL, "leader-ttl", 10*time.Second, "leader lock session TTL")
	fs.DurationVar(&cfg.Retention, "retention", 24*time.Hour, "keep a moved tenant's source copy, and the data an in-place restore replaced, this long")
	fs.DurationVar(&cfg.IdempotencyTTL, "idempotency-ttl", 24*time.Hour, "how long an Idempotency-Key or billing event id is remembered")
	fs.DurationVar(&cfg.UsageRetention, "usage-retention", catalog.DefaultUsageRetention, "how far back usage is kept (the routers' -usage-retention)")
	fs.Float64Var(&cfg.MoveRateRows, "move-rate", 0, "copy rate limit per move, rows/s (0: unlimited)")
	fs.IntVar(&cfg.MoveChunkRows, "move-chunk", 0, "copy chunk per move, rows (0: the default, 250,000)")
	hook := fs.String("provision-hook", "", "command that makes a new dedicated cluster when none is free: gets $SWITCHYARD_TENANT, prints the target as JSON")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	fs.StringVar(&cfg.Domains.BaseDomain, "base-domain", "", "the routers' -base-domain: custom domains under it are refused")
	verifyResolve := fs.String("verify-resolve", "", "domain=host:port,…: fetch a custom domain's verification token from this address instead of the domain's DNS one")
	fs.DurationVar(&cfg.Domains.VerifyTimeout, "verify-timeout", 5*time.Second, "bound on a custom domain's verification fetch")
	fs.DurationVar(&cfg.Domains.PendingTTL, "domain-pending-ttl", catalog.DefaultDomainPendingTTL, "how long an unverified custom domain claim holds its name against other tenants' claims")
	fs.BoolVar(&cfg.Domains.VerifyAllowPrivate, "verify-allow-private", false, "let the verification fetch reach loopback and private addresses")
	bf := addBackupFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	resolve, err := controller.ParseVerifyResolve(*verifyResolve)
	if err != nil {
		return err
	}
	cfg.Domains.VerifyResolve = resolve
	if err := bf.apply(ctx, &cfg); err != nil {
		return err
	}
	toks, err := controller.ParseTokens(*tokens)
	if err != nil {
		return err
	}
	if len(toks) == 0 {
		return errors.New("no API tokens: pass -tokens token:role,… or set SWITCHYARD_API_TOKENS")
	}
	cfg.Tokens, cfg.WebhookSecret, cfg.Logger = toks, []byte(strings.TrimSpace(*secret)), newLogger(*logLevel)
	if *hook != "" {
		cfg.ProvisionCluster = controller.CommandProvisioner(*hook)
	}
	client, err := consulClient(*consulAddr)
	if err != nil {
		return err
	}
	srv, err := controller.New(cfg, client)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
