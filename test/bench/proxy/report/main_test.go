package main

import (
	"math"
	"strings"
	"testing"
)

const wrkOK = `Running 1s test @ http://127.0.0.1:18080/x
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   156.55us  400.49us   8.19ms   96.33%
    Req/Sec    39.52k     4.76k   48.87k    72.73%
  Latency Distribution
     50%   80.00us
     75%  123.00us
     90%  203.00us
     99%    2.34ms
  43199 requests in 1.10s, 5.44MB read
Requests/sec:  39280.96
Transfer/sec:      4.94MB
`

const wrkErrors = `Running 3s test @ http://127.0.0.1:18090/t/bench/orders
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20s   300.00ms   2.00s    70.00%
    Req/Sec     1.00k   100.00     1.20k    70.00%
  Latency Distribution
     50%    1.20s 
     75%    1.40s 
     90%    1.60s 
     99%    1.90s 
  6000 requests in 3.00s, 1.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:   2000.00
Transfer/sec:    341.33KB
`

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestParseWrk(t *testing.T) {
	r, err := ParseWrk(strings.NewReader(wrkOK))
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.RPS, 39280.96) || !near(r.P50ms, 0.08) || !near(r.P99ms, 2.34) || r.Requests != 43199 || !r.Valid() {
		t.Fatalf("got %+v", r)
	}
	r, err = ParseWrk(strings.NewReader(wrkErrors))
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.P50ms, 1200) || !near(r.P99ms, 1900) || r.Non2xx != 17 || r.SocketErrors != 5 || r.Valid() {
		t.Fatalf("got %+v", r)
	}
	if _, err := ParseWrk(strings.NewReader("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Fatal("want an error for output without figures")
	}
}

func TestSummarize(t *testing.T) {
	var runs []Run
	for round, f := range []float64{1, 1.1, 0.9} {
		runs = append(runs,
			Run{Round: round + 1, Target: "nginx", RPS: 1000 * f, P99ms: 10 * f, Requests: 1},
			Run{Round: round + 1, Target: "router", RPS: 950 * f, P99ms: 11 * f, Requests: 1},
		)
	}
	sums, goal := Summarize(runs)
	if len(sums) != 2 || sums[0].Target != "nginx" || sums[1].Target != "router" {
		t.Fatalf("summaries %+v", sums)
	}
	if !near(sums[1].RPSMedian, 950) || !near(*sums[1].RPSRatioToNginx, 0.95) || !near(*sums[1].P99RatioToNginx, 1.1) {
		t.Fatalf("router summary %+v", sums[1])
	}
	if !goal.Met || !goal.Valid {
		t.Fatalf("goal %+v", goal)
	}
	runs = append(runs, Run{Round: 4, Target: "router", RPS: 1, P99ms: 1, Requests: 1, Non2xx: 1})
	if _, goal := Summarize(runs); goal.Valid || goal.Met {
		t.Fatalf("errors must invalidate the goal: %+v", goal)
	}
}
