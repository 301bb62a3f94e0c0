package main

import (
	"context"
	"flag"
	"time"

	"github.com/switchyard/switchyard/examples/orders"
)

func runApp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	service := fs.String("service", "app-shared", "Consul service this instance serves")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	consulAddr := fs.String("consul", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address")
	prefix := fs.String("catalog-prefix", "switchyard", "catalog KV prefix")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := consulClient(*consulAddr)
	if err != nil {
		return err
	}
	cfg := orders.DefaultConfig(*service, client)
	cfg.Listen, cfg.CatalogPrefix, cfg.Logger = *listen, *prefix, newLogger(*logLevel)
	srv, err := orders.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Stop(sctx)
}
