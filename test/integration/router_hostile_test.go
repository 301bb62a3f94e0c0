package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// The hostile-client suite: raw TCP clients sending what a hostile or
// broken client sends (malformed and ambiguous framing, smuggling attempts,
// stalls, hang-ups, oversized and repeated fields), on both engines where
// the attack can take either (netHTTPWay forces the net/http one). Every
// row sends its attack hostileAttacks times at once as tenant "attacker"
// while tenant "neighbour", on the same two backend instances, runs a
// steady GET loop through the same router (one URL on each engine). For
// every row:
//
//   - the neighbour sees no error at all;
//   - the attacker gets the row's answer: a 4xx (or a closed connection
//     where no answer is possible), never a 5xx (except where the row says
//     why);
//   - afterwards no backend instance's breaker has left the closed state
//     (switchyard_router_breaker_state on the router's /metrics): one
//     client's bad requests are never counted against a shared backend.
//
// Each row gets a router of its own (so a breaker opened by one row cannot
// fail the next), with short timeouts: ReadHeaderTimeout 1s,
// BodyIdleTimeout 300ms, BodyTimeout 2s, and the breaker's defaults
// (5 consecutive failures, open 5s).

const (
	hostileAttacks        = 50
	hostileReadHeader     = time.Second
	hostileBodyIdle       = 300 * time.Millisecond
	hostileBodyTimeout    = 2 * time.Second
	hostileMaxHeaderBytes = 4 << 10
	hostileMaxBodyBytes   = 64 << 10
	// hostileMargin is the slack allowed on every timing (-race, 2 cores,
	// 50 attackers and a neighbour).
	hostileMargin = time.Second
	// hostileNeighbourMin is the least time the neighbour's loop runs
	// alongside a row's attacks.
	hostileNeighbourMin = 500 * time.Millisecond
	// hostileSleep is how long the backend's /sleep route takes to answer.
	hostileSleep = 3 * time.Second
)

// hostileSmuggled is the request smuggling attempts hide in a body: it must
// never reach a backend as a request.
const hostileSmuggled = "GET /t/neighbour/smuggled HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\nX-Smuggled: 1\r\n\r\n"

// hostileBackend is the X-Test-Route handler of both backend instances: it
// records every request, answers 503 to every request of failTenant (an
// application failing for one tenant), serves /sleep (hostileSleep, noting
// when the request's context ends) and otherwise fastPathRoutes (/raw/...,
// /upload, and the uriReply echo).
type hostileBackend struct {
	routes     http.Handler
	failTenant atomic.Pointer[string]

	mu       sync.Mutex
	seen     []hostileSeen
	sleepers map[string]*hostileSleeper
}

// hostileSeen is a request as a backend instance received it.
type hostileSeen struct {
	instance string
	method   string
	uri      string
	header   http.Header
}

// hostileSleeper is one /sleep?id= request: when it started, and when it
// ended (the zero time: it ran to the end, its context never cancelled).
type hostileSleeper struct {
	started, ended chan time.Time
}

func newHostileBackend(raws map[string]rawReply) *hostileBackend {
	return &hostileBackend{routes: fastPathRoutes(raws), sleepers: map[string]*hostileSleeper{}}
}

