package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

const limitsUsage = "usage: switchyard limits plans | plan <plan> [--rps R --burst B] [--concurrent N] [--max-body BYTES] | " +
	"get <tenant> | set <tenant> [--rps R --burst B] [--concurrent N] [--max-body BYTES] | clear <tenant>"

// cliLimits is a plan's, an override's or the enforced limits.
type cliLimits struct {
	RequestsPerSecond  *float64 `json:"requests_per_second,omitempty"`
	Burst              *int64   `json:"burst,omitempty"`
	ConcurrentRequests *int64   `json:"concurrent_requests,omitempty"`
	MaxBodyBytes       *int64   `json:"max_body_bytes,omitempty"`
}

// runLimits: switchyard limits plans|plan|get|set|clear (through the
// control API). set sends only the flags given: the others keep the plan's.
func runLimits(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("limits "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	rps := fs.Float64("rps", 0, "requests per second across all routers (0: no limit); with --burst")
	burst := fs.Int64("burst", 0, "token bucket size (at least 1 with a rate)")
	conc := fs.Int64("concurrent", 0, "requests in flight across all routers (0: no limit)")
	body := fs.Int64("max-body", 0, "request body bytes (0: the router's own limit only)")
	id, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	var req cliLimits
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "rps":
			req.RequestsPerSecond = rps
		case "burst":
			req.Burst = burst
		case "concurrent":
			req.ConcurrentRequests = conc
		case "max-body":
			req.MaxBodyBytes = body
		}
	})
	if verb == "plans" || verb == "plan" {
		c.output = "json" // the policy is a document, not a table
	}
	switch {
	case verb == "plans":
		_, err := c.do(ctx, "GET", "/v1/plans", nil, nil)
		return err
	case verb == "plan" && id != "":
		_, err := c.do(ctx, "PUT", "/v1/plans/"+id+"/limits", req, nil)
		return err
	case verb == "get" && id != "":
		return c.tenantLimits(ctx, "GET", id, nil)
	case verb == "set" && id != "":
		return c.tenantLimits(ctx, "PUT", id, req)
	case verb == "clear" && id != "":
		return c.tenantLimits(ctx, "DELETE", id, nil)
	}
	return errors.New(limitsUsage)
}

// tenantLimits calls /v1/tenants/{id}/limits and prints the answer.
func (c *apiClient) tenantLimits(ctx context.Context, method, id string, body any) error {
	var res struct {
		Tenant    string    `json:"tenant"`
		Plan      string    `json:"plan"`
		PlanLimit cliLimits `json:"plan_limits"`
		Override  any       `json:"override"`
		Effective cliLimits `json:"effective"`
	}
	if _, err := c.do(ctx, method, "/v1/tenants/"+id+"/limits", body, &res); err != nil {
		return err
	}
	c.print(res, "TENANT\tPLAN\tRPS\tBURST\tCONCURRENT\tMAX BODY\tOVERRIDE", func(w io.Writer) {
		e := res.Effective
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", res.Tenant, res.Plan, figure(e.RequestsPerSecond), figure(e.Burst),
			figure(e.ConcurrentRequests), figure(e.MaxBodyBytes), res.Override != nil)
	})
	return nil
}

// figure prints a limit, "-" for none.
func figure[T float64 | int64](v *T) string {
	if v == nil || *v == 0 {
		return "-"
	}
	return fmt.Sprint(*v)
}
