package controller

import (
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// Usage: what the routers metered (README "Usage metering"), per tenant
// and minute, summed over every router process and cut into steps.

// maxUsagePoints bounds the steps one query may ask for.
const maxUsagePoints = 10000

// usageRange is a validated query: [From, To) in whole minutes, cut into Step.
type usageRange struct {
	From, To time.Time
	Step     time.Duration
}

// paramError is a 400 naming the query parameter that was wrong.
type paramError struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	Parameter string `json:"parameter"`
}

func failParam(c *gin.Context, param, msg string) {
	c.AbortWithStatusJSON(http.StatusBadRequest, paramError{Error: "invalid_parameter", Message: msg, Parameter: param})
}

// usageRetention is how far back usage is kept.
func (s *Server) usageRetention() time.Duration {
	if s.cfg.UsageRetention > 0 {
		return s.cfg.UsageRetention
	}
	return catalog.DefaultUsageRetention
}

// parseTime reads RFC 3339 or Unix seconds.
func parseTime(v string) (time.Time, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, errors.New("not RFC 3339 (2006-01-02T15:04:05Z) or Unix seconds")
	}
	return t.UTC(), nil
}

// parseStep reads a Go duration or whole days ("7d").
func parseStep(v string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, errors.New("not a duration such as 5m, 1h or 1d")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	step, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("not a duration such as 5m, 1h or 1d")
	}
	return step, nil
}

// parseUsageRange reads from, to and step (defaults: the last hour, and
// defStep, or the whole range if 0), answering 400 itself when one is wrong.
func (s *Server) parseUsageRange(c *gin.Context, now time.Time, defStep time.Duration) (usageRange, bool) {
	r := usageRange{To: now}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"to", &r.To}, {"from", &r.From}} {
		if v := c.Query(p.name); v != "" {
			t, err := parseTime(v)
			if err != nil {
				failParam(c, p.name, fmt.Sprintf("%s %q: %v", p.name, v, err))
				return r, false
			}
			*p.dst = t
		}
	}
	if c.Query("from") == "" {
		r.From = r.To.Add(-time.Hour)
	}
	if !r.From.Before(r.To) {
		failParam(c, "from", fmt.Sprintf("from (%s) must be before to (%s)", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339)))
		return r, false
	}
	r.From = r.From.Truncate(time.Minute)
	if t := r.To.Truncate(time.Minute); t.Before(r.To) {
		r.To = t.Add(time.Minute)
	}
	retention := s.usageRetention()
	switch {
	case r.From.Before(now.Add(-retention)):
		failParam(c, "from", fmt.Sprintf("from (%s) is beyond the usage retention of %s: the earliest is %s",
			r.From.Format(time.RFC3339), retention, now.Add(-retention).Truncate(time.Minute).Add(time.Minute).Format(time.RFC3339)))
		return r, false
	}
	return r, s.parseUsageStep(c, &r, defStep)
}

func (s *Server) parseUsageStep(c *gin.Context, r *usageRange, defStep time.Duration) bool {
	r.Step = defStep
	if v := c.Query("step"); v != "" {
		step, err := parseStep(v)
		if err != nil {
			failParam(c, "step", fmt.Sprintf("step %q: %v", v, err))
			return false
		}
		r.Step = step
		switch {
		case step < time.Minute || step%time.Minute != 0:
			failParam(c, "step", fmt.Sprintf("step %q: must be a whole number of minutes, at least 1m", v))
			return false
		case step > s.usageRetention():
			failParam(c, "step", fmt.Sprintf("step %q: longer than the usage retention of %s", v, s.usageRetention()))
			return false
		case (r.To.Sub(r.From)+step-1)/step > maxUsagePoints:
			failParam(c, "step", fmt.Sprintf("step %q: more than %d steps in the range; take a longer step", v, maxUsagePoints))
			return false
		}
	}
	if r.Step == 0 || r.Step > r.To.Sub(r.From) {
		r.Step = r.To.Sub(r.From)
	}
	return true
}

// statusClasses is the JSON of the requests by status class.
type statusClasses struct {
	C1xx uint64 `json:"1xx"`
	C2xx uint64 `json:"2xx"`
	C3xx uint64 `json:"3xx"`
	C4xx uint64 `json:"4xx"`
	C5xx uint64 `json:"5xx"`
}

// usagePoint is a tenant's usage over [Start, End).
type usagePoint struct {
	Start      time.Time     `json:"start"`
	End        time.Time     `json:"end"`
	Requests   uint64        `json:"requests"`
	ByClass    statusClasses `json:"by_status_class"`
	BytesIn    uint64        `json:"bytes_in"`
	BytesOut   uint64        `json:"bytes_out"`
	UpstreamMS float64       `json:"upstream_ms"`
}

func newUsagePoint(start, end time.Time, u catalog.UsageCounts) usagePoint {
	r := u.Requests
	return usagePoint{Start: start, End: end, Requests: u.Total(), BytesIn: u.BytesIn, BytesOut: u.BytesOut,
		ByClass:    statusClasses{r[0], r[1], r[2], r[3], r[4]},
		UpstreamMS: float64(u.UpstreamMicros) / 1000}
}