func (h *hostileBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	instance := ""
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		instance = a.String()
	}
	h.mu.Lock()
	h.seen = append(h.seen, hostileSeen{instance: instance, method: r.Method, uri: r.RequestURI, header: r.Header.Clone()})
	h.mu.Unlock()
	if t := h.failTenant.Load(); t != nil && r.Header.Get("X-Tenant-Id") == *t {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"app_down","message":"the application is failing"}`+"\n")
		return
	}
	if r.URL.Path == "/sleep" {
		s := h.sleeper(r.URL.Query().Get("id"))
		s.started <- time.Now()
		select {
		case <-r.Context().Done():
			s.ended <- time.Now()
		case <-time.After(hostileSleep):
			s.ended <- time.Time{}
			_, _ = io.WriteString(w, "slept")
		}
		return
	}
	h.routes.ServeHTTP(w, r)
}

func (h *hostileBackend) sleeper(id string) *hostileSleeper {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sleepers[id]
	if s == nil {
		s = &hostileSleeper{started: make(chan time.Time, 1), ended: make(chan time.Time, 1)}
		h.sleepers[id] = s
	}
	return s
}

// hostileEnv is the shared stack: Consul, two backend instances of
// app-shared (pool-1) and the tenants attacker and neighbour on it.
type hostileEnv struct {
	t        *testing.T
	s        *stack
	hb       *hostileBackend
	backends []*echoBackend
	// Bearer tokens naming each tenant.
	attackerToken, neighbourToken string
}

// resetSeen forgets what the backends received so far.
func (e *hostileEnv) resetSeen() {
	e.hb.mu.Lock()
	e.hb.seen = nil
	e.hb.mu.Unlock()
	for _, b := range e.backends {
		b.mu.Lock()
		b.seen = nil
		b.mu.Unlock()
	}
}

// allSeenHeaders returns the headers of every request the backends
// received since resetSeen, whichever route served it.
func (e *hostileEnv) allSeen() []hostileSeen {
	e.hb.mu.Lock()
	out := slices.Clone(e.hb.seen)
	e.hb.mu.Unlock()
	for _, b := range e.backends {
		b.mu.Lock()
		for _, h := range b.seen {
			out = append(out, hostileSeen{instance: b.addr, header: h})
		}
		b.mu.Unlock()
	}
	return out
}

// hostileRun is one row's running state.
type hostileRun struct {
	env *hostileEnv
	r   *runningRouter
	row *hostileRow
}

func (h *hostileRun) addr() string { return strings.TrimPrefix(h.r.url, "http://") }

// hostileOutcome is what one attack saw.
type hostileOutcome struct {
	status int    // the final status the attacker got (0: none)
	class  string // for the histogram: the status, or how the connection ended
	// classes, if set, replace class in the histogram: one per response
	// of an attack sending several requests.
	classes  []string
	elapsed  time.Duration
	end      time.Time // when the attack was over for the client (answered, hung up)
	problems []string
	// breakerOpen: the router's own 503 breaker_open (the failing-app row).
	breakerOpen bool
}

func (o *hostileOutcome) problem(format string, args ...any) {
	o.problems = append(o.problems, fmt.Sprintf(format, args...))
}

// hostileRow is one attack.
type hostileRow struct {
	name string
	// want are the statuses the attacker may get; closedOK: a connection
	// closed with no answer is fine too.
	want     []int
	closedOK bool
	// allow5xx: a 5xx in want is the attacker's own application's answer,
	// not the router's (only the failing-app row).
	allow5xx bool
	// json: the answer must be the router's JSON error body.
	json bool
	// closedAfter: after the answer the connection must be closed (its
	// request's framing cannot be trusted, or its body was not read):
	// nothing more may come on it.
	closedAfter bool
	// minElapsed, maxElapsed bound outcome.elapsed (0: unchecked).
	minElapsed, maxElapsed time.Duration
	// inflightZero: the attacker's in-flight count must be 0 again within
	// hostileMargin of the last attack's end.
	inflightZero bool
	// limit bounds one attack (its connection's deadline); 4s if 0.
	limit time.Duration

	setup  func(t *testing.T, h *hostileRun)
	attack func(h *hostileRun, i int) hostileOutcome
	check  func(t *testing.T, h *hostileRun, outs []hostileOutcome)
}

func (row *hostileRow) deadline() time.Duration {
	if row.limit > 0 {
		return row.limit
	}
	return 4 * time.Second
}

// hostileConn is one attacker connection. Unlike rawClient it never calls
// t.Fatal: attacks run on their own goroutines and report what they saw.
type hostileConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func (h *hostileRun) dial() (*hostileConn, error) {
	conn, err := net.DialTimeout("tcp", h.addr(), 2*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(h.row.deadline()))
	return &hostileConn{conn: conn, br: bufio.NewReader(conn)}, nil
}

// dialFor dials for an attack; on failure it records the failure in o and
// returns nil.
func (h *hostileRun) dialFor(o *hostileOutcome) *hostileConn {
	c, err := h.dial()
	if err != nil {
		o.class = "dial error"
		o.problem("dial: %v", err)
		return nil
	}
	return c
}

func (c *hostileConn) send(s string) error {
	_, err := io.WriteString(c.conn, s)
	return err
}

// read reads one response (a 1xx included) and its whole body.
func (c *hostileConn) read(method string) (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, body, err
}

// closedAfter waits up to 2s for the router to close the connection and
// says what happened instead ("" if it closed).
func (c *hostileConn) closedAfter() string {
	_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		return fmt.Sprintf("the router sent more after the answer: %.120q", append([]byte{b}, rest...))
	}
	if endClass(err) == "timeout" {
		return "connection left open after the answer"
	}
	return ""
}

// endClass names how a read ended without a response.
func endClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error: " + err.Error()
}

// routerErrorCode returns the error code of the router's JSON error body.
func routerErrorCode(resp *http.Response, body []byte) (string, bool) {
	if resp.Header.Get("Content-Type") != "application/json" {
		return "", false
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" || e.Message == "" {
		return "", false
	}
	return e.Error, true
}

// exchange is the common attack: send the request (in one write, or
// pieces with pauses), read the answer, check it.
type exchange struct {
	method string
	pieces []string
	pause  time.Duration // between pieces
	check  func(resp *http.Response, body []byte, o *hostileOutcome)
}

func (x exchange) run(h *hostileRun, i int) hostileOutcome {
	var o hostileOutcome
	c := h.dialFor(&o)
	if c == nil {
		return o
	}
	defer c.conn.Close()
	method := x.method
	if method == "" {
		method = "POST"
	}
	start := time.Now()
	for k, p := range x.pieces {
		if k > 0 {
			time.Sleep(x.pause)
		}
		start = time.Now()
		if err := c.send(p); err != nil {
			break // the router may have answered already; read it
		}
	}
	resp, body, err := c.read(method)
	o.end = time.Now()
	o.elapsed = o.end.Sub(start)
	h.finish(&o, c, resp, body, err, x.check)
	return o
}

// finish classifies an answer (or its absence) and applies the row's
// general checks.
func (h *hostileRun) finish(o *hostileOutcome, c *hostileConn, resp *http.Response, body []byte, err error, check func(*http.Response, []byte, *hostileOutcome)) {
	if resp == nil {
		o.class = endClass(err)
		return
	}
	o.status = resp.StatusCode
	o.class = strconv.Itoa(resp.StatusCode)
	if err != nil {
		o.problem("%d answer's body: %v", resp.StatusCode, err)
	}
	if h.row.json {
		if _, ok := routerErrorCode(resp, body); !ok {
			o.problem("%d answer is not the router's JSON error (Content-Type %q): %.100q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	if check != nil {
		check(resp, body, o)
	}
	if h.row.closedAfter && err == nil {
		if p := c.closedAfter(); p != "" {
			o.problem("after the %d: %s", resp.StatusCode, p)
		}
	}
}

// hostileReq is a request from the attacker naming its tenant in the path.
func hostileReq(method, path, extra, body string) string {
	return method + " /t/attacker" + path + " HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + extra + "\r\n" + body
}

// oneShot is an attack writing payload at once.
func oneShot(method, payload string, check func(*http.Response, []byte, *hostileOutcome)) func(*hostileRun, int) hostileOutcome {
	return exchange{method: method, pieces: []string{payload}, check: check}.run
}

// engines are the two ways a request can be served: as sent (the fast
// path, if it takes the request) and forced onto net/http.
var engines = []struct{ name, extra string }{{"fast path", ""}, {"net/http", netHTTPWay}}

func TestHostileClients(t *testing.T) {
	testContext(t)
	suiteStart := time.Now()
	raws := map[string]rawReply{
		"early-hints": {first: "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		"proxy-auth": {first: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"backend\"\r\n" +
			"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nno"},
		"stream": {first: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n0123456789",
			later: "abcdefghij", delay: 300 * time.Millisecond},
	}
	s := newStack(t)
	env := &hostileEnv{t: t, s: s, hb: newHostileBackend(raws)}
	for range 2 {
		env.backends = append(env.backends, startBackend(t, s.consul.Client(), "app-shared", env.hb))
	}
	s.tenant("attacker", "free", catalog.TierShared, "pool-1")
	s.tenant("neighbour", "free", catalog.TierShared, "pool-1")
	env.attackerToken = router.SignToken(jwtSecret, "attacker", time.Hour)
	env.neighbourToken = router.SignToken(jwtSecret, "neighbour", time.Hour)

	rows := hostileRows(env)
	for i := range rows {
		row := &rows[i]
		t.Run(row.name, func(t *testing.T) { env.runRow(t, row) })
	}
	t.Logf("hostile suite: %d rows in %s", len(rows), time.Since(suiteStart).Round(100*time.Millisecond))
}

// runRow starts a router, the neighbour's loop and the attacks, and checks
// the row.
func (e *hostileEnv) runRow(t *testing.T, row *hostileRow) {
	r := startRouter(t, e.s.consul.Client(), func(c *router.Config) {
		c.ReadHeaderTimeout = hostileReadHeader
		c.BodyIdleTimeout = hostileBodyIdle
		c.BodyTimeout = hostileBodyTimeout
		c.MaxHeaderBytes = hostileMaxHeaderBytes
		c.MaxBodyBytes = hostileMaxBodyBytes
		c.UpstreamHeaderTimeout = hostileSleep + 2*time.Second
		c.Breaker = router.BreakerConfig{} // the defaults
	})
	h := &hostileRun{env: e, r: r, row: row}
	waitFor(t, 10*time.Second, "both backend instances in the router's pool", func() bool {
		return metricValue(r, "switchyard_router_healthy_instances", `service="app-shared"`) == 2
	})
	e.resetSeen()
	if row.setup != nil {
		row.setup(t, h)
	}

	// The neighbour: one loop on each engine (a percent-encoded path takes
	// net/http).
	nc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	defer nc.CloseIdleConnections()
	loop := startGetLoop(nc, []string{r.url + "/t/neighbour/fast", r.url + "/t/neighbour/net%20http"}, 2*time.Millisecond)

	waitFor(t, 5*time.Second, "the neighbour's first answers", func() bool { return loop.total.Load() >= 2 })

	// The attacker's in-flight count, sampled.
	type sample struct {
		at time.Time
		n  int
	}
	var samples []sample
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			samples = append(samples, sample{time.Now(), r.Inflight().Count("attacker")})
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	outs := make([]hostileOutcome, hostileAttacks)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = row.attack(h, i)
		}()
	}
	wg.Wait()
	attackTime := time.Since(start)
	// The neighbour keeps going a moment after, and for at least
	// hostileNeighbourMin in all.
	time.Sleep(max(100*time.Millisecond, hostileNeighbourMin-time.Since(start)))
	total, failed := loop.halt()

	// In flight: back to 0, soon after the attacks ended.
	inflightDeadline := time.Now().Add(3 * time.Second)
	for r.Inflight().Count("attacker") != 0 && time.Now().Before(inflightDeadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopSampling)
	<-sampled
	var lastEnd, lastBusy time.Time
	for _, o := range outs {
		if o.end.After(lastEnd) {
			lastEnd = o.end
		}
	}
	for _, s := range samples {
		if s.n != 0 {
			lastBusy = s.at
		}
	}
	stillInFlight := r.Inflight().Count("attacker")

	// Figures.
	hist := map[string]int{}
	var elapsed []time.Duration
	for _, o := range outs {
		if o.classes != nil {
			for _, c := range o.classes {
				hist[c]++
			}
		} else {
			hist[o.class]++
		}
		if o.elapsed > 0 {
			elapsed = append(elapsed, o.elapsed)
		}
	}
	slices.Sort(elapsed)
	timing := ""
	if len(elapsed) > 0 {
		timing = fmt.Sprintf(", elapsed median %s max %s", elapsed[len(elapsed)/2].Round(time.Millisecond), elapsed[len(elapsed)-1].Round(time.Millisecond))
	}
	states := breakerStates(t, r)
	t.Logf("attacker: %d attacks in %s: %s%s | neighbour: %d requests, %d failed | breakers (app-shared): %v | attacker in flight: %d now, last seen busy %s after the last attack ended",
		hostileAttacks, attackTime.Round(time.Millisecond), histogram(hist), timing, total, failed, states, stillInFlight, sinceOrNever(lastBusy, lastEnd))

	// The neighbour.
	if total == 0 {
		t.Errorf("the neighbour sent no request during the attack")
	}
	if failed != 0 {
		t.Errorf("the neighbour got %d errors out of %d requests during the attack", failed, total)
	}
	// The breakers.
	for inst, st := range states {
		if st != 0 {
			t.Errorf("breaker of backend instance %s is in state %v (0 closed, 1 half-open, 2 open) after the attack", inst, st)
		}
	}
	if len(states) != 2 {
		t.Errorf("breaker states for %d instances, want 2: %v", len(states), states)
	}
	// The attacker.
	problems := map[string]int{}
	for _, o := range outs {
		switch {
		case o.status == 0 && !row.closedOK:
			problems[fmt.Sprintf("no answer (%s), want %v", o.class, row.want)]++
		case o.status != 0 && !slices.Contains(row.want, o.status):
			problems[fmt.Sprintf("status %d, want %v", o.status, row.want)]++
		}
		if o.status >= 500 && !row.allow5xx {
			problems[fmt.Sprintf("a 5xx (%d) to the attacker", o.status)]++
		}
		if row.maxElapsed > 0 && o.elapsed > row.maxElapsed {
			problems[fmt.Sprintf("answered (or closed) after more than %s", row.maxElapsed)]++
		}
		if row.minElapsed > 0 && o.elapsed > 0 && o.elapsed < row.minElapsed {
			problems[fmt.Sprintf("answered (or closed) before %s", row.minElapsed)]++
		}
		for _, p := range o.problems {
			problems[p]++
		}
	}
	keys := make([]string, 0, len(problems))
	for k := range problems {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 8 {
			t.Errorf("... and %d more kinds of problem", len(keys)-i)
			break
		}
		t.Errorf("%d of %d attacks: %s", problems[k], hostileAttacks, k)
	}
	if row.inflightZero {
		switch {
		case stillInFlight != 0:
			t.Errorf("attacker still has %d requests in flight 3s after the attacks ended", stillInFlight)
		case !lastBusy.IsZero() && lastBusy.Sub(lastEnd) > hostileMargin:
			t.Errorf("attacker had requests in flight until %s after the last attack ended (want within %s)", lastBusy.Sub(lastEnd).Round(time.Millisecond), hostileMargin)
		}
	}
	if row.check != nil {
		row.check(t, h, outs)
	}
}

func sinceOrNever(busy, end time.Time) string {
	if busy.IsZero() {
		return "never"
	}
	return busy.Sub(end).Round(time.Millisecond).String()
}

func histogram(h map[string]int) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, h[k])
	}
	return strings.Join(parts, " ")
}

// breakerStates reads switchyard_router_breaker_state for app-shared's
// instances from the router's /metrics.
func breakerStates(t *testing.T, r *runningRouter) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range metricLines(t, r, "switchyard_router_breaker_state") {
		if !strings.Contains(l.labels, `service="app-shared"`) {
			continue
		}
		inst := l.labels
		if _, after, ok := strings.Cut(l.labels, `instance="`); ok {
			inst, _, _ = strings.Cut(after, `"`)
		}
		out[inst] = l.value
	}
	return out
}

