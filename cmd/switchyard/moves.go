package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// migratorFlags are the flags every move verb shares.
type migratorFlags struct {
	consul  *string
	prefix  *string
	lockTTL *time.Duration
	output  *string
}

func addMigratorFlags(fs *flag.FlagSet) migratorFlags {
	return migratorFlags{
		consul:  fs.String("consul", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address"),
		prefix:  fs.String("catalog-prefix", "switchyard", "catalog KV prefix"),
		lockTTL: fs.Duration("lock-ttl", 10*time.Second, "TTL of the per-tenant move lock"),
		output:  fs.String("o", "table", "output: table or json"),
	}
}

func (f migratorFlags) migrator() (*migrator.Migrator, error) {
	client, err := consulClient(*f.consul)
	if err != nil {
		return nil, err
	}
	return migrator.New(client, migrator.Config{Prefix: *f.prefix, LockTTL: *f.lockTTL, Logger: newLogger("warn"), Hooks: faultHooks()})
}

// runMove: switchyard move <tenant> --to <target>.
func runMove(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("move", flag.ContinueOnError)
	mf := addMigratorFlags(fs)
	to := fs.String("to", "", "destination target id (required)")
	dry := fs.Bool("dry-run", false, "run the preflight only and print the report; change nothing")
	reason := fs.String("reason", "operator", "why (kept in the move record)")
	var opts migrator.Options
	fs.IntVar(&opts.ChunkRows, "chunk", 250_000, "rows per copy chunk")
	fs.IntVar(&opts.CopyStreams, "streams", 2, "parallel copy streams per table (key ranges)")
	fs.Float64Var(&opts.RateRows, "rate", 0, "copy at most this many rows per second (0: unlimited)")
	fs.DurationVar(&opts.Retention, "retention", 24*time.Hour, "keep the fenced source copy this long")
	tenant, rest := splitFirstArg(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if tenant == "" && fs.NArg() > 0 {
		tenant = fs.Arg(0)
	}
	if tenant == "" || *to == "" {
		return errors.New("usage: switchyard move <tenant> --to <target> [--dry-run]")
	}
	mg, err := mf.migrator()
	if err != nil {
		return err
	}
	req := migrator.Request{Tenant: tenant, To: *to, Reason: *reason, Options: opts}
	if *dry {
		rep, err := mg.Preflight(ctx, req)
		if err != nil {
			return err
		}
		printReport(rep, *mf.output)
		if !rep.OK {
			mf.auditRefusal(ctx, tenant, "move --to "+*to+" --dry-run", rep.Err())
			return errors.New("preflight failed: nothing was changed")
		}
		return nil
	}
	m, rep, err := mg.Create(ctx, req)
	if err != nil {
		if rep != nil {
			printReport(rep, *mf.output)
		}
		mf.auditRefusal(ctx, tenant, "move --to "+*to, err)
		return err
	}
	fmt.Printf("move %s: %s %s → %s\n", m.ID, m.Tenant, m.From, m.To)
	return runWithProgress(ctx, mg, m.ID)
}

// auditRefusal writes a residency refusal of a manual move to the audit
// log (as the controller does for its own), by the local user.
func (f migratorFlags) auditRefusal(ctx context.Context, tenant, what string, err error) {
	client, cerr := consulClient(*f.consul)
	if cerr == nil {
		who := "cli"
		if u, uerr := user.Current(); uerr == nil {
			who += ":" + u.Username
		}
		cerr = controller.RecordResidencyRefusal(ctx, client, *f.prefix, who, tenant, what, err)
	}
	if cerr != nil {
		fmt.Fprintf(os.Stderr, "warning: the refusal could not be written to the audit log: %v\n", cerr)
	}
}

// runWithProgress runs a move and draws a live progress line.
func runWithProgress(ctx context.Context, mg *migrator.Migrator, id string) error {
	done := make(chan error, 1)
	go func() { done <- mg.Run(ctx, id) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			m, gerr := mg.Get(context.WithoutCancel(ctx), id)
			if gerr == nil {
				fmt.Printf("\r%s\n", progressLine(m))
				if m.Phase == migrator.PhaseRetained || m.Phase == migrator.PhaseDone {
					fmt.Printf("switched in %s (requests held at most that long); the source copy stays fenced until %s\n",
						m.Pause.Round(time.Millisecond), m.RetainUntil.Format(time.RFC3339))
				}
			}
			if errors.Is(err, context.Canceled) {
				fmt.Println("stopped; the move is resumable: switchyard moves retry " + id)
				return nil
			}
			return err
		case <-tick.C:
			if m, err := mg.Get(ctx, id); err == nil {
				fmt.Printf("\r%-140s", progressLine(m))
			}
		}
	}
}

// progressLine is one line of a move's state: copy progress, the capture
// backlog with its in and out rates, the ETA to the switch (counting the
// backlog; "?" when it cannot be said) and what the move is waiting for.
func progressLine(m *migrator.Move) string {
	const width = 24
	p := m.Progress()
	filled := int(p * width)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	var rate float64
	for _, t := range m.Tables {
		if !t.Done && t.RowsPerS > 0 {
			rate = t.RowsPerS
		}
	}
	s := fmt.Sprintf("%s %3.0f%% %-9s %-8s", bar, p*100, m.Phase, m.Status)
	if rate > 0 && m.Phase == migrator.PhaseCopy {
		s += fmt.Sprintf(" %8.0f rows/s", rate)
	}
	s += fmt.Sprintf(" backlog %d", m.Backlog)
	if m.CapturePerS > 0 || m.ApplyPerS > 0 {
		s += fmt.Sprintf(" (+%.0f/s captured, %.0f/s apply)", m.CapturePerS, m.ApplyPerS)
	}
	if waiting(m) {
		eta := m.ETA
		if eta == "" {
			eta = "?"
		}
		s += " ETA " + eta
	}
	if m.Converging != nil && !*m.Converging {
		s += fmt.Sprintf(" NOT CONVERGING for %s", time.Since(m.StalledSince).Round(time.Second))
	}
	if m.Message != "" {
		s += " — " + m.Message
	}
	if m.Error != "" {
		s += " — " + m.Error
	}
	return s
}

// waiting reports whether the move still has copying or catching up to do
// before its switch.
func waiting(m *migrator.Move) bool {
	switch m.Phase {
	case migrator.PhasePreflight, migrator.PhaseProvision, migrator.PhaseCapture, migrator.PhaseCopy, migrator.PhaseCatchUp:
		return !m.Terminal() && m.Status != migrator.StatusAborting
	}
	return false
}

// printMove shows one move for a person: per-table copy progress, the
// capture backlog and rates, the ETA, whether catch-up converges and why not.
func printMove(m *migrator.Move) {
	fmt.Printf("move %s: %s %s → %s (%s → %s)\n", m.ID, m.Tenant, m.From, m.To, m.FromTier, m.ToTier)
	fmt.Printf("phase %s, %s\n", m.Phase, m.Status)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TABLE\tROWS\tOF\tROWS/S\tDONE")
	for _, t := range m.Tables {
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%v\n", t.Table, t.Rows, t.TotalRows, t.RowsPerS, t.Done)
	}
	w.Flush()
	fmt.Printf("capture backlog %d changes; captured %.0f/s, applied %.0f/s\n", m.Backlog, m.CapturePerS, m.ApplyPerS)
	if waiting(m) {
		eta := m.ETA
		if eta == "" {
			eta = "unknown"
		}
		fmt.Printf("ETA to the switch: %s\n", eta)
	}
	if m.Converging != nil {
		if *m.Converging {
			fmt.Println("catch-up converging: yes")
		} else {
			fmt.Printf("catch-up converging: NO, backlog not shrinking since %s\n", m.StalledSince.Format(time.RFC3339))
		}
	}
	if m.Message != "" {
		fmt.Println(m.Message)
	}
	if m.Error != "" {
		fmt.Println("error: " + m.Error)
	}
	if m.Pause > 0 {
		fmt.Printf("switch pause %s\n", m.Pause.Round(time.Millisecond))
	}
}

func printReport(rep *migrator.PreflightReport, output string) {
	if output == "json" {
		_ = json.NewEncoder(os.Stdout).Encode(rep)
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CHECK\tOK\tDETAIL\tFIX")
	for _, c := range rep.Checks {
		ok := "ok"
		if !c.OK {
			ok = "FAIL"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, ok, c.Detail, c.Fix)
	}
	w.Flush()
	fmt.Printf("tenant data: %d rows, ~%d bytes in %d tables\n", rep.Rows, rep.Bytes, len(rep.Tables))
}

// runMoves: switchyard moves ls|show|abort|retry|resume.
func runMoves(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("moves "+verb, flag.ContinueOnError)
	mf := addMigratorFlags(fs)
	id, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	mg, err := mf.migrator()
	if err != nil {
		return err
	}
	if id == "" && (verb == "show" || verb == "watch" || verb == "abort" || verb == "retry") {
		return errors.New("usage: switchyard moves " + verb + " <move id>")
	}
	switch verb {
	case "ls":
		return listMoves(ctx, mg, *mf.output)
	case "show":
		return showMove(ctx, mg, id, *mf.output)
	case "watch":
		return watchMove(ctx, mg, id)
	case "abort":
		m, err := mg.Abort(ctx, id)
		if m != nil {
			fmt.Println(m.Summary())
		}
		return err
	case "retry":
		return retryMove(ctx, mg, id)
	case "resume":
		return mg.ResumeAll(ctx)
	default:
		return errors.New("usage: switchyard moves ls|show|watch|abort|retry|resume")
	}
}

// listMoves prints every move, as a table or JSON.
func listMoves(ctx context.Context, mg *migrator.Migrator, output string) error {
	moves, err := mg.List(ctx)
	if err != nil {
		return err
	}
	if output == "json" {
		return json.NewEncoder(os.Stdout).Encode(moves)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTENANT\tFROM\tTO\tPHASE\tSTATUS\tPROGRESS\tPAUSE\tERROR")
	for _, m := range moves {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\t%s\n", m.ID, m.Tenant, m.From, m.To, m.Phase, m.Status,
			m.Progress()*100, m.Pause.Round(time.Millisecond), m.Error)
	}
	return w.Flush()
}

// showMove prints one move, readable or as JSON.
func showMove(ctx context.Context, mg *migrator.Migrator, id, output string) error {
	m, err := mg.Get(ctx, id)
	if err != nil {
		return err
	}
	if output != "json" {
		printMove(m)
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// watchMove redraws a move's progress line until it ends, pauses or is
// retained, or ctx ends.
func watchMove(ctx context.Context, mg *migrator.Migrator, id string) error {
	for {
		m, err := mg.Get(ctx, id)
		if err != nil {
			return err
		}
		fmt.Printf("\r%-140s", progressLine(m))
		if m.Terminal() || m.Status == migrator.StatusPaused || m.Phase == migrator.PhaseRetained {
			fmt.Println()
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Println()
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// retryMove un-pauses a paused move and runs it here, with progress.
func retryMove(ctx context.Context, mg *migrator.Migrator, id string) error {
	m, err := mg.Get(ctx, id)
	if err != nil {
		return err
	}
	if m.Status == migrator.StatusPaused {
		if _, err := mg.Retry(ctx, id); err != nil {
			return err
		}
	}
	return runWithProgress(ctx, mg, id)
}

// splitFirstArg takes a leading positional argument off args.
func splitFirstArg(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}
