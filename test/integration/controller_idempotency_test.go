package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
)

// answer is one request's outcome, gathered from a goroutine.
type answer struct {
	status int
	body   map[string]any
	hdr    http.Header
	err    error
}

// concurrently runs do(0..n-1) in n goroutines released at once.
func concurrently(n int, do func(i int) answer) []answer {
	out := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = do(i)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// auditCount counts the audit entries of a tenant with an action.
func auditCount(t *testing.T, base, tenant, action string) int {
	t.Helper()
	status, out := call(t, "GET", base+"/v1/audit?tenant="+tenant, tokViewer, nil, nil)
	if status != 200 {
		t.Fatalf("audit: %d %v", status, out)
	}
	n := 0
	for _, e := range out["entries"].([]any) {
		if e.(map[string]any)["action"] == action {
			n++
		}
	}
	return n
}

// idemRecords lists the idempotency records in Consul.
func idemRecords(t *testing.T, c *api.Client) api.KVPairs {
	t.Helper()
	pairs, _, err := c.KV().List(catalog.NewStore(c, "").IdempotencyPrefix(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return pairs
}

// inProgress reports whether an answer is the 409 of a duplicate that
// waited for the first request and gave up.
func inProgress(a answer) bool {
	return a.status == http.StatusConflict && a.body["error"] == "idempotency_in_progress" && a.body["message"] != nil
}

// The Idempotency-Key is claimed in Consul before the work, so concurrent
// requests with one key, spread over two replicas, run once: duplicates get
// the first answer replayed (or 409 idempotency_in_progress), another
// request with the key is refused (422) and never runs, a billing event
// redelivered ten times at once changes the plan once; a 4xx is stored and
// replayed, a 5xx releases the key.
func TestIdempotencyUnderConcurrency(t *testing.T) {
	s := newStack(t)
	ms := &moveStack{stack: s}
	_, a, _ := ms.startController(func(c *controller.Config) { c.ID = "replica-a" })
	_, b, _ := ms.startController(func(c *controller.Config) { c.ID = "replica-b" })
	replicas := []string{a, b}
	ctx := testContext(t)

	t.Run("same key, same body", func(t *testing.T) {
		hdr := map[string]string{"Idempotency-Key": "conc-same"}
		answers := concurrently(10, func(i int) answer {
			st, out, h, err := callE("POST", replicas[i%2]+"/v1/tenants", tokBilling, map[string]any{"id": "conc-same", "plan": "free"}, hdr)
			return answer{st, out, h, err}
		})
		var first string
		created, replayed := 0, 0
		for i, ans := range answers {
			switch {
			case ans.err != nil:
				t.Fatal(ans.err)
			case ans.status == http.StatusCreated:
				created++
				if ans.hdr.Get(controller.ReplayHeader) == "true" {
					replayed++
				}
				if first == "" {
					first = fmt.Sprint(ans.body)
				} else if got := fmt.Sprint(ans.body); got != first {
					t.Fatalf("answer %d differs from the first 201: %s vs %s", i, got, first)
				}
			case !inProgress(ans):
				t.Fatalf("answer %d: %d %v, want the 201 or 409 idempotency_in_progress", i, ans.status, ans.body)
			}
		}
		if created == 0 || replayed != created-1 {
			t.Fatalf("%d answers 201 of which %d replayed: one should have run, the others replayed it", created, replayed)
		}
		if n := auditCount(t, a, "conc-same", "tenant.create"); n != 1 {
			t.Fatalf("%d tenant creations, want 1", n)
		}
		t.Logf("10 concurrent creates with one key: %d × 201 (%d replayed), %d × 409 in progress", created, replayed, 10-created)
	})

	t.Run("same key, different bodies", func(t *testing.T) {
		hdr := map[string]string{"Idempotency-Key": "conc-diff"}
		answers := concurrently(10, func(i int) answer {
			st, out, h, err := callE("POST", replicas[i%2]+"/v1/tenants", tokBilling, map[string]any{"id": fmt.Sprintf("conc-diff-%d", i), "plan": "free"}, hdr)
			return answer{st, out, h, err}
		})
		ran := -1
		for i, ans := range answers {
			switch {
			case ans.err != nil:
				t.Fatal(ans.err)
			case ans.status == http.StatusCreated && ran == -1:
				ran = i
			case ans.status == http.StatusUnprocessableEntity && ans.body["error"] == "idempotency_key_reused":
			case inProgress(ans):
			default:
				t.Fatalf("answer %d: %d %v, want one 201 and otherwise 422 idempotency_key_reused or 409", i, ans.status, ans.body)
			}
		}
		if ran == -1 {
			t.Fatal("no request ran")
		}
		for i := range answers {
			_, err := s.store.GetTenant(ctx, fmt.Sprintf("conc-diff-%d", i))
			if exists := err == nil; exists != (i == ran) {
				t.Fatalf("tenant conc-diff-%d exists=%v; only conc-diff-%d should (%v)", i, exists, ran, err)
			}
		}
	})

	t.Run("webhook redelivered concurrently", func(t *testing.T) {
		s.tenant("hooked", "free", catalog.TierShared, "pool-1")
		ev := controller.BillingEvent{ID: "evt_concurrent", Type: "plan.changed", Tenant: "hooked", Plan: "starter"}
		body, hdr := signedEvent(ev, time.Now(), hookSecret)
		answers := concurrently(10, func(i int) answer {
			st, out, h, err := callE("POST", replicas[i%2]+"/v1/webhooks/billing", "", body, hdr)
			return answer{st, out, h, err}
		})
		var first string
		ok := 0
		for i, ans := range answers {
			switch {
			case ans.err != nil:
				t.Fatal(ans.err)
			case ans.status == http.StatusOK:
				ok++
				if first == "" {
					first = fmt.Sprint(ans.body)
				} else if got := fmt.Sprint(ans.body); got != first {
					t.Fatalf("delivery %d answered differently: %s vs %s", i, got, first)
				}
			case !inProgress(ans):
				t.Fatalf("delivery %d: %d %v, want the 200 or 409 idempotency_in_progress", i, ans.status, ans.body)
			}
		}
		if ok == 0 {
			t.Fatal("no delivery succeeded")
		}
		if n := auditCount(t, a, "hooked", "tenant.plan"); n != 1 {
			t.Fatalf("%d plan changes, want 1", n)
		}
		if tn, err := s.store.GetTenant(ctx, "hooked"); err != nil || tn.Plan != "starter" {
			t.Fatalf("tenant after the event: %+v %v", tn, err)
		}
		// The same event id with another body is refused, not run.
		other := ev
		other.Plan = "free"
		if st, out := webhook(t, a, other, time.Now(), hookSecret); st != http.StatusUnprocessableEntity || out["error"] != "idempotency_key_reused" {
			t.Fatalf("event id reused for another event: %d %v", st, out)
		}
		if tn, _ := s.store.GetTenant(ctx, "hooked"); tn.Plan != "starter" {
			t.Fatalf("the refused event changed the plan to %s", tn.Plan)
		}
	})

	t.Run("4xx stored and replayed, 5xx released", func(t *testing.T) {
		before := len(idemRecords(t, s.consul.Client()))
		hdr := map[string]string{"Idempotency-Key": "bad-request"}
		st1, out1, _, err := callE("POST", a+"/v1/tenants", tokBilling, map[string]any{"id": "Not Valid", "plan": "free"}, hdr)
		if err != nil || st1 != http.StatusBadRequest {
			t.Fatalf("invalid create: %d %v %v", st1, out1, err)
		}
		st2, out2, h2, err := callE("POST", b+"/v1/tenants", tokBilling, map[string]any{"id": "Not Valid", "plan": "free"}, hdr)
		if err != nil || st2 != st1 || fmt.Sprint(out2) != fmt.Sprint(out1) || h2.Get(controller.ReplayHeader) != "true" {
			t.Fatalf("repeat of a 400: %d %v (replay %q) %v", st2, out2, h2.Get(controller.ReplayHeader), err)
		}
		if n := len(idemRecords(t, s.consul.Client())); n != before+1 {
			t.Fatalf("%d records after a 400, want %d (stored)", n, before+1)
		}
		// A dedicated-db tenant needs its database made on db-1, whose
		// server does not exist here: the control plane fails (503).
		hdr = map[string]string{"Idempotency-Key": "server-error"}
		for i := range 2 {
			st, out, h, err := callE("POST", replicas[i]+"/v1/tenants", tokBilling, map[string]any{"id": "needs-db", "plan": "pro"}, hdr)
			if err != nil || st < 500 || h.Get(controller.ReplayHeader) != "" {
				t.Fatalf("attempt %d: %d %v (replay %q) %v, want a 5xx run afresh", i, st, out, h.Get(controller.ReplayHeader), err)
			}
			if n := len(idemRecords(t, s.consul.Client())); n != before+1 {
				t.Fatalf("%d records after a 5xx, want %d (released)", n, before+1)
			}
		}
	})
}

// Records outlive neither their TTL nor their replica: a key is new again
// once expired (the record overwritten where it lies), a claim whose
// replica stopped renewing it is taken over, a duplicate that outwaits a
// live claim gets 409, and the leader sweeps expired records away.
func TestIdempotencyRecordLifecycle(t *testing.T) {
	s := newStack(t)
	ms := &moveStack{stack: s}
	kv := s.consul.Client().KV()
	const ttl = 1500 * time.Millisecond
	// HousekeepingEvery of an hour: this replica sweeps once, when it
	// becomes the leader, and then not during the test.
	_, a, stopA := ms.startController(func(c *controller.Config) {
		c.ID, c.IdempotencyTTL, c.IdempotencyWait, c.HousekeepingEvery = "replica-a", ttl, time.Second, time.Hour
	})
	waitFor(t, 15*time.Second, "replica-a leads (and has swept once)", func() bool {
		_, body := call(t, "GET", a+"/readyz", "", nil, nil)
		return body["leader"] == true
	})
	create := func(id, key string) (int, map[string]any) {
		return call(t, "POST", a+"/v1/tenants", tokBilling, map[string]any{"id": id, "plan": "free"}, map[string]string{"Idempotency-Key": key})
	}
	only := func() *api.KVPair {
		t.Helper()
		pairs := idemRecords(t, s.consul.Client())
		if len(pairs) != 1 {
			t.Fatalf("%d idempotency records, want 1", len(pairs))
		}
		return pairs[0]
	}
	if st, out := create("life-1", "life"); st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, out)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	// Expired (the leader's sweep, once at leadership, may or may not have
	// run yet on a busy machine): a reuse runs anew either way.
	if st, out := create("life-2", "life"); st != http.StatusCreated {
		t.Fatalf("the key reused after its TTL: %d %v, want a new run", st, out)
	}

	// A live claim held by "another replica": a duplicate waits, then 409.
	rec := map[string]any{}
	p := only()
	if err := json.Unmarshal(p.Value, &rec); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rec["state"], rec["created_at"], rec["lease_until"] = "running", now, now.Add(time.Hour)
	delete(rec, "status")
	delete(rec, "body")
	data, _ := json.Marshal(rec)
	if _, err := kv.Put(&api.KVPair{Key: p.Key, Value: data}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if st, out := create("life-2", "life"); st != http.StatusConflict || out["error"] != "idempotency_in_progress" || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("duplicate of a running claim: %d %v after %s, want 409 idempotency_in_progress after the 1s wait", st, out, time.Since(start))
	}
	// Its replica died: the lease runs out, the next duplicate takes over
	// and runs (the tenant exists by now: 409 exists, not a replay).
	rec["lease_until"] = now.Add(-time.Second)
	data, _ = json.Marshal(rec)
	if _, err := kv.Put(&api.KVPair{Key: p.Key, Value: data}, nil); err != nil {
		t.Fatal(err)
	}
	if st, out := create("life-2", "life"); st != http.StatusConflict || out["error"] != "exists" {
		t.Fatalf("duplicate of an abandoned claim: %d %v, want the handler run again (409 exists)", st, out)
	}

	if st, out := create("life-3", "life-sweep"); st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, out)
	}
	stopA()
	ms.startController(func(c *controller.Config) {
		c.ID, c.IdempotencyTTL, c.HousekeepingEvery = "replica-b", ttl, 100*time.Millisecond
	})
	waitFor(t, 20*time.Second, "the leader sweeps expired records", func() bool {
		return len(idemRecords(t, s.consul.Client())) == 0
	})
}