type metricLine struct {
	labels string
	value  float64
}

func metricLines(t testing.TB, r *runningRouter, name string) []metricLine {
	resp, err := shortClient.Get(r.admin + "/metrics")
	if err != nil {
		t.Errorf("metrics: %v", err)
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []metricLine
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		out = append(out, metricLine{labels: l[len(name):i], value: v})
	}
	return out
}

// metricValue is the value of the series of name whose labels contain
// label (-1 if none).
func metricValue(r *runningRouter, name, label string) float64 {
	for _, l := range metricLines(nopTB{}, r, name) {
		if strings.Contains(l.labels, label) {
			return l.value
		}
	}
	return -1
}

// nopTB is for polling helpers whose errors are retried, not reported.
type nopTB struct{ testing.TB }

func (nopTB) Errorf(string, ...any) {}

// hostileRows is the attack table.
func hostileRows(env *hostileEnv) []hostileRow {
	var rows []hostileRow

	// Malformed chunked request bodies: the router's 400, the connection
	// closed after it (RFC 9112 §7.1: the framing is broken), and nothing
	// counted against the backend. A chunked body always takes net/http.
	chunkedHead := "Transfer-Encoding: chunked\r\n"
	overhead := strings.Repeat("1;"+strings.Repeat("e", 1000)+"\r\nx\r\n", 20) + "0\r\n\r\n"
	for _, c := range []struct{ name, head, body string }{
		{"chunk size zz", chunkedHead, "zz\r\nhello\r\n0\r\n\r\n"},
		{"bare LF after the chunk size", chunkedHead, "5\nhello\r\n0\r\n\r\n"},
		{"17-hex-digit chunk size", chunkedHead, "fffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
		{"8 KiB chunk extension", chunkedHead, "5;" + strings.Repeat("a=b;", 2<<10) + "\r\nhello\r\n0\r\n\r\n"},
		{"20 KiB of chunk extensions on 20 bytes of data", chunkedHead, overhead},
		{"obs-folded Transfer-Encoding", "Transfer-Encoding:\r\n chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"},
	} {
		rows = append(rows, hostileRow{
			name: "malformed chunked body: " + c.name, want: []int{400}, json: true, closedAfter: true,
			attack: oneShot("POST", hostileReq("POST", "/upload", c.head, c.body), nil),
		})
	}

	// Smuggling. The body hides hostileSmuggled; whatever the router
	// answers, the connection is closed after it (RFC 9112 §6.3: a
	// request with both Content-Length and Transfer-Encoding must be
	// closed after), and no backend ever receives the hidden request.
	noSmuggled := func(t *testing.T, h *hostileRun, _ []hostileOutcome) {
		time.Sleep(200 * time.Millisecond) // a smuggled request would be on its way
		n := 0
		for _, s := range h.env.allSeen() {
			if strings.Contains(s.uri, "smuggled") || s.header.Get("X-Smuggled") != "" {
				n++
			}
		}
		if n > 0 {
			t.Errorf("the smuggled request reached a backend %d times", n)
		}
	}
	// CL.TE: Content-Length covers the hidden request, the chunked body
	// ends before it.
	clte := "0\r\n\r\n" + hostileSmuggled
	rows = append(rows, hostileRow{
		name: "CL.TE: Content-Length and Transfer-Encoding: chunked", want: []int{400, 200}, closedAfter: true,
		attack: oneShot("POST", hostileReq("POST", "/upload", fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(clte)), clte),
			func(resp *http.Response, body []byte, o *hostileOutcome) {
				if resp.StatusCode == 200 && len(body) != 0 {
					o.problem("200 but the backend got body %.80q: read by Content-Length, not as chunked", body)
				}
			}),
		check: noSmuggled,
	})
	// TE.CL: the chunked body holds the hidden request, Content-Length
	// ends before it.
	tecl := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(hostileSmuggled), hostileSmuggled)
	chunkedAnswer := func(resp *http.Response, body []byte, o *hostileOutcome) {
		if resp.StatusCode == 200 && string(body) != hostileSmuggled {
			o.problem("200 but the backend got body %.80q, not the chunked payload", body)
		}
	}
	for _, c := range []struct {
		name, te string
		want     []int
		allow5xx bool
	}{
		{"Transfer-Encoding: chunked then Content-Length", "Transfer-Encoding: chunked\r\n", []int{400, 200}, false},
		{"Transfer-Encoding with a tab", "Transfer-Encoding:\tchunked\r\n", []int{400, 200}, false},
		{"Transfer-Encoding: CHUNKED", "Transfer-Encoding: CHUNKED\r\n", []int{400, 200}, false},
		{"space before the colon", "Transfer-Encoding : chunked\r\n", []int{400}, false},
		// RFC 9112 §6.1: a server SHOULD answer 501 to a transfer coding
		// it does not understand; net/http does. The router's own
		// answer, not a backend failure, so allowed here.
		{"Transfer-Encoding twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", []int{400, 501}, true},
		{"unknown coding xchunked", "Transfer-Encoding: xchunked\r\n", []int{400, 501}, true},
		{"chunked, identity", "Transfer-Encoding: chunked, identity\r\n", []int{400, 501}, true},
	} {
		rows = append(rows, hostileRow{
			name: "TE.CL: " + c.name, want: c.want, allow5xx: c.allow5xx, closedAfter: true,
			attack: oneShot("POST", hostileReq("POST", "/upload", c.te+"Content-Length: 4\r\n", tecl), chunkedAnswer),
			check:  noSmuggled,
		})
	}

	// Repeated Content-Length.
	rows = append(rows,
		hostileRow{
			name: "two Content-Length values", want: []int{400}, closedAfter: true,
			attack: oneShot("POST", hostileReq("POST", "/upload", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"+hostileSmuggled), nil),
			check:  noSmuggled,
		},
		hostileRow{
			name: "Content-Length list with two values", want: []int{400}, closedAfter: true,
			attack: oneShot("POST", hostileReq("POST", "/upload", "Content-Length: 5, 6\r\n", "hello!"+hostileSmuggled), nil),
			check:  noSmuggled,
		},
		hostileRow{
			name: "Content-Length twice with the same value", want: []int{200, 400},
			attack: oneShot("POST", hostileReq("POST", "/upload", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
				func(resp *http.Response, body []byte, o *hostileOutcome) {
					if resp.StatusCode == 200 && string(body) != "hello" {
						o.problem("200 but the backend got body %.80q, want \"hello\"", body)
					}
				}),
		},
	)

	// Pipelined requests naming different tenants, by different means, on
	// one connection: each answered for its own tenant, in order.
	for _, c := range []struct {
		name   string
		extras [3]string
	}{
		{"fast path", [3]string{"", "", ""}},
		{"net/http", [3]string{netHTTPWay, netHTTPWay, netHTTPWay}},
		{"fast path handing off mid-pipeline", [3]string{"", netHTTPWay, ""}},
	} {
		rows = append(rows, hostileRow{
			name: "pipelined tenants: " + c.name, want: []int{200},
			attack: func(h *hostileRun, i int) hostileOutcome {
				reqs := []struct{ tenant, text string }{
					{"attacker", fmt.Sprintf("GET /t/attacker/p?i=%d&k=0 HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n%s\r\n", i, c.extras[0])},
					{"neighbour", fmt.Sprintf("GET /p?i=%d&k=1 HTTP/1.1\r\nHost: neighbour.saas.test\r\nX-Test-Route: 1\r\n%s\r\n", i, c.extras[1])},
					{"attacker", fmt.Sprintf("GET /p?i=%d&k=2 HTTP/1.1\r\nHost: router.test\r\nAuthorization: Bearer %s\r\nX-Test-Route: 1\r\n%s\r\n", i, h.env.attackerToken, c.extras[2])},
				}
				var o hostileOutcome
				conn := h.dialFor(&o)
				if conn == nil {
					return o
				}
				defer conn.conn.Close()
				all := ""
				for _, r := range reqs {
					all += r.text
				}
				start := time.Now()
				_ = conn.send(all)
				for k, r := range reqs {
					resp, body, err := conn.read("GET")
					o.end, o.elapsed = time.Now(), time.Since(start)
					if resp == nil {
						o.class, o.status = endClass(err), 0
						o.problem("response %d of 3: none (%s)", k+1, o.class)
						return o
					}
					o.status, o.class = resp.StatusCode, strconv.Itoa(resp.StatusCode)
					o.classes = append(o.classes, o.class)
					var u uriReply
					if resp.StatusCode != 200 || json.Unmarshal(body, &u) != nil {
						o.problem("response %d of 3 (%s): %d %.100q", k+1, r.tenant, resp.StatusCode, body)
						return o
					}
					wantURI := fmt.Sprintf("/p?i=%d&k=%d", i, k)
					if got := u.Headers.Values("X-Tenant-Id"); len(got) != 1 || got[0] != r.tenant || u.URI != wantURI {
						o.problem("response %d of 3: want %s for %s, got %s for %v (answers mixed)", k+1, wantURI, r.tenant, u.URI, got)
						return o
					}
				}
				return o
			},
		})
	}

	// Stalled heads: 408 or a closed connection, within ReadHeaderTimeout.
	half := "GET /t/attacker/x HTTP/1.1\r\nHost: rou"
	rows = append(rows, hostileRow{
		name: "stalled head: first request", want: []int{408}, closedOK: true,
		maxElapsed: hostileReadHeader + hostileMargin,
		attack:     exchange{method: "GET", pieces: []string{half}}.run,
	})
	for _, eng := range engines {
		rows = append(rows, hostileRow{
			name: "stalled head: after a request served by " + eng.name, want: []int{408}, closedOK: true,
			maxElapsed: hostileReadHeader + hostileMargin,
			attack: func(h *hostileRun, i int) hostileOutcome {
				var o hostileOutcome
				c := h.dialFor(&o)
				if c == nil {
					return o
				}
				defer c.conn.Close()
				_ = c.send(hostileReq("GET", "/first", eng.extra, ""))
				resp, body, err := c.read("GET")
				if resp == nil || resp.StatusCode != 200 || err != nil {
					o.class = "first request failed"
					o.problem("the first request: %v %.80q %v", resp, body, err)
					return o
				}
				start := time.Now()
				_ = c.send(half)
				resp, body, err = c.read("GET")
				o.end = time.Now()
				o.elapsed = o.end.Sub(start)
				h.finish(&o, c, resp, body, err, nil)
				return o
			},
		})
	}

	// Stalled bodies: 408 within BodyIdleTimeout, the request out of the
	// in-flight count, the connection closed (the body was not read).
	for _, c := range []struct{ name, extra, body string }{
		{"Content-Length on the fast path", "Content-Length: 10\r\n", "x"},
		{"Content-Length on net/http", netHTTPWay + "Content-Length: 10\r\n", "x"},
		{"chunked on net/http", "Transfer-Encoding: chunked\r\n", "5\r\nhel"},
	} {
		rows = append(rows, hostileRow{
			name: "stalled body: " + c.name, want: []int{408}, closedAfter: true, inflightZero: true,
			maxElapsed: hostileBodyIdle + hostileMargin, limit: hostileBodyIdle + hostileMargin + 2*time.Second,
			attack: oneShot("POST", hostileReq("POST", "/upload", c.extra, c.body), nil),
		})
	}

	// Slow drip: a byte every 200ms (never idle for BodyIdleTimeout) past
	// BodyTimeout: 408 at BodyTimeout.
	for _, c := range []struct{ name, extra, drip string }{
		{"Content-Length on the fast path", "Content-Length: 100\r\n", "x"},
		{"Content-Length on net/http", netHTTPWay + "Content-Length: 100\r\n", "x"},
		{"chunked on net/http", "Transfer-Encoding: chunked\r\n", "1\r\nx\r\n"},
	} {
		rows = append(rows, hostileRow{
			name: "slow-drip body: " + c.name, want: []int{408}, closedAfter: true, inflightZero: true,
			minElapsed: hostileBodyTimeout - 300*time.Millisecond, maxElapsed: hostileBodyTimeout + hostileMargin,
			limit: hostileBodyTimeout + hostileMargin + 2*time.Second,
			attack: func(h *hostileRun, i int) hostileOutcome {
				var o hostileOutcome
				conn := h.dialFor(&o)
				if conn == nil {
					return o
				}
				defer conn.conn.Close()
				start := time.Now()
				_ = conn.send(hostileReq("POST", "/upload", c.extra, ""))
				stop := make(chan struct{})
				dripped := make(chan struct{})
				go func() {
					defer close(dripped)
					for {
						select {
						case <-stop:
							return
						case <-time.After(200 * time.Millisecond):
						}
						if conn.send(c.drip) != nil {
							return
						}
					}
				}()
				resp, body, err := conn.read("POST")
				o.end = time.Now()
				o.elapsed = o.end.Sub(start)
				close(stop)
				<-dripped
				h.finish(&o, conn, resp, body, err, nil)
				return o
			},
		})
	}

	// Repeated Authorization: 400, and no backend ever sees a request
	// with two Authorization fields.
	noDoubleAuth := func(t *testing.T, h *hostileRun, _ []hostileOutcome) {
		n := 0
		for _, s := range h.env.allSeen() {
			if len(s.header.Values("Authorization")) > 1 {
				n++
			}
		}
		if n > 0 {
			t.Errorf("backends received %d requests with more than one Authorization field", n)
		}
	}
	auth := func(tokens ...string) string {
		s := ""
		for _, tok := range tokens {
			s += "Authorization: Bearer " + tok + "\r\n"
		}
		return s
	}
	for _, c := range []struct {
		name  string
		extra string
	}{
		{"attacker's then neighbour's token", auth(env.attackerToken, env.neighbourToken)},
		{"neighbour's then attacker's token", auth(env.neighbourToken, env.attackerToken)},
		{"the attacker's token twice", auth(env.attackerToken, env.attackerToken)},
	} {
		rows = append(rows, hostileRow{
			name: "repeated Authorization: " + c.name, want: []int{400},
			attack: oneShot("GET", "GET /who HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n"+c.extra+"\r\n", nil),
			check:  noDoubleAuth,
		})
	}

	// Oversized heads: 431.
	big := func(n int) string { return "X-Big: " + strings.Repeat("h", n) + "\r\n" }
	var many strings.Builder
	for k := 0; k < 200; k++ {
		fmt.Fprintf(&many, "X-Field-%03d: %s\r\n", k, strings.Repeat("v", 20))
	}
	for _, c := range []struct {
		name, extra string
		json        bool
	}{
		{"5 KiB on the fast path", big(5 << 10), true},
		{"5 KiB on net/http", netHTTPWay + big(5<<10), true},
		{"9 KiB (over the fast path's buffer)", big(9 << 10), true},
		{"200 fields (6 KiB)", many.String(), true},
		// Over net/http's own limit (twice MaxHeaderBytes): its plain 431.
		{"64 KiB (over net/http's hard limit)", big(64 << 10), false},
	} {
		rows = append(rows, hostileRow{
			name: "huge head: " + c.name, want: []int{431}, json: c.json,
			attack: oneShot("GET", hostileReq("GET", "/big", c.extra, ""), nil),
		})
	}

	// Oversized bodies: 413, the connection closed (the body is unread).
	for _, eng := range engines {
		rows = append(rows, hostileRow{
			name: "Content-Length over MaxBodyBytes on " + eng.name, want: []int{413}, json: true, closedAfter: true,
			attack: oneShot("POST", hostileReq("POST", "/upload", eng.extra+fmt.Sprintf("Content-Length: %d\r\n", hostileMaxBodyBytes+1), "partial body"), nil),
		})
	}
	var chunks strings.Builder
	for k := 0; k < 10; k++ {
		fmt.Fprintf(&chunks, "%x\r\n%s\r\n", 8<<10, strings.Repeat("c", 8<<10))
	}
	chunks.WriteString("0\r\n\r\n")
	rows = append(rows, hostileRow{
		name: "chunked body over MaxBodyBytes", want: []int{413}, json: true, closedAfter: true,
		attack: func(h *hostileRun, i int) hostileOutcome {
			var o hostileOutcome
			c := h.dialFor(&o)
			if c == nil {
				return o
			}
			defer c.conn.Close()
			start := time.Now()
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				_ = c.send(hostileReq("POST", "/upload", "Transfer-Encoding: chunked\r\n", chunks.String()))
			}()
			resp, body, err := c.read("POST")
			o.end = time.Now()
			o.elapsed = o.end.Sub(start)
			h.finish(&o, c, resp, body, err, nil)
			_ = c.conn.Close()
			<-sent
			return o
		},
	})

	// An application failing for one tenant: the attacker gets its own
	// application's 503s, then the router's breaker_open; the neighbour on
	// the same instances sees nothing, and no instance breaker opens.
	rows = append(rows, hostileRow{
		name: "backend answering 503 to every attacker request", want: []int{503}, allow5xx: true,
		setup: func(t *testing.T, h *hostileRun) {
			tenant := "attacker"
			h.env.hb.failTenant.Store(&tenant)
			t.Cleanup(func() { h.env.hb.failTenant.Store(nil) })
		},
		attack: func(h *hostileRun, i int) hostileOutcome {
			var o hostileOutcome
			c := h.dialFor(&o)
			if c == nil {
				return o
			}
			defer c.conn.Close()
			for k := 0; k < 4; k++ {
				_ = c.send(hostileReq("GET", fmt.Sprintf("/app?i=%d&k=%d", i, k), "", ""))
				resp, body, err := c.read("GET")
				o.end = time.Now()
				if resp == nil {
					o.class = endClass(err)
					o.classes = append(o.classes, o.class)
					o.problem("request %d of 4: no answer (%s)", k+1, o.class)
					return o
				}
				o.status, o.class = resp.StatusCode, strconv.Itoa(resp.StatusCode)
				code, isRouter := routerErrorCode(resp, body)
				switch {
				case resp.StatusCode != 503:
					o.classes = append(o.classes, o.class)
					o.problem("request %d of 4: %d %.100q", k+1, resp.StatusCode, body)
					return o
				case resp.Header.Get("X-Served-By") != "":
					o.class = "503 from the app"
				case isRouter && code == "breaker_open":
					o.class, o.breakerOpen = "503 breaker_open", true
				default:
					o.problem("request %d of 4: a 503 neither the app's nor breaker_open: %.100q", k+1, body)
					return o
				}
				o.classes = append(o.classes, o.class)
				if resp.Close {
					return o
				}
			}
			return o
		},
		check: func(t *testing.T, h *hostileRun, outs []hostileOutcome) {
			app, open := 0, 0
			for _, o := range outs {
				for _, c := range o.classes {
					switch c {
					case "503 from the app":
						app++
					case "503 breaker_open":
						open++
					}
				}
			}
			if app == 0 {
				t.Errorf("the attacker never got its application's own 503")
			}
			if open == 0 {
				t.Errorf("after %d failing requests the attacker never got the router's breaker_open", 4*hostileAttacks)
			}
		},
	})

	// Clients hanging up while the backend works on their request (/sleep
	// takes 3s): the backend's request is cancelled within a second, and
	// the request leaves the in-flight count.
	for _, eng := range engines {
		rows = append(rows, hostileRow{
			name: "client hangs up before the response head: " + eng.name, closedOK: true, inflightZero: true,
			maxElapsed: hostileMargin, limit: hostileSleep + 3*time.Second,
			attack: func(h *hostileRun, i int) hostileOutcome {
				var o hostileOutcome
				c := h.dialFor(&o)
				if c == nil {
					return o
				}
				id := fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(eng.name, " ", ""), time.Now().UnixNano(), i)
				s := h.env.hb.sleeper(id)
				_ = c.send(hostileReq("GET", "/sleep?id="+id, eng.extra, ""))
				select {
				case <-s.started:
				case <-time.After(3 * time.Second):
					_ = c.conn.Close()
					o.class = "never reached the backend"
					o.problem("the request never reached the backend")
					return o
				}
				o.end = time.Now()
				_ = c.conn.Close()
				o.class = "hung up"
				select {
				case ended := <-s.ended:
					if ended.IsZero() {
						o.elapsed = hostileSleep
						o.problem("the backend's request ran its %s: never cancelled", hostileSleep)
					} else {
						o.elapsed = ended.Sub(o.end)
					}
				case <-time.After(hostileSleep + time.Second):
					o.problem("the backend's request did not end")
				}
				return o
			},
		})
	}

	// Query strings reach the backend byte for byte.
	queries := []string{"/q?q=100%&page=2", "/q?a=1;b=2", "/q?x=%zz&y=1"}
	for _, eng := range engines {
		rows = append(rows, hostileRow{
			name: "query forwarded as sent: " + eng.name, want: []int{200},
			attack: func(h *hostileRun, i int) hostileOutcome {
				q := queries[i%len(queries)]
				return exchange{method: "GET", pieces: []string{hostileReq("GET", q, eng.extra, "")},
					check: func(resp *http.Response, body []byte, o *hostileOutcome) {
						var u uriReply
						if resp.StatusCode != 200 || json.Unmarshal(body, &u) != nil {
							o.problem("%d %.100q", resp.StatusCode, body)
							return
						}
						if u.URI != q {
							o.problem("sent %s, the backend got %s", q, u.URI)
						}
					}}.run(h, i)
			},
		})
	}

	// HTTP/1.0 without Host: the backend never sees its own address as
	// the host.
	rows = append(rows, hostileRow{
		name: "HTTP/1.0 without Host", want: []int{200, 400},
		attack: oneShot("GET", "GET /t/attacker/h10 HTTP/1.0\r\nX-Test-Route: 1\r\n\r\n", func(resp *http.Response, body []byte, o *hostileOutcome) {
			if resp.StatusCode != 200 {
				return
			}
			var u uriReply
			if json.Unmarshal(body, &u) != nil {
				o.problem("200 with %.100q", body)
				return
			}
			for _, b := range env.backends {
				if u.Host == b.addr || slices.Contains(u.Headers.Values("X-Forwarded-Host"), b.addr) {
					o.problem("the backend saw its own address as the host: Host %q, X-Forwarded-Host %q", u.Host, u.Headers.Values("X-Forwarded-Host"))
				}
			}
		}),
	})

	// A 1xx is not for an HTTP/1.0 client (RFC 9110 §15.2).
	rows = append(rows, hostileRow{
		name: "103 Early Hints to an HTTP/1.0 client", want: []int{200},
		attack: oneShot("GET", "GET /t/attacker/raw/early-hints HTTP/1.0\r\nHost: router.test\r\nX-Test-Route: 1\r\n\r\n", func(resp *http.Response, body []byte, o *hostileOutcome) {
			if resp.StatusCode != 200 || string(body) != "ok" {
				o.problem("first response %d %.60q: want the final 200 ok", resp.StatusCode, body)
			}
		}),
	})

	// Proxy-Authenticate is kept on a backend's 407.
	for _, eng := range engines {
		rows = append(rows, hostileRow{
			name: "Proxy-Authenticate kept on a 407: " + eng.name, want: []int{407},
			attack: oneShot("GET", hostileReq("GET", "/raw/proxy-auth", eng.extra, ""), func(resp *http.Response, body []byte, o *hostileOutcome) {
				if got := resp.Header.Values("Proxy-Authenticate"); len(got) != 1 || got[0] != `Basic realm="backend"` {
					o.problem("Proxy-Authenticate %q, want [Basic realm=\"backend\"]", got)
				}
			}),
		})
	}

	// Streaming: a Content-Length response written in pieces reaches the
	// client as it comes.
	for _, c := range []struct{ name, extra string }{
		{"net/http (TE: trailers)", "TE: trailers\r\n"},
		{"fast path", ""},
	} {
		rows = append(rows, hostileRow{
			name: "streamed Content-Length response: " + c.name, want: []int{200},
			maxElapsed: 200 * time.Millisecond,
			attack: func(h *hostileRun, i int) hostileOutcome {
				var o hostileOutcome
				conn := h.dialFor(&o)
				if conn == nil {
					return o
				}
				defer conn.conn.Close()
				start := time.Now()
				_ = conn.send(hostileReq("GET", "/raw/stream", c.extra, ""))
				resp, err := http.ReadResponse(conn.br, &http.Request{Method: "GET"})
				if err != nil {
					o.class = endClass(err)
					return o
				}
				o.status, o.class = resp.StatusCode, strconv.Itoa(resp.StatusCode)
				first := make([]byte, 1)
				if _, err := io.ReadFull(resp.Body, first); err != nil {
					o.problem("first byte: %v", err)
					return o
				}
				o.elapsed = time.Since(start)
				rest, err := io.ReadAll(resp.Body)
				o.end = time.Now()
				if body := string(first) + string(rest); err != nil || body != "0123456789abcdefghij" {
					o.problem("body %q (%v)", body, err)
				}
				return o
			},
		})
	}
	return rows
}
