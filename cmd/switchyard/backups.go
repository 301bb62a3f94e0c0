package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/controller"
)

// cliJob is a backup or restore job as the controller reports it.
type cliJob struct {
	ID       string                `json:"id"`
	Kind     string                `json:"kind"`
	State    string                `json:"state"`
	Progress backup.Progress       `json:"progress"`
	Backup   string                `json:"backup"`
	As       string                `json:"as"`
	Target   string                `json:"target"`
	Error    string                `json:"error"`
	InPlace  *backup.InPlaceResult `json:"in_place"`
}

// runBackup: switchyard backup <tenant> [--store s].
func runBackup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	c := addAPIFlags(fs)
	store := fs.String("store", "", "backup store name (default: the first the tenant's residency allows)")
	tenant, rest := splitFirstArg(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if tenant == "" || fs.NArg() != 0 {
		return errors.New("usage: switchyard backup <tenant> [--store name]")
	}
	var job cliJob
	body := map[string]string{}
	if *store != "" {
		body["store"] = *store
	}
	if _, err := c.do(ctx, "POST", "/v1/tenants/"+url.PathEscape(tenant)+"/backups", body, &job); err != nil {
		return err
	}
	return c.follow(ctx, job)
}

// runRestore: switchyard restore <tenant> --from <backup> (--as <id> [--target t] | --in-place),
// or switchyard restore <tenant> --undo.
func runRestore(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	c := addAPIFlags(fs)
	from := fs.String("from", "", "backup id (switchyard backups ls <tenant>)")
	as := fs.String("as", "", "restore as this new tenant")
	inPlace := fs.Bool("in-place", false, "restore onto the tenant itself: its data becomes the backup's (the replaced data is retained)")
	undo := fs.Bool("undo", false, "undo the tenant's latest in-place restore (its replaced data comes back)")
	target := fs.String("target", "", "target to restore onto, any tier (default: the backup's source target)")
	tenant, rest := splitFirstArg(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	const usage = "usage: switchyard restore <tenant> --from <backup> (--as <new id> [--target t] | --in-place), or --undo"
	if tenant == "" || fs.NArg() != 0 {
		return errors.New(usage)
	}
	if *undo {
		return c.undoRestore(ctx, tenant)
	}
	if *from == "" || (*as == "") != *inPlace || *inPlace && *target != "" {
		return errors.New(usage)
	}
	var job cliJob
	body := map[string]string{"from": *from, "as": *as}
	if *target != "" {
		body["target"] = *target
	}
	if _, err := c.do(ctx, "POST", "/v1/tenants/"+url.PathEscape(tenant)+"/restore", body, &job); err != nil {
		return err
	}
	return c.follow(ctx, job)
}

// undoRestore undoes the tenant's latest in-place restore.
func (c *apiClient) undoRestore(ctx context.Context, tenant string) error {
	var res backup.InPlaceResult
	if _, err := c.do(ctx, "POST", "/v1/tenants/"+url.PathEscape(tenant)+"/restore/undo", map[string]string{}, &res); err != nil {
		return err
	}
	if c.output == "json" {
		c.print(res, "", nil)
		return nil
	}
	fmt.Printf("undone: %s has its data from before the restore again (held %s); the restored data is retained as %s\n", tenant, res.Hold, res.Retained)
	return nil
}

// runBackups: switchyard backups ls <tenant> | rm <backup>.
func runBackups(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: switchyard backups ls <tenant> | rm <backup>")
	}
	verb := args[0]
	fs := flag.NewFlagSet("backups "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	arg, rest := splitFirstArg(args[1:])
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if arg == "" || fs.NArg() != 0 {
		return errors.New("usage: switchyard backups ls <tenant> | rm <backup>")
	}
	switch verb {
	case "ls":
		var out struct {
			Backups []struct {
				Store string `json:"store"`
				backup.Manifest
			} `json:"backups"`
		}
		if _, err := c.do(ctx, "GET", "/v1/tenants/"+url.PathEscape(arg)+"/backups", nil, &out); err != nil {
			return err
		}
		c.print(out, "ID\tSTORE\tREGION\tCREATED\tSOURCE\tROWS\tENCRYPTED", func(w io.Writer) {
			for _, b := range out.Backups {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s/%s\t%d\t%v\n", b.ID, b.Store, b.Region, b.CreatedAt.Format(time.RFC3339),
					b.Source.Tier, b.Source.Target, b.Rows(), b.Encryption != "")
			}
		})
		return nil
	case "rm":
		_, err := c.do(ctx, "DELETE", "/v1/backups/"+url.PathEscape(arg), nil, nil)
		if err == nil && c.output != "json" {
			fmt.Println("deleted", arg)
		}
		return err
	}
	return fmt.Errorf("backups: unknown verb %q (ls, rm)", verb)
}

