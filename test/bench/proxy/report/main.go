// Command report is the bookkeeping half of scripts/bench-proxy.sh: it parses
// wrk --latency output into one row of a results file, prints each round's
// table, and prints the final summary (medians over rounds, ratios to nginx)
// and writes it as JSON.
//
//	report add     -results F -round N -order K -target NAME < wrk.out
//	report round   -results F -round N
//	report summary -results F -json OUT [-meta key=value ...]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The goal the router is held to, relative to nginx.
const (
	goalRPSRatioMin = 0.9
	goalP99RatioMax = 1.2
	baseline        = "nginx"
	subject         = "router"
)

// targetOrder is the order targets are listed in tables.
var targetOrder = []string{"direct", "nginx", "haproxy", "router"}

// Run is one wrk run against one target.
type Run struct {
	Round        int     `json:"round"`
	Order        int     `json:"order"` // position within the round, from 1
	Target       string  `json:"target"`
	RPS          float64 `json:"rps"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	Requests     int64   `json:"requests"`
	Non2xx       int64   `json:"non_2xx"`
	SocketErrors int64   `json:"socket_errors"`
	// OtherCPUPct estimates the share of the machine's CPU that work other
	// than the benchmark used during the run; StealPct is hypervisor steal.
	OtherCPUPct float64 `json:"other_cpu_pct"`
	StealPct    float64 `json:"steal_pct"`
}

// disturbedPct: a run during which other work used more than this share of
// the machine is flagged as disturbed.
const disturbedPct = 10

// Disturbed reports whether other work or the hypervisor took a noticeable
// share of the CPUs during the run.
func (r Run) Disturbed() bool { return r.OtherCPUPct+r.StealPct > disturbedPct }

// Valid reports whether every request of the run got a 2xx/3xx answer.
func (r Run) Valid() bool { return r.Non2xx == 0 && r.SocketErrors == 0 && r.Requests > 0 }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: report add|round|summary [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "add":
		err = cmdAdd(os.Args[2:])
	case "round":
		err = cmdRound(os.Args[2:])
	case "summary":
		err = cmdSummary(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func cmdAdd(args []string) error {
	fs := flag.NewFlagSet("add", flag.ExitOnError)
	results := fs.String("results", "", "results file (JSON lines) to append to")
	round := fs.Int("round", 0, "round number")
	order := fs.Int("order", 0, "position within the round")
	target := fs.String("target", "", "target name")
	other := fs.Float64("other-cpu", 0, "share of the machine's CPU other work used during the run, percent")
	steal := fs.Float64("steal", 0, "hypervisor steal during the run, percent")
	_ = fs.Parse(args)
	run, err := ParseWrk(os.Stdin)
	if err != nil {
		return fmt.Errorf("%s round %d: %w", *target, *round, err)
	}
	run.Round, run.Order, run.Target = *round, *order, *target
	run.OtherCPUPct, run.StealPct = *other, *steal
	line, err := json.Marshal(run)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	flagNote := ""
	if !run.Valid() {
		flagNote = fmt.Sprintf("   !! %d non-2xx, %d socket errors", run.Non2xx, run.SocketErrors)
	}
	fmt.Printf("    %-8s %10.0f req/s   p50 %7.3f ms   p99 %7.3f ms   other CPU %4.1f%%%s%s\n",
		run.Target, run.RPS, run.P50ms, run.P99ms, run.OtherCPUPct+run.StealPct, disturbedMark(run), flagNote)
	return nil
}

var (
	reRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reLatency  = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	reRequests = regexp.MustCompile(`(?m)^\s+(\d+) requests in `)
	reNon2xx   = regexp.MustCompile(`(?m)^\s+Non-2xx or 3xx responses:\s+(\d+)`)
	reSocket   = regexp.MustCompile(`(?m)^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// ParseWrk reads the output of `wrk --latency` and returns requests/s, the
// 50th and 99th percentile latencies in milliseconds and the error counts.
func ParseWrk(r io.Reader) (Run, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Run{}, err
	}
	out := string(b)
	var run Run
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return Run{}, fmt.Errorf("no Requests/sec line in wrk output:\n%s", out)
	}
	run.RPS, _ = strconv.ParseFloat(m[1], 64)
	got := map[string]float64{}
	for _, m := range reLatency.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		got[m[1]] = toMillis(v, m[3])
	}
	p50, ok50 := got["50"]
	p99, ok99 := got["99"]
	if !ok50 || !ok99 {
		return Run{}, fmt.Errorf("no 50%%/99%% latency lines (was wrk run with --latency?):\n%s", out)
	}
	run.P50ms, run.P99ms = p50, p99
	if m := reRequests.FindStringSubmatch(out); m != nil {
		run.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		run.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			run.SocketErrors += n
		}
	}
	return run, nil
}

