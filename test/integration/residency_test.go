package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// residencyStack is the move stack with regions: pool-1 in eu, pool-2 in
// us, pool-3 a shared pool without a region label (labelled eu later, to
// be the allowed destination), db-1 and cl-1 in us. acme and acme2 are
// resident in eu on pool-1, bolt (no constraint) is their neighbour.
type residencyStack struct {
	*moveStack
	t    *testing.T
	ctx  context.Context
	base string
	stop context.CancelFunc // stops the controller
	// before is acme's state every refused path must leave as it is.
	before acmeState
}

// acmeState is what a refused path must not change: acme's catalog record,
// its rows on pool-1, and its absence everywhere else (other pools, its own
// database on the dedicated server, the cluster) and from the moves.
type acmeState struct {
	record                         catalog.Tenant
	rows                           string
	elsewhere, dedicatedDBs, moves int
}

func newResidencyStack(t *testing.T) *residencyStack {
	s := &residencyStack{moveStack: newMoveStack(t), t: t, ctx: testContext(t)}
	if err := s.pgPool.CreateDatabase(s.ctx, "pool3"); err != nil {
		t.Fatal(err)
	}
	mustSchema(t, s.pgPool.DSN("pool3"))
	if err := s.store.CreateTarget(s.ctx, catalog.Target{ID: "pool-3", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgPool.DSN("pool3")}); err != nil {
		t.Fatal(err)
	}
	for id, region := range map[string]string{"pool-1": "eu", "pool-2": "us", "db-1": "us", "cl-1": "us"} {
		if _, err := s.store.UpdateTarget(s.ctx, id, func(tg *catalog.Target) error {
			tg.Labels = map[string]string{catalog.RegionLabel: region}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.seedTenant("acme", "free", catalog.TierShared, "pool-1", 60)
	s.seedTenant("bolt", "free", catalog.TierShared, "pool-1", 20)
	s.tenant("acme2", "free", catalog.TierShared, "pool-1")
	for _, id := range []string{"acme", "acme2"} {
		if _, err := s.store.UpdateTenant(s.ctx, id, func(tn *catalog.Tenant) error { tn.Residency = []string{"eu"}; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	_, s.base, s.stop = s.startController(func(c *controller.Config) { c.Retention = time.Millisecond })
	s.before = s.acme()
	return s
}

func (s *residencyStack) acme() acmeState {
	s.t.Helper()
	var st acmeState
	var err error
	if st.record, err = s.store.GetTenant(s.ctx, "acme"); err != nil {
		s.t.Fatal(err)
	}
	pool := sqlxMust(s.t, s.pgPool.DSN("pool"))
	defer pool.Close()
	if err := pool.Get(&st.rows, `SELECT count(*) || ':' || coalesce(string_agg(md5(id || item || quantity || price_cents || version), ',' ORDER BY id), '') FROM orders WHERE tenant_id = 'acme'`); err != nil {
		s.t.Fatal(err)
	}
	for _, dsn := range []string{s.pgPool.DSN("pool2"), s.pgPool.DSN("pool3"), s.pgCluster.DSN("app")} {
		db := sqlxMust(s.t, dsn)
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`); err != nil {
			s.t.Fatal(err)
		}
		db.Close()
		st.elsewhere += n
	}
	ded := sqlxMust(s.t, s.pgDedicated.DSN("postgres"))
	defer ded.Close()
	if err := ded.Get(&st.dedicatedDBs, `SELECT count(*) FROM pg_database WHERE datname = $1`, catalog.DatabaseName("acme")); err != nil {
		s.t.Fatal(err)
	}
	moves, err := s.migrator(nil).List(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, m := range moves {
		if m.Tenant == "acme" {
			st.moves++
		}
	}
	return st
}

// unchanged fails unless acme is as it was before the refused path.
func (s *residencyStack) unchanged(path string) {
	s.t.Helper()
	if got := s.acme(); !reflect.DeepEqual(got, s.before) {
		s.t.Fatalf("%s: refused, yet acme changed:\n got  %+v\n want %+v", path, got, s.before)
	}
}

// refused checks a 422 with code "residency" whose message names the
// constraint and every given text (the targets).
func refused(t *testing.T, path string, status int, body map[string]any, says ...string) {
	t.Helper()
	msg, _ := body["message"].(string)
	if status != 422 || body["error"] != "residency" || !strings.Contains(msg, "residency: tenant ") {
		t.Fatalf("%s: %d %v, want 422 residency", path, status, body)
	}
	for _, s := range says {
		if !strings.Contains(msg, s) {
			t.Fatalf("%s: message %q does not say %q", path, msg, s)
		}
	}
	t.Logf("%s: %d %s", path, status, msg)
}

// Every path that could put a resident tenant outside its region is
// refused with an error naming the constraint and the target, audited,
// and changes nothing; a move to another eu target is an ordinary online
// move.
func TestResidencyEveryPath(t *testing.T) {
	s := newResidencyStack(t)
	s.createPaths()
	s.planPaths()
	s.drainAndRebalance()
	s.manualMoveRefused()
	s.residencyUpdate()
	s.auditNamesEveryRefusal()
	s.leaderRechecks()
	s.allowedMove()
}

func (s *residencyStack) createPaths() {
	t := s.t
	st, body := call(t, "POST", s.base+"/v1/tenants", tokBilling, map[string]any{"id": "euro", "plan": "pro", "residency": []string{"eu"}}, nil)
	refused(t, "create on pro (dedicated-db only in us)", st, body, "tenant euro may live only in [eu]; target db-1 is in us")
	if _, err := s.store.GetTenant(s.ctx, "euro"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("refused create left a record: %v", err)
	}
	ded := sqlxMust(t, s.pgDedicated.DSN("postgres"))
	defer ded.Close()
	var n int
	if err := ded.Get(&n, `SELECT count(*) FROM pg_database WHERE datname = $1`, catalog.DatabaseName("euro")); err != nil || n != 0 {
		t.Fatalf("refused create made a database: %d %v", n, err)
	}
	// Allowed: a resident tenant goes to its region, though pool-2 and
	// pool-3 are emptier.
	st, body = call(t, "POST", s.base+"/v1/tenants", tokBilling, map[string]any{"id": "eve", "plan": "free", "residency": []string{"eu"}}, nil)
	if tn, _ := body["tenant"].(map[string]any); st != 201 || tn["target"] != "pool-1" || !reflect.DeepEqual(tn["residency"], []any{"eu"}) {
		t.Fatalf("create eve resident in eu: %d %v", st, body)
	}
	for _, bad := range [][]string{{"EU"}, {"eu", "eu"}, {""}} {
		st, body := call(t, "POST", s.base+"/v1/tenants", tokBilling, map[string]any{"id": "bad", "plan": "free", "residency": bad}, nil)
		if st != 400 || body["error"] != "invalid" || !strings.Contains(body["message"].(string), "residency") {
			t.Fatalf("create with residency %q: %d %v", bad, st, body)
		}
	}
}

func (s *residencyStack) planPaths() {
	t := s.t
	st, body := call(t, "PUT", s.base+"/v1/tenants/acme/plan", tokBilling, map[string]any{"plan": "pro"}, nil)
	refused(t, "plan change via API", st, body, "tenant acme may live only in [eu]; target db-1 is in us")
	s.unchanged("plan change via API")
	ev := controller.BillingEvent{ID: "evt_res_1", Type: "plan.changed", Tenant: "acme", Plan: "enterprise"}
	st, body = webhook(t, s.base, ev, time.Now(), hookSecret)
	refused(t, "plan change via webhook", st, body, "tenant acme may live only in [eu]; target cl-1 is in us")
	s.unchanged("plan change via webhook")
}

func (s *residencyStack) drainAndRebalance() {
	t := s.t
	st, body := call(t, "POST", s.base+"/v1/targets/pool-1/drain", tokOperator, map[string]any{"dry_run": false}, nil)
	refused(t, "drain of pool-1", st, body, "target pool-2 is in us", "target pool-3 has no region label")
	if tg, _, _ := s.store.GetTarget(s.ctx, "pool-1"); tg.Cordoned {
		t.Fatal("a refused drain cordoned pool-1")
	}
	if moves, _ := s.migrator(nil).List(s.ctx); len(moves) != 0 {
		t.Fatalf("a refused drain started %d moves", len(moves))
	}
	s.unchanged("drain")

	st, body = call(t, "POST", s.base+"/v1/rebalance", tokOperator, map[string]any{"dry_run": false}, nil)
	if st != 202 {
		t.Fatalf("rebalance: %d %v", st, body)
	}
	plan := body["plan"].(map[string]any)
	skipped, _ := plan["skipped"].(map[string]any)
	if want := "residency: tenant acme may live only in [eu]; target pool-2 is in us"; skipped["acme"] != want || skipped["acme2"] == nil || skipped["eve"] == nil {
		t.Fatalf("rebalance skipped %v, want acme: %q", skipped, want)
	}
	for _, m := range plan["moves"].([]any) {
		if mv := m.(map[string]any); mv["tenant"] != "bolt" {
			t.Fatalf("rebalance moves a resident tenant: %v", mv)
		}
	}
	t.Logf("rebalance: %v; skipped %v", plan["note"], skipped)
	waitFor(t, 2*time.Minute, "the rebalance's moves done", func() bool {
		moves, _ := s.migrator(nil).List(s.ctx)
		for _, m := range moves {
			if m.Status == migrator.StatusPaused {
				t.Fatalf("move %s paused: %s", m.ID, m.Error)
			}
			if m.Phase != migrator.PhaseDone && m.Phase != migrator.PhaseRetained {
				return false
			}
		}
		return true
	})
	s.unchanged("rebalance apply")
}

// manualMoveRefused runs the real CLI: switchyard move acme --to pool-2.
func (s *residencyStack) manualMoveRefused() {
	t := s.t
	for _, to := range []string{"pool-2", "pool-3"} {
		out, err := exec.Command(switchyardBinary(t), "move", "acme", "--to", to, "--consul", s.consul.HTTPAddr()).CombinedOutput()
		want := "residency: tenant acme may live only in [eu]; target " + to
		if err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("switchyard move acme --to %s: %v\n%s\nwant a refusal saying %q", to, err, out, want)
		}
		t.Logf("switchyard move acme --to %s: %s", to, strings.TrimSpace(string(out)))
		s.unchanged("manual move to " + to)
	}
}

func (s *residencyStack) residencyUpdate() {
	t := s.t
	st, body := call(t, "PUT", s.base+"/v1/tenants/acme/residency", tokOperator, map[string]any{"residency": []string{"us"}}, nil)
	refused(t, "residency update to [us]", st, body, "tenant acme may live only in [us]; target pool-1 is in eu")
	s.unchanged("residency update")
	if st, body := call(t, "PUT", s.base+"/v1/tenants/acme/residency", tokOperator, map[string]any{"residency": []string{"EU"}}, nil); st != 400 || body["error"] != "invalid" {
		t.Fatalf("residency [EU]: %d %v", st, body)
	}
	st, body = call(t, "PUT", s.base+"/v1/tenants/acme/residency", tokOperator, map[string]any{"residency": []string{"eu", "eu2"}, "reason": "second eu region"}, nil)
	if st != 200 || !reflect.DeepEqual(body["residency"], []any{"eu", "eu2"}) {
		t.Fatalf("residency [eu, eu2]: %d %v", st, body)
	}
	if got, _ := s.store.GetTenant(s.ctx, "acme"); !reflect.DeepEqual(got.Residency, []string{"eu", "eu2"}) || got.Target != "pool-1" {
		t.Fatalf("after the update: %+v", got)
	}
	s.before = s.acme()
}

// auditNamesEveryRefusal reads the audit log: one residency.refused entry
// per refused path, with who and why.
func (s *residencyStack) auditNamesEveryRefusal() {
	t := s.t
	want := map[string]string{ // what → actor prefix
		"create on plan pro":       "billing:",
		"plan free → pro":          "billing:",
		"plan free → enterprise":   "billing-webhook",
		"drain of pool-1":          "operator:",
		"rebalance: kept in place": "operator:",
		"move --to pool-2":         "cli",
		"move --to pool-3":         "cli",
		"set residency [us]":       "operator:",
	}
	var entries []any
	for _, tenant := range []string{"acme", "euro"} {
		_, audit := call(t, "GET", s.base+"/v1/audit?tenant="+tenant, tokViewer, nil, nil)
		entries = append(entries, audit["entries"].([]any)...)
	}
	for what, who := range want {
		found := false
		for _, e := range entries {
			en := e.(map[string]any)
			detail, _ := en["detail"].(string)
			actor, _ := en["actor"].(string)
			if en["action"] == controller.ActionResidencyRefused && strings.HasPrefix(detail, what) && strings.HasPrefix(actor, who) &&
				strings.Contains(detail, "residency: tenant ") && strings.Contains(detail, "; target ") {
				found = true
				t.Logf("audit: %s %s %s", actor, en["action"], detail)
				break
			}
		}
		if !found {
			t.Errorf("no audit entry residency.refused by %s for %q among %v", who, what, entries)
		}
	}
}

// stopController stops the controller and waits until it has gone.
func (s *residencyStack) stopController() {
	s.stop()
	waitFor(s.t, 30*time.Second, "controller stopped", func() bool {
		resp, err := shortClient.Get(s.base + "/livez")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	time.Sleep(time.Second) // its leader's runners stop after the listener
}

// leaderRechecks: a move created while allowed (acme → pool-3, now
// labelled eu), then acme's residency changed by a write that bypasses the
// API's check; the leader's run of the move re-checks in its preflight,
// pauses it, audits the refusal, and nothing changes. The move is then
// aborted and the residency put back.
func (s *residencyStack) leaderRechecks() {
	t := s.t
	s.stopController()
	if _, err := s.store.UpdateTarget(s.ctx, "pool-3", func(tg *catalog.Target) error {
		tg.Labels = map[string]string{catalog.RegionLabel: "eu"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m, _, err := s.migrator(nil).Create(s.ctx, migrator.Request{Tenant: "acme", To: "pool-3", Reason: "residency test"})
	if err != nil {
		t.Fatal(err)
	}
	setResidency := func(r ...string) {
		if _, err := s.store.UpdateTenant(s.ctx, "acme", func(tn *catalog.Tenant) error { tn.Residency = r; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	setResidency("us")
	_, s.base, s.stop = s.startController(nil)
	var paused *migrator.Move
	waitFor(t, 30*time.Second, "the leader pauses the move", func() bool {
		paused, _ = s.migrator(nil).Get(s.ctx, m.ID)
		return paused != nil && paused.Status == migrator.StatusPaused
	})
	if want := "residency: tenant acme may live only in [us]; target pool-3 is in eu"; paused.Phase != migrator.PhasePreflight || !strings.Contains(paused.Error, want) {
		t.Fatalf("paused move: phase %s, error %q; want preflight saying %q", paused.Phase, paused.Error, want)
	}
	waitFor(t, 10*time.Second, "the leader's refusal audited", func() bool {
		_, audit := call(t, "GET", s.base+"/v1/audit?tenant=acme", tokViewer, nil, nil)
		for _, e := range audit["entries"].([]any) {
			en := e.(map[string]any)
			if en["action"] == controller.ActionResidencyRefused && en["move"] == m.ID && strings.HasPrefix(en["actor"].(string), "controller:") {
				return true
			}
		}
		return false
	})
	if st, body := call(t, "POST", s.base+"/v1/moves/"+m.ID+"/abort", tokOperator, nil, nil); st != 202 {
		t.Fatalf("abort: %d %v", st, body)
	}
	waitFor(t, 30*time.Second, "move aborted", func() bool {
		got, _ := s.migrator(nil).Get(s.ctx, m.ID)
		return got != nil && got.Phase == migrator.PhaseAborted
	})
	setResidency("eu", "eu2")
	s.before.moves++ // the aborted move's record
	s.unchanged("a move whose residency changed under it")
	s.stopController() // the CLI runs the next move itself; a leader would compete for its lock
}

// allowedMove moves acme to pool-3 (the operator's new pool, labelled eu by
// leaderRechecks) with the CLI while writers run: an ordinary online move.
func (s *residencyStack) allowedMove() {
	t := s.t
	storm := s.startStorm("acme", 2, 3*time.Millisecond)
	cmd := exec.Command(switchyardBinary(t), "move", "acme", "--to", "pool-3", "--consul", s.consul.HTTPAddr(), "--chunk", "50", "--retention", "10ms")
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	time.Sleep(200 * time.Millisecond)
	storm.halt()
	if err != nil {
		t.Fatalf("switchyard move acme --to pool-3: %v\n%s", err, out)
	}
	if got, _ := s.store.GetTenant(s.ctx, "acme"); got.Target != "pool-3" || !reflect.DeepEqual(got.Residency, []string{"eu", "eu2"}) {
		t.Fatalf("after the move: %+v", got)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d failed requests during the move: %v", f, storm.failLog)
	}
	storm.checkModel(t, s.pgPool.DSN("pool3"))
	t.Logf("switchyard move acme --to pool-3 (eu): done, %d requests, 0 failed", storm.requests.Load())
}
