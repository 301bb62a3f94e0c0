package integration

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// The switch checks the schema before its freeze and, inside the fence,
// only compares one cheap stamp per side: a DDL that lands after the check
// (here: right after the fence) is still caught, on either side. The move
// pauses with ErrDDL, and the armed undos leave the tenant active on the
// source, unfenced.
func TestCutoverCatchesDDLAfterTheCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target bool // the DDL runs on the target's database
	}{
		{name: "source"},
		{name: "target", target: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMoveStack(t)
			tenant := "ddl-" + tc.name
			s.seedTenant(tenant, "free", catalog.TierShared, "pool-1", 50)
			ctx := testContext(t)
			src := sqlxMust(t, s.pgPool.DSN("pool"))
			var ddlErr error
			mg := s.migrator(&migrator.Hooks{AfterFence: func(*migrator.Move) error {
				db := src
				if tc.target {
					db = sqlxMust(t, dsnOf(t, s, "db-1", tenant))
				}
				_, ddlErr = db.Exec(`ALTER TABLE orders ADD COLUMN late_note text`)
				return nil
			}})
			// A budget this test's load cannot spend: it is about where the
			// DDL is caught, not about how long the pause may take.
			m, _, err := mg.Create(ctx, migrator.Request{Tenant: tenant, To: "db-1", Options: migrator.Options{Retention: time.Hour, SwitchBudget: 20 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			err = mg.Run(ctx, m.ID)
			if got, gerr := mg.Get(ctx, m.ID); gerr == nil {
				t.Logf("move %s %s attempts %d: %s; last switch %+v", got.Phase, got.Status, got.Attempts, got.Error, got.SwitchSteps)
			}
			if ddlErr != nil {
				t.Fatalf("the DDL itself: %v", ddlErr)
			}
			if !errors.Is(err, migrator.ErrDDL) {
				t.Fatalf("move with a DDL after the check: %v", err)
			}
			m, _ = mg.Get(ctx, m.ID)
			if m.Status != migrator.StatusPaused || !m.Switched.IsZero() || m.FreezeEpoch != 0 {
				t.Fatalf("move after the DDL: %s %s switched %v freeze epoch %d", m.Phase, m.Status, m.Switched, m.FreezeEpoch)
			}
			if tn, _ := s.store.GetTenant(ctx, tenant); tn.Target != "pool-1" || tn.State != catalog.StateActive {
				t.Fatalf("tenant moved or frozen: %+v", tn)
			}
			if _, err := src.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ($1, 'after-rollback', 1, 1)`, tenant); err != nil {
				t.Fatalf("the source is still fenced after the rollback: %v", err)
			}
			steps := stepNames(m.SwitchSteps)
			for _, want := range []string{"check-schema", "settle", "freeze", "fence", "ddl", "undo-fence", "undo-freeze"} {
				if !slices.Contains(steps, want) {
					t.Errorf("timeline %v lacks step %s", steps, want)
				}
			}
			if slices.Contains(steps, "flip") {
				t.Errorf("timeline %v: the switch went on to the flip", steps)
			}
		})
	}
}

// The target's sequences are set ahead of the source's before the freeze,
// with headroom from the measured insert rate; inside the fence they are
// only verified. When the source's sequence overtakes the headroom (here:
// a million values taken right after the fence), the check sees it and
// advances the target's past it: an insert on the target after the flip
// never reuses an id of the source.
func TestCutoverSequenceOvertakesHeadroom(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("counter", "free", catalog.TierShared, "pool-1", 50)
	ctx := testContext(t)
	src := sqlxMust(t, s.pgPool.DSN("pool"))
	var jumped int64
	mg := s.migrator(&migrator.Hooks{AfterFence: func(*migrator.Move) error {
		return src.Get(&jumped, `SELECT setval('orders_id_seq', pg_sequence_last_value('orders_id_seq') + 1000000)`)
	}})
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "counter", To: "db-1", Options: migrator.Options{Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseRetained {
		t.Fatalf("move: %s %s", m.Phase, m.Error)
	}
	if jumped < 1000000 {
		t.Fatalf("the hook did not move the source's sequence: %d", jumped)
	}
	dst := sqlxMust(t, dsnOf(t, s, "db-1", "counter"))
	var last int64
	if err := dst.Get(&last, `SELECT pg_sequence_last_value('orders_id_seq')`); err != nil {
		t.Fatal(err)
	}
	if last < jumped {
		t.Fatalf("target sequence at %d, behind the source's %d", last, jumped)
	}
	o, status, by := s.do("POST", s.routers[0].url+"/t/counter/orders", map[string]any{"item": "after", "quantity": 1, "price_cents": 1})
	if status != 201 || o.ID <= jumped {
		t.Fatalf("insert after the move: %d by %s, id %d (source sequence %d)", status, by, o.ID, jumped)
	}
	if _, ok := m.PauseSteps["sequences"]; !ok {
		t.Errorf("pause steps %v lack the sequence check", m.PauseSteps)
	}
}

func stepNames(steps []migrator.StepTime) []string {
	out := make([]string, len(steps))
	for i, st := range steps {
		out[i] = st.Step
	}
	return out
}