func toMillis(v float64, unit string) float64 {
	switch unit {
	case "us":
		return v / 1e3
	case "s":
		return v * 1e3
	case "m":
		return v * 60e3
	case "h":
		return v * 3600e3
	}
	return v
}

func readRuns(path string) ([]Run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []Run
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		runs = append(runs, r)
	}
	return runs, sc.Err()
}

func cmdRound(args []string) error {
	fs := flag.NewFlagSet("round", flag.ExitOnError)
	results := fs.String("results", "", "results file")
	round := fs.Int("round", 0, "round to print")
	_ = fs.Parse(args)
	runs, err := readRuns(*results)
	if err != nil {
		return err
	}
	byTarget := map[string]Run{}
	for _, r := range runs {
		if r.Round == *round {
			byTarget[r.Target] = r
		}
	}
	base, haveBase := byTarget[baseline]
	fmt.Printf("  round %-6d %10s %9s %9s %15s %13s %10s\n", *round, "req/s", "p50 ms", "p99 ms", "req/s vs nginx", "p99 vs nginx", "other CPU")
	for _, name := range targetNames(byTarget) {
		r := byTarget[name]
		rr, pr := "-", "-"
		if haveBase {
			rr, pr = ratioText(r.RPS, base.RPS), ratioText(r.P99ms, base.P99ms)
		}
		fmt.Printf("  %-12s %10.0f %9.3f %9.3f %15s %13s %9.1f%%%s%s\n", name, r.RPS, r.P50ms, r.P99ms, rr, pr,
			r.OtherCPUPct+r.StealPct, disturbedMark(r), invalidMark(r))
	}
	return nil
}

func disturbedMark(r Run) string {
	if r.Disturbed() {
		return " (disturbed)"
	}
	return ""
}

func invalidMark(r Run) string {
	if r.Valid() {
		return ""
	}
	return " (ERRORS)"
}

func ratioText(v, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fx", v/base)
}

