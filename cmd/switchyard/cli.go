package main

import (
	"time"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/switchyard/switchyard/controller"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
)

// apiClient talks to the controller for the operator verbs.
type apiClient struct {
	base, token, output string
}

func addAPIFlags(fs *flag.FlagSet) *apiClient {
	c := &apiClient{}
	fs.StringVar(&c.base, "controller", envOr("SWITCHYARD_CONTROLLER", "http://127.0.0.1:7070"), "controller URL")
	fs.StringVar(&c.token, "token", os.Getenv("SWITCHYARD_TOKEN"), "API bearer token (or $SWITCHYARD_TOKEN)")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	return c
}

func (c *apiClient) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.base, "/")+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("controller: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(data, &e)
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error, e.Message)
	}
	if c.output == "json" && out == nil {
		os.Stdout.Write(data)
		return resp.StatusCode, nil
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

func (c *apiClient) print(v any, header string, rows func(w io.Writer)) {
	if c.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	rows(w)
	w.Flush()
}

type cliTenant struct {
	ID     string            `json:"id"`
	Plan   string            `json:"plan"`
	Tier   string            `json:"tier"`
	Target string            `json:"target"`
	State  string            `json:"state"`
	Epoch  uint64            `json:"epoch"`
	Labels map[string]string `json:"labels"`
	// Residency is the regions the tenant may live in (none: any).
	Residency []string `json:"residency,omitempty"`
}

// runTenants: switchyard tenants ls|get|create|set-plan.
func runTenants(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("tenants "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	plan := fs.String("plan", "", "plan (create, set-plan)")
	filter := fs.String("filter", "", "ls: tier=…,target=…,plan=…,state=…")
	residency := fs.String("residency", "", "create, set-residency: regions the tenant may live in, comma-separated (eu,eu2); set-residency without it clears")
	usage := addUsageFlags(fs)
	id, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	switch verb {
	case "ls":
		q := "?limit=1000"
		for _, kv := range strings.Split(*filter, ",") {
			if kv != "" {
				q += "&" + kv
			}
		}
		var res struct{ Tenants []cliTenant }
		if _, err := c.do(ctx, "GET", "/v1/tenants"+q, nil, &res); err != nil {
			return err
		}
		c.print(res, "TENANT\tPLAN\tTIER\tTARGET\tSTATE\tEPOCH", func(w io.Writer) {
			for _, t := range res.Tenants {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", t.ID, t.Plan, t.Tier, t.Target, t.State, t.Epoch)
			}
		})
		return nil
	case "get":
		var t cliTenant
		if _, err := c.do(ctx, "GET", "/v1/tenants/"+id, nil, &t); err != nil {
			return err
		}
		c.print(t, "TENANT\tPLAN\tTIER\tTARGET\tSTATE\tEPOCH", func(w io.Writer) {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", t.ID, t.Plan, t.Tier, t.Target, t.State, t.Epoch)
		})
		return nil
	case "create":
		var res map[string]any
		body := map[string]any{"id": id, "plan": *plan}
		if regions := parseRegions(*residency); len(regions) > 0 {
			body["residency"] = regions
		}
		if _, err := c.do(ctx, "POST", "/v1/tenants", body, &res); err != nil {
			return err
		}
		fmt.Printf("created %s on plan %s: %v\n", id, *plan, res["placement"])
		return nil
	case "usage":
		return tenantUsage(ctx, c, id, usage)
	case "set-residency":
		var t cliTenant
		if _, err := c.do(ctx, "PUT", "/v1/tenants/"+id+"/residency", map[string]any{"residency": parseRegions(*residency)}, &t); err != nil {
			return err
		}
		fmt.Printf("%s may live in %v (on %s)\n", id, regionsText(t.Residency), t.Target)
		return nil
	case "set-plan":
		var res struct {
			Move *struct{ ID, From, To string } `json:"move"`
		}
		status, err := c.do(ctx, "PUT", "/v1/tenants/"+id+"/plan", map[string]any{"plan": *plan}, &res)
		if err != nil {
			return err
		}
		if status == http.StatusAccepted && res.Move != nil {
			fmt.Printf("plan set; moving %s %s → %s (move %s): switchyard moves watch %s\n", id, res.Move.From, res.Move.To, res.Move.ID, res.Move.ID)
		} else {
			fmt.Println("plan set; the tier is unchanged, nothing moves")
		}
		return nil
	}
	return errors.New("usage: switchyard tenants ls|get <id>|create <id> --plan P [--residency eu,eu2]|set-plan <id> --plan P|set-residency <id> [--residency eu,eu2]|usage <id> [--from T --to T --step D]")
}

// parseRegions splits a --residency value ("eu, eu2") into regions; the
// controller validates them.
func parseRegions(s string) []string {
	regions := []string{}
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			regions = append(regions, r)
		}
	}
	return regions
}

func regionsText(regions []string) string {
	if len(regions) == 0 {
		return "any region"
	}
	return strings.Join(regions, ", ")
}