// follow polls a job until it ends, drawing a progress bar on stderr.
func (c *apiClient) follow(ctx context.Context, job cliJob) error {
	for job.State == "running" {
		drawBar(os.Stderr, job)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := c.do(ctx, "GET", "/v1/backup-jobs/"+url.PathEscape(job.ID), nil, &job); err != nil {
			return err
		}
	}
	drawBar(os.Stderr, job)
	fmt.Fprintln(os.Stderr)
	if job.State == "failed" {
		return fmt.Errorf("%s %s failed: %s", job.Kind, job.ID, job.Error)
	}
	if job.InPlace != nil {
		fmt.Printf("restored %s in place onto %s on %s (%d rows, held %s); the replaced data is retained as %s until %s (switchyard restore %s --undo)\n",
			job.Backup, job.As, job.Target, job.InPlace.Rows, job.InPlace.Hold, job.InPlace.Retained, job.InPlace.RetainUntil.Format(time.RFC3339), job.As)
	} else if job.Kind == "restore" {
		fmt.Printf("restored %s as %s on %s (%d rows)\n", job.Backup, job.As, job.Target, job.Progress.RowsTotal)
	} else {
		fmt.Printf("backup %s (%d rows)\n", job.Backup, job.Progress.RowsTotal)
	}
	return nil
}

// drawBar draws "phase [=====>    ] done/total rows".
func drawBar(w io.Writer, job cliJob) {
	const width = 30
	p := job.Progress
	filled := 0
	if p.RowsTotal > 0 {
		filled = int(float64(width) * float64(p.RowsDone) / float64(p.RowsTotal))
	}
	if job.State == "done" {
		filled = width
	}
	filled = min(max(filled, 0), width)
	phase := p.Phase
	if phase == "" {
		phase = job.Kind
	}
	fmt.Fprintf(w, "\r%-8s [%s%s] %d/%d rows", phase, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), p.RowsDone, p.RowsTotal)
}

// backupFlags configure the controller's backup stores and key.
type backupFlags struct {
	dirs, s3s       string
	keyFile, keyEnv string
}

func addBackupFlags(fs *flag.FlagSet) *backupFlags {
	b := &backupFlags{}
	fs.StringVar(&b.dirs, "backup-dir", "", "backup stores in local directories: name=dir@region,…")
	fs.StringVar(&b.s3s, "backup-s3", "", "backup stores in S3 buckets: name=host:port/bucket@region,… (keys: $SWITCHYARD_S3_ACCESS_KEY, $SWITCHYARD_S3_SECRET_KEY; https unless $SWITCHYARD_S3_INSECURE=1)")
	fs.StringVar(&b.keyFile, "backup-key-file", "", "file holding the AES-256 key that seals backups (64 hex digits); or $SWITCHYARD_BACKUP_KEY")
	b.keyEnv = "SWITCHYARD_BACKUP_KEY"
	return b
}

// apply opens the stores and reads the key into cfg.
func (b *backupFlags) apply(ctx context.Context, cfg *controller.Config) error {
	key, err := backup.LoadKey(b.keyFile, b.keyEnv)
	if err != nil {
		return err
	}
	cfg.BackupKey, cfg.BackupStores = key, map[string]backup.Store{}
	for _, spec := range splitList(b.dirs) {
		name, dir, region, err := parseStoreSpec(spec)
		if err != nil {
			return err
		}
		st, err := backup.NewDirStore(dir, region)
		if err != nil {
			return err
		}
		cfg.BackupStores[name] = st
	}
	for _, spec := range splitList(b.s3s) {
		name, loc, region, err := parseStoreSpec(spec)
		if err != nil {
			return err
		}
		endpoint, bucket, ok := strings.Cut(loc, "/")
		if !ok {
			return fmt.Errorf("backup store %s: want host:port/bucket", name)
		}
		st, err := backup.NewS3Store(ctx, backup.S3Config{Endpoint: endpoint, Bucket: bucket, Region: region,
			AccessKey: os.Getenv("SWITCHYARD_S3_ACCESS_KEY"), SecretKey: os.Getenv("SWITCHYARD_S3_SECRET_KEY"),
			Secure: os.Getenv("SWITCHYARD_S3_INSECURE") != "1"})
		if err != nil {
			return err
		}
		cfg.BackupStores[name] = st
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseStoreSpec reads "name=location@region".
func parseStoreSpec(spec string) (name, loc, region string, err error) {
	name, rest, ok := strings.Cut(spec, "=")
	if !ok || name == "" {
		return "", "", "", fmt.Errorf("backup store %q: want name=location@region", spec)
	}
	i := strings.LastIndex(rest, "@")
	if i <= 0 || i == len(rest)-1 {
		return "", "", "", fmt.Errorf("backup store %q: want name=location@region", spec)
	}
	return name, rest[:i], rest[i+1:], nil
}