// targetNames lists the targets present, in table order, then any others.
func targetNames[V any](m map[string]V) []string {
	var names []string
	for _, n := range targetOrder {
		if _, ok := m[n]; ok {
			names = append(names, n)
		}
	}
	var rest []string
	for n := range m {
		if !slices.Contains(targetOrder, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(names, rest...)
}

// Summary is one target's figures over all rounds: medians, and the spread
// of the throughput.
type Summary struct {
	Target          string   `json:"target"`
	Rounds          int      `json:"rounds"`
	RPSMedian       float64  `json:"rps_median"`
	RPSMin          float64  `json:"rps_min"`
	RPSMax          float64  `json:"rps_max"`
	P50msMedian     float64  `json:"p50_ms_median"`
	P99msMedian     float64  `json:"p99_ms_median"`
	P99msMax        float64  `json:"p99_ms_max"`
	RPSRatioToNginx *float64 `json:"rps_ratio_to_nginx"`
	P99RatioToNginx *float64 `json:"p99_ratio_to_nginx"`
	// Per-round ratios against nginx in the same round.
	RoundRPSRatios []float64 `json:"round_rps_ratios_to_nginx,omitempty"`
	RoundP99Ratios []float64 `json:"round_p99_ratios_to_nginx,omitempty"`
	Requests       int64     `json:"requests"`
	Non2xx         int64     `json:"non_2xx"`
	SocketErrors   int64     `json:"socket_errors"`
	// Disturbed counts the runs during which other work took more than
	// disturbedPct of the machine.
	Disturbed int `json:"disturbed_runs"`
}

// Goal is the verdict on the router against nginx.
type Goal struct {
	RPSRatioMin float64  `json:"rps_ratio_min"`
	P99RatioMax float64  `json:"p99_ratio_max"`
	RPSRatio    *float64 `json:"router_rps_ratio"`
	P99Ratio    *float64 `json:"router_p99_ratio"`
	RPSMet      bool     `json:"rps_met"`
	P99Met      bool     `json:"p99_met"`
	Met         bool     `json:"met"`
	Valid       bool     `json:"valid"` // no run of router or nginx had errors
	// DisturbedRuns counts runs (of any target) that other work on the
	// machine skewed; figures from a run with any are not fit to quote.
	DisturbedRuns int `json:"disturbed_runs"`
}

// Report is the JSON document.
type Report struct {
	Timestamp string            `json:"timestamp"`
	Meta      map[string]string `json:"meta"`
	Method    string            `json:"method"`
	Summary   []Summary         `json:"summary"`
	Goal      Goal              `json:"goal"`
	Runs      []Run             `json:"runs"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Summarize computes every target's summary and the goal verdict.
func Summarize(runs []Run) ([]Summary, Goal) {
	byTarget := map[string][]Run{}
	for _, r := range runs {
		byTarget[r.Target] = append(byTarget[r.Target], r)
	}
	baseByRound := map[int]Run{}
	for _, r := range byTarget[baseline] {
		baseByRound[r.Round] = r
	}
	var out []Summary
	for _, name := range targetNames(byTarget) {
		rs := byTarget[name]
		s := Summary{Target: name, Rounds: len(rs), RPSMin: math.Inf(1)}
		var rps, p50, p99 []float64
		for _, r := range rs {
			rps = append(rps, r.RPS)
			p50 = append(p50, r.P50ms)
			p99 = append(p99, r.P99ms)
			s.RPSMin, s.RPSMax = min(s.RPSMin, r.RPS), max(s.RPSMax, r.RPS)
			s.P99msMax = max(s.P99msMax, r.P99ms)
			s.Requests += r.Requests
			s.Non2xx += r.Non2xx
			s.SocketErrors += r.SocketErrors
			if r.Disturbed() {
				s.Disturbed++
			}
			if b, ok := baseByRound[r.Round]; ok && b.RPS > 0 && b.P99ms > 0 {
				s.RoundRPSRatios = append(s.RoundRPSRatios, round3(r.RPS/b.RPS))
				s.RoundP99Ratios = append(s.RoundP99Ratios, round3(r.P99ms/b.P99ms))
			}
		}
		s.RPSMedian, s.P50msMedian, s.P99msMedian = median(rps), median(p50), median(p99)
		out = append(out, s)
	}
	var base *Summary
	for i := range out {
		if out[i].Target == baseline {
			base = &out[i]
		}
	}
	goal := Goal{RPSRatioMin: goalRPSRatioMin, P99RatioMax: goalP99RatioMax, Valid: true}
	for i := range out {
		s := &out[i]
		if base != nil && base.RPSMedian > 0 && base.P99msMedian > 0 {
			rr, pr := round3(s.RPSMedian/base.RPSMedian), round3(s.P99msMedian/base.P99msMedian)
			s.RPSRatioToNginx, s.P99RatioToNginx = &rr, &pr
		}
		if (s.Target == subject || s.Target == baseline) && (s.Non2xx > 0 || s.SocketErrors > 0) {
			goal.Valid = false
		}
		goal.DisturbedRuns += s.Disturbed
		if s.Target == subject {
			goal.RPSRatio, goal.P99Ratio = s.RPSRatioToNginx, s.P99RatioToNginx
		}
	}
	if goal.RPSRatio != nil {
		goal.RPSMet = *goal.RPSRatio >= goalRPSRatioMin
		goal.P99Met = *goal.P99Ratio <= goalP99RatioMax
	}
	goal.Met = goal.Valid && goal.RPSMet && goal.P99Met
	return out, goal
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

type metaFlag map[string]string

func (m metaFlag) String() string { return fmt.Sprint(map[string]string(m)) }
func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	m[k] = v
	return nil
}

func cmdSummary(args []string) error {
	fs := flag.NewFlagSet("summary", flag.ExitOnError)
	results := fs.String("results", "", "results file")
	jsonOut := fs.String("json", "", "write the JSON summary here")
	meta := metaFlag{}
	fs.Var(meta, "meta", "key=value to record in the JSON (repeatable)")
	_ = fs.Parse(args)
	runs, err := readRuns(*results)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return errors.New("no runs recorded")
	}
	sums, goal := Summarize(runs)

	rounds := 0
	for _, r := range runs {
		rounds = max(rounds, r.Round)
	}
	fmt.Printf("Summary: median over %d round(s); ratios are median(target) / median(nginx)\n\n", rounds)
	fmt.Printf("  %-8s %10s %17s %9s %9s %15s %13s %7s %10s\n", "target", "req/s", "(min-max)", "p50 ms", "p99 ms",
		"req/s vs nginx", "p99 vs nginx", "errors", "disturbed")
	disturbed := 0
	for _, s := range sums {
		rr, pr := "-", "-"
		if s.RPSRatioToNginx != nil {
			rr, pr = fmt.Sprintf("%.3fx", *s.RPSRatioToNginx), fmt.Sprintf("%.3fx", *s.P99RatioToNginx)
		}
		fmt.Printf("  %-8s %10.0f %17s %9.3f %9.3f %15s %13s %7d %10s\n", s.Target, s.RPSMedian,
			fmt.Sprintf("(%.0f-%.0f)", s.RPSMin, s.RPSMax), s.P50msMedian, s.P99msMedian, rr, pr,
			s.Non2xx+s.SocketErrors, fmt.Sprintf("%d/%d", s.Disturbed, s.Rounds))
		disturbed += s.Disturbed
	}
	if disturbed > 0 {
		fmt.Printf("\n  %d run(s) were disturbed: other work used more than %d%% of the CPUs while they ran;\n"+
			"  the figures are skewed, rerun on an idle machine to quote them.\n", disturbed, disturbedPct)
	}
	fmt.Println()
	switch {
	case goal.RPSRatio == nil:
		fmt.Println("Goal: cannot judge (no router or nginx figures)")
	default:
		fmt.Printf("Goal: router >= %.1fx nginx throughput: %.3fx %s; router p99 <= %.1fx nginx: %.3fx %s",
			goalRPSRatioMin, *goal.RPSRatio, passText(goal.RPSMet), goalP99RatioMax, *goal.P99Ratio, passText(goal.P99Met))
		if !goal.Valid {
			fmt.Print("  (INVALID: router or nginx runs had errors)")
		}
		if goal.DisturbedRuns > 0 {
			fmt.Printf("  (%d disturbed run(s))", goal.DisturbedRuns)
		}
		fmt.Println()
	}

	if *jsonOut == "" {
		return nil
	}
	rep := Report{
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		Meta:      meta,
		Method: "wrk runs against each target in interleaved rounds (order rotated each round); " +
			"summary figures are medians over rounds, ratios are median(target)/median(nginx)",
		Summary: sums,
		Goal:    goal,
		Runs:    runs,
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*jsonOut, append(data, '\n'), 0o644)
}

func passText(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}