// usageResponse is GET /v1/tenants/{id}/usage.
type usageResponse struct {
	Tenant string       `json:"tenant"`
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Step   string       `json:"step"`
	Points []usagePoint `json:"points"`
	Total  usagePoint   `json:"total"`
}

// collectUsage sums every router's minutes in r per tenant (only tenant,
// if not empty) and step.
func (s *Server) collectUsage(c *gin.Context, r usageRange, tenant string) (map[string][]catalog.UsageCounts, error) {
	n := int((r.To.Sub(r.From) + r.Step - 1) / r.Step)
	out := map[string][]catalog.UsageCounts{}
	err := s.store.ScanUsage(c.Request.Context(), r.From, r.To, func(minute time.Time, t string, u catalog.UsageCounts) {
		if tenant != "" && t != tenant {
			return
		}
		steps := out[t]
		if steps == nil {
			steps = make([]catalog.UsageCounts, n)
			out[t] = steps
		}
		steps[int(minute.Sub(r.From)/r.Step)].Add(u)
	})
	return out, err
}

func (r usageRange) stepBounds(i int) (time.Time, time.Time) {
	start := r.From.Add(time.Duration(i) * r.Step)
	end := start.Add(r.Step)
	if end.After(r.To) {
		end = r.To
	}
	return start, end
}

func (s *Server) tenantUsage(c *gin.Context) {
	r, ok := s.parseUsageRange(c, time.Now().UTC(), time.Hour)
	if !ok {
		return
	}
	id := c.Param("id")
	if _, err := s.store.GetTenant(c.Request.Context(), id); err != nil {
		failErr(c, err)
		return
	}
	all, err := s.collectUsage(c, r, id)
	if err != nil {
		failErr(c, err)
		return
	}
	steps := all[id]
	if steps == nil {
		steps = make([]catalog.UsageCounts, (r.To.Sub(r.From)+r.Step-1)/r.Step)
	}
	resp := usageResponse{Tenant: id, From: r.From, To: r.To, Step: r.Step.String(), Points: make([]usagePoint, len(steps))}
	var total catalog.UsageCounts
	for i, u := range steps {
		start, end := r.stepBounds(i)
		resp.Points[i] = newUsagePoint(start, end, u)
		total.Add(u)
	}
	resp.Total = newUsagePoint(r.From, r.To, total)
	c.JSON(http.StatusOK, resp)
}

// usageRow is one line of the export: a tenant's usage in one step.
type usageRow struct {
	Tenant string `json:"tenant"`
	usagePoint
}

// usageExport is GET /v1/usage/export in JSON.
type usageExport struct {
	From time.Time  `json:"from"`
	To   time.Time  `json:"to"`
	Step string     `json:"step"`
	Rows []usageRow `json:"rows"`
}

// exportFormat is csv or json: the format parameter, else the Accept header.
func exportFormat(c *gin.Context) (string, bool) {
	switch f := c.Query("format"); f {
	case "csv", "json":
		return f, true
	case "":
		if strings.Contains(c.GetHeader("Accept"), "text/csv") {
			return "csv", true
		}
		return "json", true
	default:
		failParam(c, "format", fmt.Sprintf("format %q: csv or json", f))
		return "", false
	}
}

// exportUsage answers every tenant's usage in the range, one row per tenant
// and step with any request (by default one step: the whole range).
func (s *Server) exportUsage(c *gin.Context) {
	format, ok := exportFormat(c)
	if !ok {
		return
	}
	r, ok := s.parseUsageRange(c, time.Now().UTC(), 0)
	if !ok {
		return
	}
	all, err := s.collectUsage(c, r, "")
	if err != nil {
		failErr(c, err)
		return
	}
	rows := usageRows(r, all)
	if format == "json" {
		c.JSON(http.StatusOK, usageExport{From: r.From, To: r.To, Step: r.Step.String(), Rows: rows})
		return
	}
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", fmt.Sprintf(`attachment; filename="usage-%s-%s.csv"`, r.From.Format("200601021504"), r.To.Format("200601021504")))
	c.Status(http.StatusOK)
	_ = writeUsageCSV(c.Writer, rows)
}

// usageRows orders the export by tenant, then time, leaving out empty steps.
func usageRows(r usageRange, all map[string][]catalog.UsageCounts) []usageRow {
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rows := []usageRow{}
	for _, id := range ids {
		for i, u := range all[id] {
			if u.IsZero() {
				continue
			}
			start, end := r.stepBounds(i)
			rows = append(rows, usageRow{Tenant: id, usagePoint: newUsagePoint(start, end, u)})
		}
	}
	return rows
}

// usageCSVHeader is the export's CSV columns.
var usageCSVHeader = []string{"tenant", "start", "end", "requests", "status_1xx", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "bytes_in", "bytes_out", "upstream_ms"}

func writeUsageCSV(w interface{ Write([]byte) (int, error) }, rows []usageRow) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(usageCSVHeader)
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for _, r := range rows {
		_ = cw.Write([]string{r.Tenant, r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339), u(r.Requests),
			u(r.ByClass.C1xx), u(r.ByClass.C2xx), u(r.ByClass.C3xx), u(r.ByClass.C4xx), u(r.ByClass.C5xx),
			u(r.BytesIn), u(r.BytesOut), strconv.FormatFloat(r.UpstreamMS, 'f', 3, 64)})
	}
	cw.Flush()
	return cw.Error()
}