// runTargets: switchyard targets ls|register|cordon|drain.
func runTargets(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("targets "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	file := fs.String("f", "", "register: JSON file describing the target (- for stdin)")
	undo := fs.Bool("undo", false, "cordon: uncordon")
	mode := addPlanFlags(fs, "drain")
	id, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	switch verb {
	case "ls":
		var res struct {
			Targets []struct {
				ID, Tier, Service string
				Cordoned          bool
				TenantCount       int `json:"tenant_count"`
				Capacity          struct{ Tenants int }
			}
		}
		if _, err := c.do(ctx, "GET", "/v1/targets", nil, &res); err != nil {
			return err
		}
		c.print(res, "TARGET\tTIER\tSERVICE\tTENANTS\tCAPACITY\tCORDONED", func(w io.Writer) {
			for _, t := range res.Targets {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%v\n", t.ID, t.Tier, t.Service, t.TenantCount, t.Capacity.Tenants, t.Cordoned)
			}
		})
		return nil
	case "register":
		var body json.RawMessage
		var data []byte
		var err error
		if *file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		body = data
		_, err = c.do(ctx, "POST", "/v1/targets", body, nil)
		return err
	case "cordon":
		_, err := c.do(ctx, "POST", "/v1/targets/"+id+"/cordon", map[string]bool{"cordoned": !*undo}, nil)
		return err
	case "drain":
		apply, err := mode.applying()
		if err != nil {
			return err
		}
		return c.planVerb(ctx, "/v1/targets/"+id+"/drain", apply)
	}
	return errors.New("usage: switchyard targets ls|register -f t.json|cordon <id> [--undo]|drain <id> [--apply]")
}

// runRebalance: switchyard rebalance [--apply].
func runRebalance(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rebalance", flag.ContinueOnError)
	c := addAPIFlags(fs)
	mode := addPlanFlags(fs, "rebalance")
	if err := fs.Parse(args); err != nil {
		return err
	}
	apply, err := mode.applying()
	if err != nil {
		return err
	}
	return c.planVerb(ctx, "/v1/rebalance", apply)
}

// planFlags are the --apply and --dry-run flags of a verb that plans moves
// (rebalance, targets drain). A dry run is the default; --dry-run is kept
// so that scripts passing it keep working.
type planFlags struct {
	fs     *flag.FlagSet
	apply  *bool
	dryRun *bool
}

func addPlanFlags(fs *flag.FlagSet, verb string) *planFlags {
	return &planFlags{
		fs:     fs,
		apply:  fs.Bool("apply", false, verb+": carry the plan out (default: a dry run that prints the plan and changes nothing)"),
		dryRun: fs.Bool("dry-run", true, verb+": print the plan only (the default)"),
	}
}

// applying reports, once the flags are parsed, whether to carry the plan out.
func (p *planFlags) applying() (bool, error) {
	dryRunSet := false
	p.fs.Visit(func(f *flag.Flag) { dryRunSet = dryRunSet || f.Name == "dry-run" })
	return planMode(*p.apply, dryRunSet, *p.dryRun)
}

// planMode decides between a dry run and applying: only --apply applies.
// Flags that contradict each other are refused rather than guessed at.
func planMode(apply, dryRunSet, dryRun bool) (bool, error) {
	switch {
	case apply && dryRunSet && dryRun:
		return false, errors.New("--apply and --dry-run contradict each other: pass one")
	case !apply && dryRunSet && !dryRun:
		return false, errors.New("--dry-run=false does not carry a plan out: pass --apply")
	}
	return apply, nil
}

// planVerb asks for a plan, or for it to be carried out when apply. The body
// always says dry_run explicitly (false only when applying), so the answer
// does not depend on the server's default.
func (c *apiClient) planVerb(ctx context.Context, path string, apply bool) error {
	var res struct {
		Plan struct {
			Moves []struct {
				Tenant, From, To, Reason string
				Bytes                    int64
			}
			Converged bool
			Note      string
		}
		Moves []struct{ ID string }
	}
	if _, err := c.do(ctx, "POST", path, map[string]any{"dry_run": !apply}, &res); err != nil {
		return err
	}
	c.print(res, "TENANT\tFROM\tTO\tBYTES\tWHY", func(w io.Writer) {
		for _, m := range res.Plan.Moves {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", m.Tenant, m.From, m.To, m.Bytes, m.Reason)
		}
	})
	if c.output != "json" {
		fmt.Printf("%d moves; converged: %v. %s\n", len(res.Plan.Moves), res.Plan.Converged, res.Plan.Note)
		if apply {
			fmt.Printf("started %d moves: switchyard moves ls\n", len(res.Moves))
		} else {
			fmt.Println("dry run: nothing changed; pass --apply to carry the plan out")
		}
	}
	return nil
}

// runBilling: switchyard billing plan-changed <tenant> <plan> — what a
// billing system sends: a signed plan.changed webhook.
func runBilling(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	tenant, rest := splitFirstArg(rest)
	plan, rest := splitFirstArg(rest)
	fs := flag.NewFlagSet("billing "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	secretFile := fs.String("secret-file", ".data/webhook-secret", "file holding the webhook HMAC secret")
	event := fs.String("event", "", "event id (default: a new one)")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if verb != "plan-changed" || tenant == "" || plan == "" {
		return errors.New("usage: switchyard billing plan-changed <tenant> <plan> [--secret-file F] [--event ID]")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	id := *event
	if id == "" {
		id = fmt.Sprintf("evt_%d", time.Now().UnixNano())
	}
	body, _ := json.Marshal(controller.BillingEvent{ID: id, Type: "plan.changed", Tenant: tenant, Plan: plan})
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(c.base, "/")+"/v1/webhooks/billing", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(controller.SignatureHeader, controller.SignWebhook([]byte(strings.TrimSpace(string(secret))), body, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s → %d %s\n", id, resp.StatusCode, out)
	if resp.StatusCode >= 400 {
		return fmt.Errorf("webhook refused")
	}
	return nil
}
