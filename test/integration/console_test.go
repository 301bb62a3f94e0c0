package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// The operator console driven in Debian's Chromium (chromedp) against the
// real stack: Consul, PostgreSQL, the orders app, two routers and a
// controller. Screenshots of every page go to test/integration/artifacts/
// console/ (git-ignored; CONSOLE_ARTIFACTS overrides the directory).

// browser is one headless Chromium tab on the console.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (scripts/tools.sh installs it): %v", err)
	}
	dir := os.Getenv("CONSOLE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("artifacts", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelT := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(cancelT)
	abs, _ := filepath.Abs(dir)
	t.Logf("console screenshots in %s", abs)
	return &browser{t: t, ctx: ctx, base: base, dir: dir}
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) open(path string) { b.t.Helper(); b.do(chromedp.Navigate(b.base + path)) }

func (b *browser) path() string {
	b.t.Helper()
	return b.eval(`location.pathname + location.search`)
}

func (b *browser) eval(js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (b *browser) evalInt(js string) int {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

// submit clicks sel (a submit button) and waits for the page at a path
// starting with want.
func (b *browser) submit(sel, want string) {
	b.t.Helper()
	b.eval(`window.__before = location.href + performance.timeOrigin; ""`)
	b.do(chromedp.Click(chromedp.CSS(sel)))
	b.waitJS("page "+want, fmt.Sprintf(`(window.__before === undefined) && document.readyState === "complete" && location.pathname.startsWith(%q)`, want), 30*time.Second)
}

func (b *browser) waitJS(what, cond string, limit time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](cond))
		if err == nil && v {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: %v (at %s)", what, err, b.path())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return b.eval(fmt.Sprintf(`(document.querySelector(%q) || {textContent: "<absent>"}).textContent.trim()`, sel))
}

func (b *browser) count(sel string) int {
	b.t.Helper()
	return b.evalInt(fmt.Sprintf(`document.querySelectorAll(%q).length`, sel))
}

func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// unlabelledJS lists the page's controls that have neither a <label>, an
// aria-label nor aria-labelledby (a button's own text counts as its label).
const unlabelledJS = `Array.from(document.querySelectorAll("input:not([type=hidden]), select, textarea, button"))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby") &&
    !(el.tagName === "BUTTON" && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 80)).join("\n")`

// accessible asserts that every control on the page is labelled.
func (b *browser) accessible(page string) {
	b.t.Helper()
	if bad := b.eval(unlabelledJS); bad != "" {
		b.t.Errorf("%s: controls without a label:\n%s", page, bad)
	}
	if b.count("main, [role=main]") != 1 || b.eval(`document.documentElement.lang`) != "en" || b.eval(`document.title`) == "" {
		b.t.Errorf("%s: no main landmark, lang or title", page)
	}
}

// tabOrder focuses first, presses Tab len(want)-1 times and returns the
// id of each element focused.
func (b *browser) tabOrder(first string, n int) []string {
	b.t.Helper()
	b.do(chromedp.Focus(chromedp.CSS(first)))
	got := []string{b.eval(`document.activeElement.id`)}
	for i := 1; i < n; i++ {
		b.do(chromedp.KeyEvent(kb.Tab))
		got = append(got, b.eval(`document.activeElement.id`))
	}
	return got
}

func (b *browser) signIn(token string) {
	b.t.Helper()
	b.open("/ui/signin")
	b.do(chromedp.SendKeys(chromedp.CSS("#token"), token))
	b.submit("#signin", "/ui/")
}

// forgedPost posts a form from the page, with the session's cookie, and
// returns the status; csrf true sends the page's real CSRF token.
func (b *browser) forgedPost(path string, csrf bool, fields string) int {
	b.t.Helper()
	tok := `""`
	if csrf {
		tok = `document.querySelector("input[name=csrf]").value`
	}
	return b.evalInt(fmt.Sprintf(`(async () => { const f = new URLSearchParams(%q); if (%s) f.set("csrf", %s);
	  const r = await fetch(%q, {method: "POST", body: f, headers: {Accept: "application/json"}}); return r.status; })()`, fields, tok, tok, path))
}

func TestConsoleInBrowser(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	s.seedTenant("climber", "free", catalog.TierShared, "pool-1", 60)
	var bulk []catalog.Tenant
	for i := 0; i < 24; i++ {
		tn := catalog.Tenant{ID: fmt.Sprintf("acme-%02d", i), Plan: map[bool]string{true: "starter", false: "free"}[i%2 == 0],
			Tier: catalog.TierShared, Target: "pool-1", State: catalog.StateActive}
		if i%3 == 0 { // placement keeps labelled tenants on targets with the label: the others rebalance
			tn.Labels = map[string]string{"region": "eu"}
		}
		bulk = append(bulk, tn)
	}
	if err := s.store.BulkLoad(ctx, bulk, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"pool-1", "pool-2"} {
		if _, err := s.store.UpdateTarget(ctx, id, func(tg *catalog.Target) error { tg.Capacity.Tenants = 40; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.store.AddDomain(ctx, "climber", "shop.climber.example", "switchyard.localhost", 0); err != nil {
		t.Fatal(err)
	}
	store, err := backup.NewDirStore(t.TempDir(), "local")
	if err != nil {
		t.Fatal(err)
	}
	hooks := &consoleHooks{gate: &phaseGate{}}
	_, base, _ := s.startController(func(c *controller.Config) {
		c.BackupStores = map[string]backup.Store{"local": store}
		c.MoveHooks = &migrator.Hooks{BeforePhase: hooks.beforePhase}
	})
	b := newBrowser(t, base)

	t.Run("viewer", func(t *testing.T) { b.t = t; consoleAsViewer(b) })
	t.Run("billing over HTTP", func(t *testing.T) { consoleBillingHTTP(t, s, base) })
	t.Run("operator", func(t *testing.T) { b.t = t; consoleAsOperator(b, s) })
	t.Run("operator aborts and retries", func(t *testing.T) { b.t = t; abortAndRetry(b, s, hooks) })
}

// consoleHooks stops a move before a phase (gate) and fails the next move
// of failTenant once, before catch-up, which pauses it.
type consoleHooks struct {
	gate       *phaseGate
	failTenant atomic.Value // string: the tenant whose next catch-up fails once
}

var errConsoleInjected = errors.New("console test: failure injected before catch-up")

func (h *consoleHooks) beforePhase(m *migrator.Move) error {
	if want, _ := h.failTenant.Load().(string); want != "" && m.Tenant == want && m.Phase == migrator.PhaseCatchUp &&
		h.failTenant.CompareAndSwap(want, "") {
		return errConsoleInjected
	}
	return h.gate.beforePhase(m)
}

// postForm posts a form and returns the status and body; html asks for
// the browser's answer (an HTML page) rather than the API's JSON.
func postForm(t *testing.T, hc *http.Client, u string, form url.Values, html bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if html {
		req.Header.Set("Accept", "text/html")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// consoleBillingHTTP: the billing role may change plans and nothing else;
// bad input and missing sessions get a status and a body saying why.
func consoleBillingHTTP(t *testing.T, s *moveStack, base string) {
	ctx := testContext(t)
	hc := consoleClient(t, base, tokBilling)
	page := getPage(t, hc, base+"/ui/tenants/acme-02")
	csrf := csrfField.FindStringSubmatch(page)
	if csrf == nil || !strings.Contains(page, `id="plan-form"`) {
		t.Fatal("billing gets no plan-change form")
	}
	if strings.Contains(getPage(t, hc, base+"/ui/rebalance?plan=1"), `id="apply"`) {
		t.Error("billing gets the rebalance Apply button")
	}
	if st, body := postForm(t, hc, base+"/ui/rebalance/apply", url.Values{"csrf": {csrf[1]}}, false); st != 403 || !strings.Contains(body, `"error":"forbidden"`) {
		t.Errorf("billing's rebalance apply: %d %s", st, body)
	}
	if st, body := postForm(t, http.DefaultClient, base+"/ui/tenants/acme-02/plan", url.Values{"plan": {"free"}}, false); st != 401 || !strings.Contains(body, `"error":"unauthenticated"`) {
		t.Errorf("post without a session: %d %s", st, body)
	}
	if st, body := postForm(t, hc, base+"/ui/tenants/acme-02/plan", url.Values{"csrf": {csrf[1]}, "plan": {"platinum"}}, true); st != 400 || !strings.Contains(body, "unknown plan") && !strings.Contains(body, "platinum") {
		t.Errorf("unknown plan: %d %s", st, body)
	}
	req, _ := http.NewRequest("GET", base+"/ui/tenants?tier=gold", nil)
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 400 {
		t.Errorf("tier=gold: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := hc.Get(base + "/ui/tenants/nobody"); err != nil || resp.StatusCode != 404 {
		t.Errorf("unknown tenant: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	for path, want := range map[string]int{"/ui/static/console.css": 200, "/ui/static/console.js": 200, "/ui/static/": 404} {
		if resp, err := http.Get(base + path); err != nil || resp.StatusCode != want {
			t.Errorf("GET %s: %v %v, want %d", path, resp, err, want)
		} else {
			resp.Body.Close()
		}
	}
	if tn, _ := s.store.GetTenant(ctx, "acme-02"); tn.Plan != "starter" {
		t.Fatalf("refused posts changed acme-02's plan to %s", tn.Plan)
	}
	// Same tier: the plan changes, no move; the tenant page says so.
	st, body := postForm(t, hc, base+"/ui/tenants/acme-02/plan", url.Values{"csrf": {csrf[1]}, "plan": {"free"}, "reason": {"downgrade"}}, true)
	if st != 200 || !strings.Contains(body, "same tier, no move needed") {
		t.Fatalf("billing's plan change: %d", st)
	}
	if tn, _ := s.store.GetTenant(ctx, "acme-02"); tn.Plan != "free" {
		t.Fatalf("acme-02's plan is %s after the change", tn.Plan)
	}
}

// consoleAsViewer: sign-in (labels, focus order), fleet, tenant filters,
// no forms for a viewer and the server refusing a forged post, sign-out.
func consoleAsViewer(b *browser) {
	t := b.t
	b.open("/ui/tenants?q=acme")
	if p := b.path(); !strings.HasPrefix(p, "/ui/signin") {
		t.Fatalf("signed out, /ui/tenants went to %s, want the sign-in page", p)
	}
	b.accessible("sign-in")
	if got := b.tabOrder("#token", 2); !slices.Equal(got, []string{"token", "signin"}) {
		t.Errorf("sign-in focus order %v, want token then the button", got)
	}
	b.shot("01-signin")
	b.do(chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"))
	b.submit("#signin", "/ui/signin")
	if msg := b.text("#signin-error"); !strings.Contains(msg, "not valid") {
		t.Fatalf("a bad token: %q", msg)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#token"), tokViewer))
	b.submit("#signin", "/ui/tenants") // back where it was going
	if role := b.text("#role"); role != "viewer" {
		t.Fatalf("signed in as %q", role)
	}

	b.open("/ui/")
	b.accessible("fleet")
	if b.count("tr[data-target]") != 4 || !strings.Contains(b.text("body"), "25 tenants on 2 targets") {
		t.Errorf("fleet: %d targets; %s", b.count("tr[data-target]"), b.text("#tier-shared"))
	}
	if b.count(`[role=meter][aria-label="pool-1 tenants"][aria-valuenow="63"]`) != 1 { // 25 of 40
		t.Errorf("pool-1's tenants bar is not at 63%%")
	}
	b.shot("02-fleet")

	filterTenants(b)

	b.open("/ui/tenants/climber")
	b.accessible("tenant (viewer)")
	if d := b.text("#tenant-domains tbody"); !strings.Contains(d, "shop.climber.example") {
		t.Errorf("tenant page's domains: %q", d)
	}
	if n := b.count(`form[method=post]:not([action="/ui/signout"])`); n != 0 {
		t.Errorf("a viewer sees %d forms that change something on the tenant page", n)
	}
	b.open("/ui/rebalance?plan=1")
	if b.count("#plan") != 1 || b.count("#apply") != 0 {
		t.Errorf("viewer's rebalance: plan shown %d, apply button %d (want 1, 0)", b.count("#plan"), b.count("#apply"))
	}
	// The server refuses a viewer's post even with a valid CSRF token.
	if st := b.forgedPost("/ui/tenants/climber/plan", true, "plan=enterprise"); st != 403 {
		t.Errorf("viewer's forged plan change: %d, want 403", st)
	}
	for _, path := range []string{"/ui/rebalance/apply", "/ui/moves/any-move/abort", "/ui/moves/any-move/retry", "/ui/tenants/climber/backups"} {
		if st := b.forgedPost(path, true, "max_moves=1"); st != 403 {
			t.Errorf("viewer's forged post to %s: %d, want 403", path, st)
		}
	}
	b.submit("#signout", "/ui/signin")
	b.open("/ui/")
	if p := b.path(); !strings.HasPrefix(p, "/ui/signin") {
		t.Fatalf("after sign-out /ui/ showed %s", p)
	}
}

// filterTenants uses the tenants page's filters and pager.
func filterTenants(b *browser) {
	t := b.t
	b.open("/ui/tenants")
	b.accessible("tenants")
	b.do(chromedp.SendKeys(chromedp.CSS("#f-q"), "acme-1"), chromedp.SetValue(chromedp.CSS("#f-plan"), "starter"))
	b.submit("#filter", "/ui/tenants")
	got := b.eval(`Array.from(document.querySelectorAll("tr[data-tenant]")).map(r => r.dataset.tenant).join(",")`)
	if got != "acme-10,acme-12,acme-14,acme-16,acme-18" {
		t.Errorf("id acme-1…, plan starter: %q", got)
	}
	b.shot("03-tenants-filtered")
	b.open("/ui/tenants?label=region%3Deu")
	got = b.eval(`Array.from(document.querySelectorAll("tr[data-tenant]")).map(r => r.dataset.tenant).join(",")`)
	if got != "acme-00,acme-03,acme-06,acme-09,acme-12,acme-15,acme-18,acme-21" {
		t.Errorf("label region=eu: %q", got)
	}
	b.open("/ui/tenants?target=pool-2")
	if n := b.count("tr[data-tenant]"); n != 0 {
		t.Errorf("pool-2 has %d tenants listed, want none", n)
	}
	b.open("/ui/tenants?q=acme")
	if b.count("tr[data-tenant]") != 24 || b.count("#next-page") != 0 {
		t.Errorf("24 acme tenants on one page: %d rows, next link %d", b.count("tr[data-tenant]"), b.count("#next-page"))
	}
}

// consoleAsOperator: a plan change whose move is watched live to retained,
// its timeline, the audit links, CSRF, and a rebalance dry run and apply.
func consoleAsOperator(b *browser, s *moveStack) {
	t := b.t
	ctx := testContext(t)
	b.signIn(tokOperator)
	if role := b.text("#role"); role != "operator" {
		t.Fatalf("signed in as %q", role)
	}
	b.open("/ui/tenants/climber")
	b.accessible("tenant (operator)")
	b.eval(`document.activeElement.blur(); ""`)
	b.do(chromedp.KeyEvent(kb.Tab))
	if first := b.eval(`document.activeElement.textContent`); first != "Skip to content" {
		t.Errorf("the first Tab stop is %q, want the skip link", first)
	}
	if got := b.tabOrder("#plan", 3); !slices.Equal(got, []string{"plan", "reason", "plan-submit"}) {
		t.Errorf("plan change focus order %v", got)
	}
	// A post without the CSRF token is refused, and changes nothing.
	if st := b.forgedPost("/ui/tenants/climber/plan", false, "plan=enterprise"); st != 403 {
		t.Errorf("plan change without CSRF token: %d, want 403", st)
	}
	if tn, _ := s.store.GetTenant(ctx, "climber"); tn.Plan != "free" {
		t.Fatalf("a refused post changed the plan to %s", tn.Plan)
	}
	b.shot("04-tenant")
	backUpNow(b)
	b.do(chromedp.SetValue(chromedp.CSS("#plan"), "enterprise"), chromedp.SendKeys(chromedp.CSS("#reason"), "console test"))
	b.submit("#plan-submit", "/ui/moves/")
	watchMoveLive(b, s)
	checkAudit(b)
	rebalance(b, s)
}

// watchMoveLive follows the move page, without reloading it, until the
// move is retained.
func watchMoveLive(b *browser, s *moveStack) {
	t := b.t
	moveID := strings.TrimPrefix(b.eval(`location.pathname`), "/ui/moves/")
	b.accessible("move")
	if !strings.Contains(b.text(".notice"), "cl-1") {
		t.Errorf("the plan change does not say where the move goes: %q", b.text(".notice"))
	}
	b.eval(`window.__noReload = "still here"; window.__phases = []; setInterval(() => { const p = document.getElementById("move-phase").textContent;
	  if (window.__phases[window.__phases.length-1] !== p) window.__phases.push(p); }, 50); ""`)
	first := b.text("#move-phase")
	b.shot("05-move-running")
	b.waitJS("move retained", `document.getElementById("move-phase").textContent === "retained" || document.getElementById("move-status").textContent === "paused"`, 120*time.Second)
	if b.eval(`window.__noReload || ""`) != "still here" {
		t.Fatal("the move page was reloaded")
	}
	m, err := s.migrator(nil).Get(testContext(t), moveID)
	if err != nil || m.Phase != migrator.PhaseRetained {
		t.Fatalf("move %s: %v %v (page says %s %s)", moveID, m, err, b.text("#move-phase"), b.text("#move-error"))
	}
	// The sampler may not have ticked since the last update: add what the
	// page shows now (a small tenant can go from preflight to retained in
	// one event).
	phases := b.eval(`(() => { const p = document.getElementById("move-phase").textContent;
	  if (window.__phases[window.__phases.length-1] !== p) window.__phases.push(p); return window.__phases.join(","); })()`)
	if first == "retained" || !strings.Contains(phases, ",") {
		t.Errorf("no live update seen: first %q, phases %q", first, phases)
	}
	// The flip saves the phase first, the pause and the switch's timeline
	// just after: they arrive over the same stream.
	b.waitJS("the pause shown live", `document.getElementById("move-pause").textContent !== "—"`, 15*time.Second)
	t.Logf("move %s seen live through phases %s; pause %s", moveID, phases, b.text("#move-pause"))
	b.shot("06-move-retained")
	waitFor(t, 15*time.Second, "the switch's steps saved", func() bool {
		m, err := s.migrator(nil).Get(testContext(t), moveID)
		return err == nil && len(m.SwitchSteps) > 0
	})
	b.open("/ui/moves/" + moveID)
	if b.count(".timeline > span") < 4 || b.count("#switch-steps tbody tr") < 3 {
		t.Errorf("finished move: %d phases on the timeline, %d switch steps", b.count(".timeline > span"), b.count("#switch-steps tbody tr"))
	}
	b.shot("07-move-timeline")
	b.open("/ui/moves")
	b.accessible("moves")
	if b.count(`tr[data-move="`+moveID+`"]`) != 1 {
		t.Errorf("moves page does not list %s", moveID)
	}
	b.shot("08-moves")
}

// checkAudit filters the audit log to the plan change and follows its
// link to the move.
func checkAudit(b *browser) {
	t := b.t
	b.open("/ui/audit")
	b.accessible("audit")
	b.do(chromedp.SendKeys(chromedp.CSS("#a-tenant"), "climber"), chromedp.SendKeys(chromedp.CSS("#a-action"), "tenant.plan"))
	b.submit("#audit-filter", "/ui/audit")
	if n := b.count(`tr[data-action="tenant.plan"]`); n != 1 || b.count("tr[data-action]") != 1 {
		t.Fatalf("audit filtered to climber's plan changes: %d rows", b.count("tr[data-action]"))
	}
	if !strings.HasSuffix(b.text("tr[data-action] .pause"), " ms") || !strings.HasPrefix(b.text("tr[data-action] td:nth-child(2)"), "operator:") {
		t.Errorf("audit row: pause %q, actor %q", b.text("tr[data-action] .pause"), b.text("tr[data-action] td:nth-child(2)"))
	}
	b.shot("09-audit")
	b.submit("a.move-link", "/ui/moves/")
	if b.text("#move-phase") != "retained" {
		t.Errorf("audit's move link led to a move in %q", b.text("#move-phase"))
	}
}

// rebalance: a dry run shown as bars and moves, then applied.
func rebalance(b *browser, s *moveStack) {
	t := b.t
	b.open("/ui/rebalance")
	b.accessible("rebalance")
	b.do(chromedp.SetValue(chromedp.CSS("#r-max"), "2"))
	b.submit("#dry-run", "/ui/rebalance")
	if n := b.count("#plan-moves tbody tr a"); n != 2 || b.count(`.bars [role=meter]`) != 4 {
		t.Fatalf("dry run: %d moves, %d bars; %s", n, b.count(`.bars [role=meter]`), b.text("#plan-note"))
	}
	moves, _ := s.migrator(nil).List(testContext(t))
	before := len(moves)
	b.accessible("rebalance plan")
	b.shot("10-rebalance-dry-run")
	b.submit("#apply", "/ui/rebalance/apply")
	if n := b.count("#started li"); n != 2 {
		t.Fatalf("apply started %d moves: %s", n, b.text("main"))
	}
	moves, _ = s.migrator(nil).List(testContext(t))
	started := 0
	for _, m := range moves {
		if m.From == "pool-1" && m.To == "pool-2" {
			started++
		}
	}
	if len(moves) != before+2 || started != 2 {
		t.Fatalf("after apply: %d moves (was %d), %d pool-1 → pool-2", len(moves), before, started)
	}
	b.shot("11-rebalance-applied")

	// The moves list follows both moves live, without a reload.
	ids := b.eval(`Array.from(document.querySelectorAll("#started li a")).map(a => a.textContent).join(",")`)
	b.open("/ui/moves")
	b.eval(`window.__noReload = "still here"; ""`)
	initial := b.eval(`Array.from(document.querySelectorAll("tr[data-move] .phase")).map(e => e.textContent).join(",")`)
	cond := ""
	for _, id := range strings.Split(ids, ",") {
		cond += fmt.Sprintf(`document.querySelector('tr[data-move="%s"] .phase').textContent === "retained" && `, id)
	}
	b.waitJS("both rebalance moves retained on the moves list", cond+"true", 120*time.Second)
	if b.eval(`window.__noReload || ""`) != "still here" || !strings.Contains(initial, "preflight") && !strings.Contains(initial, "copy") &&
		!strings.Contains(initial, "capture") && !strings.Contains(initial, "provision") && !strings.Contains(initial, "catch-up") && !strings.Contains(initial, "switch") {
		t.Errorf("moves list: reloaded, or no move under way when it loaded (phases %s)", initial)
	}
	b.waitJS("the rebalance moves' pauses on the list", `Array.from(document.querySelectorAll("tr[data-move] .pause")).every(e => e.textContent.endsWith("ms") || e.textContent.endsWith("s"))`, 15*time.Second)
	b.shot("12-moves-after-rebalance")
}

// backUpNow starts a backup with the tenant page's "Back up now" (the
// page is then at climber's tenant page with the form) and follows its
// job there until the backup is listed, as the API lists it.
func backUpNow(b *browser) {
	t := b.t
	if n := b.count("#tenant-backups tr[data-backup]"); n != 0 {
		t.Fatalf("climber has %d backups before any was taken", n)
	}
	// Refused: no CSRF token (403), a store that does not exist (400); no
	// backup is taken.
	if st := b.forgedPost("/ui/tenants/climber/backups", false, "store=local"); st != 403 {
		t.Errorf("Back up now without a CSRF token: %d, want 403", st)
	}
	if st := b.forgedPost("/ui/tenants/climber/backups", true, "store=nope"); st != 400 {
		t.Errorf("Back up now into an unknown store: %d, want 400", st)
	}
	if _, out := call(t, "GET", b.base+"/v1/tenants/climber/backups", tokViewer, nil, nil); len(out["backups"].([]any)) != 0 {
		t.Fatalf("refused posts took a backup: %v", out)
	}
	b.do(chromedp.SetValue(chromedp.CSS("#backup-store"), "local"))
	b.submit("#backup-submit", "/ui/tenants/climber")
	if !strings.Contains(b.text(".notice"), "Backup job backup-") || !strings.Contains(b.eval(`location.search`), "job=backup-") {
		t.Fatalf("Back up now: notice %q at %s", b.text(".notice"), b.path())
	}
	// A small backup may end before the page is rendered: then there is no
	// stream and the page lists it at once. Either way it must be listed.
	live := b.eval(`document.body.dataset.stream || ""`) != ""
	b.eval(`window.__noReload = "still here"; ""`)
	b.waitJS("the backup job done", `document.getElementById("job-state").textContent === "done"`, 60*time.Second)
	b.waitJS("the backup listed", `document.querySelectorAll("#tenant-backups tr[data-backup]").length === 1`, 15*time.Second)
	if b.eval(`window.__noReload || ""`) != "still here" {
		t.Error("the tenant page was reloaded while following the backup")
	}
	_, out := call(t, "GET", b.base+"/v1/tenants/climber/backups", tokViewer, nil, nil)
	list, _ := out["backups"].([]any)
	if len(list) != 1 {
		t.Fatalf("the API lists %d backups of climber: %v", len(list), out)
	}
	m := list[0].(map[string]any)
	var rows float64
	for _, tb := range m["tables"].([]any) {
		rows += tb.(map[string]any)["rows"].(float64)
	}
	id := m["id"].(string)
	cells := b.eval(fmt.Sprintf(`Array.from(document.querySelectorAll('#tenant-backups tr[data-backup=%q] > *')).map(c => c.textContent.trim()).join("|")`, id))
	parts := strings.Split(cells, "|")
	if len(parts) != 5 || parts[0] != id || parts[2] != "local" || parts[3] != fmt.Sprint(int64(rows)) || !strings.HasSuffix(parts[4], "B") || rows == 0 {
		t.Errorf("backup row %q; the API says %s in store %v with %.0f rows", cells, id, m["store"], rows)
	}
	if got := b.text("#job-rows"); got != fmt.Sprintf("%d of %d", int64(rows), int64(rows)) || b.text("#job-backup") != id {
		t.Errorf("job panel: rows %q, backup %q; want %.0f of %.0f, %s", got, b.text("#job-backup"), rows, rows, id)
	}
	t.Logf("backup %s (%.0f rows) listed; the page followed the running job live: %v", id, rows, live)
	b.accessible("tenant with a backup job")
	b.shot("04b-tenant-backup")
}

// abortAndRetry: an operator aborts a move stopped before catch-up and
// sees it end aborted live (the tenant stays where it was); then retries a
// move paused by a failure and sees it reach retained live.
func abortAndRetry(b *browser, s *moveStack, hooks *consoleHooks) {
	t := b.t
	ctx := testContext(t)
	s.seedTenant("stopper", "free", catalog.TierShared, "pool-1", 40)
	reached, release := hooks.gate.arm("stopper", migrator.PhaseCatchUp)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // a failed test must not keep the move stopped
	id := startPlanMove(t, b.base, "stopper", "pro")
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatalf("move %s never reached catch-up", id)
	}
	b.open("/ui/moves/" + id)
	if b.text("#move-phase") != "catch-up" || b.count("#abort") != 1 || b.count("#retry") != 0 {
		t.Fatalf("stopped move: phase %q, abort button %d, retry button %d", b.text("#move-phase"), b.count("#abort"), b.count("#retry"))
	}
	b.submit("#abort", "/ui/moves/"+id)
	if !strings.Contains(b.text(".notice"), "Abort requested") || b.text("#move-status") != "aborting" {
		t.Fatalf("after abort: notice %q, status %q", b.text(".notice"), b.text("#move-status"))
	}
	b.eval(`window.__noReload = "still here"; ""`)
	free()
	b.waitJS("the move aborted live", `document.getElementById("move-status").textContent === "aborted"`, 60*time.Second)
	if b.eval(`window.__noReload || ""`) != "still here" {
		t.Error("the move page was reloaded while the abort finished")
	}
	if b.eval(`String(document.getElementById("abort").form.hidden)`) != "true" {
		t.Error("the abort button is still offered on an aborted move")
	}
	if tn, err := s.store.GetTenant(ctx, "stopper"); err != nil || tn.Target != "pool-1" || tn.State != catalog.StateActive {
		t.Fatalf("after the abort stopper is %+v %v, want active on pool-1", tn, err)
	}
	b.shot("13-move-aborted")

	s.seedTenant("retrier", "free", catalog.TierShared, "pool-1", 40)
	hooks.failTenant.Store("retrier")
	id = startPlanMove(t, b.base, "retrier", "pro")
	waitFor(t, 60*time.Second, "the move paused by the injected failure", func() bool {
		m, err := s.migrator(nil).Get(ctx, id)
		return err == nil && m.Status == migrator.StatusPaused
	})
	b.open("/ui/moves/" + id)
	if !strings.Contains(b.text("#move-error"), "injected") || b.count("#retry") != 1 {
		t.Fatalf("paused move: error %q, retry button %d", b.text("#move-error"), b.count("#retry"))
	}
	b.submit("#retry", "/ui/moves/"+id)
	if !strings.Contains(b.text(".notice"), "Retrying") || b.count("#retry") != 0 {
		t.Errorf("after retry: notice %q, retry button %d (want none: the move runs)", b.text(".notice"), b.count("#retry"))
	}
	b.eval(`window.__noReload = "still here"; ""`)
	b.waitJS("the retried move retained live", `document.getElementById("move-phase").textContent === "retained"`, 120*time.Second)
	if b.eval(`window.__noReload || ""`) != "still here" {
		t.Error("the move page was reloaded while the retried move ran")
	}
	if b.eval(`String(document.getElementById("abort").form.hidden)`) != "true" {
		t.Error("the abort button is still offered on a retained move")
	}
	if tn, err := s.store.GetTenant(ctx, "retrier"); err != nil || tn.Target != "db-1" || tn.State != catalog.StateActive {
		t.Fatalf("after the retry retrier is %+v %v, want active on db-1", tn, err)
	}
	b.shot("14-move-retried")
}
