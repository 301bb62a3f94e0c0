package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
)

const domainsUsage = "usage: switchyard domains add <tenant> <domain> | ls <tenant> | verify <tenant> <domain> | rm <tenant> <domain>"

// cliDomain is a tenant's custom domain as the API answers it.
type cliDomain struct {
	Domain     string `json:"domain"`
	Tenant     string `json:"tenant"`
	State      string `json:"state"`
	Token      string `json:"token"`
	VerifiedAt string `json:"verified_at,omitempty"`
}

// runDomains: switchyard domains add|ls|verify|rm (through the control API).
func runDomains(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("domains "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	tenant, rest := splitFirstArg(rest)
	domain, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if tenant == "" || (verb != "ls" && domain == "") {
		return errors.New(domainsUsage)
	}
	base := "/v1/tenants/" + url.PathEscape(tenant) + "/domains"
	one := base + "/" + url.PathEscape(domain)
	var d cliDomain
	switch verb {
	case "ls":
		var res struct {
			Domains []cliDomain `json:"domains"`
		}
		if _, err := c.do(ctx, "GET", base, nil, &res); err != nil {
			return err
		}
		c.print(res, "DOMAIN\tTENANT\tSTATE\tVERIFIED", func(w io.Writer) {
			for _, d := range res.Domains {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", d.Domain, d.Tenant, d.State, d.VerifiedAt)
			}
		})
		return nil
	case "add":
		if _, err := c.do(ctx, "POST", base, map[string]string{"domain": domain}, &d); err != nil {
			return err
		}
	case "verify":
		if _, err := c.do(ctx, "POST", one+"/verify", nil, &d); err != nil {
			return err
		}
	case "rm":
		if _, err := c.do(ctx, "DELETE", one, nil, &d); err != nil {
			return err
		}
	default:
		return errors.New(domainsUsage)
	}
	c.print(d, "DOMAIN\tTENANT\tSTATE\tTOKEN", func(w io.Writer) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", d.Domain, d.Tenant, d.State, d.Token)
	})
	if verb == "add" && c.output != "json" {
		fmt.Printf("\nserve the token at http://%s/.well-known/switchyard/%s, then: switchyard domains verify %s %s\n", d.Domain, d.Token, tenant, d.Domain)
	}
	return nil
}
