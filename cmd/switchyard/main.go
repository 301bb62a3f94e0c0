// Command switchyard is Switchyard's one binary: the local dev stack, the
// router, the reference app and the operator verbs.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"dev":        {"run the whole stack locally (Consul, PostgreSQL, apps, router, demo tenants)", runDev},
	"router":     {"run the tenant router", runRouter},
	"app":        {"run an instance of the reference orders app", runApp},
	"move":       {"move a tenant to another target online (--dry-run: preflight only)", runMove},
	"moves":      {"list, show, watch, abort, retry or resume moves", runMoves},
	"controller": {"run a control API replica (leader-elected move scheduler)", runController},
	"tenants":    {"ls, get, create, set-plan, usage (through the control API)", runTenants},
	"targets":    {"ls, register, cordon, drain (a dry run unless --apply) (through the control API)", runTargets},
	"rebalance":  {"plan (a dry run, the default) or --apply a rebalance of the shared pools", runRebalance},
	"billing":    {"plan-changed <tenant> <plan>: send a signed billing webhook", runBilling},
	"limits":     {"plans, plan <plan>, get|set|clear <tenant>: per-plan and per-tenant limits (through the control API)", runLimits},
	"domains":    {"add|ls|verify|rm <tenant> [<domain>]: tenants' custom domains (through the control API)", runDomains},
	"backup":     {"<tenant> [--store s]: back the tenant up, with a progress bar (through the control API)", runBackup},
	"backups":    {"ls <tenant>, rm <backup>: list or delete backups (through the control API)", runBackups},
	"restore":    {"<tenant> --from <backup> --as <id> [--target t]: restore as a new tenant on any tier; --from <backup> --in-place: onto the tenant itself; --undo: undo that (through the control API)", runRestore},
	"certs":      {"put <name> --cert --key: a TLS certificate every router serves by SNI (through the control API)", runCerts},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: switchyard <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'switchyard <command> -h' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "switchyard: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "switchyard %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// newLogger returns the process's structured logger.
func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func httpStatus(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
