package orders_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/examples/orders"
	"github.com/switchyard/switchyard/test/harness"
)

// Targets of the test catalog.
const (
	serviceName   = "app-shared"
	targetShared  = "shared-1"       // shared pool, served by app-shared
	targetDedDB   = "ddb-1"          // dedicated databases, served by app-shared
	targetCluster = "cluster-x"      // served by another service
	targetDown    = "down-1"         // shared pool whose server is not running
	sharedDB      = "shared_pool"    // database of targetShared
	tenantDedDB   = "acme"           // lives on targetDedDB in tenant_acme
	tenantRace    = "beta"           // first use of its database under concurrency
	tenantFenced  = "frozen-co"      // shared-pool tenant the fence trigger blocks
	tenantGhost   = "ghost"          // dedicated-db tenant whose database does not exist
	unknownTarget = "no-such-target" // not in the catalog
)

// env is the real stack the tests drive: Consul, PostgreSQL, a catalog and
// one app instance serving app-shared.
type env struct {
	consul *harness.Consul
	pg     *harness.Postgres
	store  *catalog.Store
	app    *orders.Server
	base   string
	http   *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{consul: harness.ConsulT(t), pg: harness.PostgresT(t), http: &http.Client{Timeout: 20 * time.Second}}
	t.Cleanup(e.http.CloseIdleConnections)
	for _, db := range []string{sharedDB, catalog.DatabaseName(tenantDedDB), catalog.DatabaseName(tenantRace)} {
		if err := e.pg.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	e.store = catalog.NewStore(e.consul.Client(), "")
	if err := e.store.Init(ctx, 64); err != nil {
		t.Fatalf("catalog init: %v", err)
	}
	downPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range []catalog.Target{
		{ID: targetShared, Tier: catalog.TierShared, Service: serviceName, DSN: e.pg.DSN(sharedDB)},
		{ID: targetDedDB, Tier: catalog.TierDedicatedDB, Service: serviceName, DSN: e.pg.DSN("postgres")},
		{ID: targetCluster, Tier: catalog.TierDedicatedCluster, Service: "app-cluster-x", DSN: e.pg.DSN("cluster_x")},
		{ID: targetDown, Tier: catalog.TierShared, Service: serviceName,
			DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/down?sslmode=disable&connect_timeout=2", downPort)},
	} {
		if err := e.store.CreateTarget(ctx, tg); err != nil {
			t.Fatalf("create target %s: %v", tg.ID, err)
		}
	}
	e.app = startApp(t, e.consul.Client(), serviceName)
	e.base = "http://" + e.app.Addr()
	e.waitReady(t)
	return e
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startApp starts an app instance registered in Consul and stops it when the
// test ends.
func startApp(t *testing.T, client *api.Client, service string) *orders.Server {
	t.Helper()
	cfg := orders.DefaultConfig(service, client)
	cfg.Logger = testLogger(t)
	app, err := orders.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := app.Stop(ctx); err != nil {
			t.Errorf("stop app: %v", err)
		}
	})
	return app
}

func (e *env) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := e.http.Get(e.base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("app not ready after 15s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorBody(t *testing.T) orders.ErrorResponse {
	t.Helper()
	var eb orders.ErrorResponse
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	if eb.Error == "" || eb.Message == "" {
		t.Fatalf("error body %q lacks error or message", r.body)
	}
	return eb
}

func (r response) order(t *testing.T) orders.Order {
	t.Helper()
	var o orders.Order
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("body %q is not an order: %v", r.body, err)
	}
	return o
}

// do sends a request as the router would: with X-Tenant-Id and
// X-Tenant-Target (omitted when empty). body may be a string (sent as is),
// nil, or a value to marshal.
func (e *env) do(t *testing.T, method, path, tenant, target string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tenant != "" {
		req.Header.Set(orders.HeaderTenantID, tenant)
		req.Header.Set(orders.HeaderTenantTier, "shared")
		req.Header.Set(orders.HeaderTenantEpoch, "1")
	}
	if target != "" {
		req.Header.Set(orders.HeaderTenantTarget, target)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// expect fails unless r has the status, and for errors the code.
func expect(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if code != "" {
		if got := r.errorBody(t).Error; got != code {
			t.Fatalf("error %q, want %q; body %s", got, code, r.body)
		}
	}
}

func (e *env) openDB(t *testing.T, dbname string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", e.pg.DSN(dbname))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type event struct {
	Seq  int    `db:"seq"`
	Kind string `db:"kind"`
}

func events(t *testing.T, db *sqlx.DB, tenant string, orderID int64) []event {
	t.Helper()
	var evs []event
	if err := db.SelectContext(t.Context(), &evs,
		`SELECT seq, kind FROM order_events WHERE tenant_id = $1 AND order_id = $2 ORDER BY seq`, tenant, orderID); err != nil {
		t.Fatal(err)
	}
	return evs
}

func orderPath(id int64) string { return "/orders/" + strconv.FormatInt(id, 10) }

// TestOrdersAPI drives one app instance over HTTP against real Consul and
// PostgreSQL.
func TestOrdersAPI(t *testing.T) {
	e := newEnv(t)

	t.Run("crud round trip", func(t *testing.T) {
		for _, tc := range []struct {
			name, tenant, target, db string
		}{
			{"shared pool", "t-alpha", targetShared, sharedDB},
			{"dedicated db", tenantDedDB, targetDedDB, catalog.DatabaseName(tenantDedDB)},
		} {
			t.Run(tc.name, func(t *testing.T) { testCRUD(t, e, tc.tenant, tc.target, tc.db) })
		}
	})

	t.Run("tenant isolation in the shared pool", func(t *testing.T) {
		const owner, other = "t-owner", "t-other"
		r := e.do(t, "POST", "/orders", owner, targetShared, orders.OrderInput{Item: "secret", Quantity: 1, PriceCents: 100})
		expect(t, r, http.StatusCreated, "")
		o := r.order(t)

		for _, tc := range []struct {
			method string
			body   any
		}{
			{"GET", nil},
			{"PUT", orders.OrderInput{Item: "stolen", Quantity: 9, PriceCents: 1}},
			{"DELETE", nil},
		} {
			t.Run(tc.method, func(t *testing.T) {
				r := e.do(t, tc.method, orderPath(o.ID), other, targetShared, tc.body)
				expect(t, r, http.StatusNotFound, orders.CodeNotFound)
			})
		}
		r = e.do(t, "GET", "/orders", other, targetShared, nil)
		expect(t, r, http.StatusOK, "")
		var page orders.OrderList
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		for _, x := range page.Orders {
			if x.ID == o.ID || x.TenantID != other {
				t.Fatalf("tenant %s listed %+v", other, x)
			}
		}
		// The owner's order is untouched.
		r = e.do(t, "GET", orderPath(o.ID), owner, targetShared, nil)
		expect(t, r, http.StatusOK, "")
		if got := r.order(t); got.Item != "secret" || got.Version != 1 || got.TenantID != owner {
			t.Fatalf("owner's order changed: %+v", got)
		}
	})

	t.Run("pagination", func(t *testing.T) { testPagination(t, e) })

	t.Run("validation", func(t *testing.T) { testValidation(t, e) })

	t.Run("misdirected", func(t *testing.T) {
		for _, tc := range []struct{ name, target string }{
			{"target of another service", targetCluster},
			{"target not in catalog", unknownTarget},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, method := range []string{"GET", "POST"} {
					r := e.do(t, method, "/orders", "t-alpha", tc.target, orders.OrderInput{Item: "x", Quantity: 1})
					expect(t, r, http.StatusMisdirectedRequest, orders.CodeMisdirected)
					if got := r.header.Get(orders.HeaderServedBy); got != serviceName {
						t.Fatalf("X-Served-By on 421 = %q, want the service %q", got, serviceName)
					}
				}
			})
		}
	})

	t.Run("fenced tenant", func(t *testing.T) { testFenced(t, e) })

	t.Run("database unavailable", func(t *testing.T) {
		for _, tc := range []struct{ name, tenant, target string }{
			{"server down", "t-alpha", targetDown},
			{"tenant database missing", tenantGhost, targetDedDB},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(t, "GET", "/orders", tc.tenant, tc.target, nil)
				expect(t, r, http.StatusServiceUnavailable, orders.CodeDBUnavailable)
				if r.header.Get("Retry-After") == "" {
					t.Fatal("no Retry-After on 503")
				}
				if s := string(r.body); strings.Contains(s, "postgres://") || strings.Contains(s, "pq:") || strings.Contains(s, "dial") {
					t.Fatalf("error leaks internals: %s", s)
				}
			})
		}
	})

	t.Run("concurrent first use of a database", func(t *testing.T) {
		const n = 24
		var wg sync.WaitGroup
		results := make([]response, n)
		for i := range n {
			wg.Go(func() {
				results[i] = e.do(t, "POST", "/orders", tenantRace, targetDedDB,
					orders.OrderInput{Item: fmt.Sprintf("item %d", i), Quantity: i + 1})
			})
		}
		wg.Wait()
		ids := map[int64]bool{}
		for _, r := range results {
			expect(t, r, http.StatusCreated, "")
			ids[r.order(t).ID] = true
		}
		if len(ids) != n {
			t.Fatalf("%d distinct ids, want %d", len(ids), n)
		}
		r := e.do(t, "GET", "/orders?limit=1000", tenantRace, targetDedDB, nil)
		expect(t, r, http.StatusOK, "")
		var page orders.OrderList
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Orders) != n || page.NextAfterID != nil {
			t.Fatalf("listed %d orders (next %v), want %d", len(page.Orders), page.NextAfterID, n)
		}
	})

	t.Run("ensure schema concurrently", func(t *testing.T) {
		if err := e.pg.CreateDatabase(t.Context(), "schema_race"); err != nil {
			t.Fatal(err)
		}
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range errs {
			db := e.openDB(t, "schema_race") // separate pools: separate sessions
			wg.Go(func() { errs[i] = orders.EnsureSchema(t.Context(), db) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		db := e.openDB(t, "schema_race")
		if err := orders.EnsureSchema(t.Context(), db); err != nil {
			t.Fatalf("second run: %v", err)
		}
		var n int
		if err := db.GetContext(t.Context(), &n, `SELECT count(*) FROM information_schema.tables WHERE table_name IN ('orders', 'order_events')`); err != nil || n != 2 {
			t.Fatalf("%d tables (%v), want 2", n, err)
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		for _, tc := range []struct {
			path, want string
		}{
			{"/livez", `"ok"`},
			{"/readyz", `"ready"`},
			{"/metrics", `switchyard_orders_http_requests_total{code="201",method="POST",route="/orders"}`},
		} {
			t.Run(tc.path, func(t *testing.T) {
				r := e.do(t, "GET", tc.path, "", "", nil)
				expect(t, r, http.StatusOK, "")
				if !strings.Contains(string(r.body), tc.want) {
					t.Fatalf("%s lacks %s:\n%.2000s", tc.path, tc.want, r.body)
				}
				if got := r.header.Get(orders.HeaderServedBy); got != serviceName {
					t.Fatalf("X-Served-By = %q, want %q", got, serviceName)
				}
				if got := r.header.Get(orders.HeaderServedInstance); got != e.app.ServiceID() {
					t.Fatalf("X-Served-Instance = %q, want %q", got, e.app.ServiceID())
				}
			})
		}
		r := e.do(t, "GET", "/metrics", "", "", nil)
		body := string(r.body)
		for _, want := range []string{"switchyard_orders_db_seconds_bucket", `op="create"`, "switchyard_orders_db_pools"} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		for _, tenant := range []string{"t-alpha", "t-owner", tenantDedDB, tenantRace} {
			if strings.Contains(body, `"`+tenant+`"`) {
				t.Errorf("/metrics has tenant %s as a label value", tenant)
			}
		}
	})

	t.Run("registered in consul and passing", func(t *testing.T) {
		entry := waitPassing(t, e.consul.Client(), serviceName, e.app.ServiceID())
		_, port, _ := strings.Cut(e.app.Addr(), ":")
		if entry.Service.Address != "127.0.0.1" || strconv.Itoa(entry.Service.Port) != port {
			t.Fatalf("registered at %s:%d, app listens on %s", entry.Service.Address, entry.Service.Port, e.app.Addr())
		}
		if want := serviceName + "-" + port; e.app.ServiceID() != want {
			t.Fatalf("service id %q, want default %q", e.app.ServiceID(), want)
		}
	})

	t.Run("not ready until the catalog loads", func(t *testing.T) {
		testNotReady(t, e)
	})

	t.Run("stop deregisters; lost registration is restored", func(t *testing.T) {
		testLifecycle(t, e)
	})
}

func testCRUD(t *testing.T, e *env, tenant, target, dbname string) {
	db := e.openDB(t, dbname)
	served := func(r response) {
		t.Helper()
		if got := r.header.Get(orders.HeaderServedBy); got != target {
			t.Fatalf("X-Served-By = %q, want %q", got, target)
		}
	}

	r := e.do(t, "POST", "/orders", tenant, target, `{"item":"widget","quantity":3,"price_cents":1250,"attrs":{"color":"red","tags":["a","b"]}}`)
	expect(t, r, http.StatusCreated, "")
	served(r)
	created := r.order(t)
	if created.ID <= 0 || created.TenantID != tenant || created.Item != "widget" || created.Quantity != 3 ||
		created.PriceCents != 1250 || created.Version != 1 || created.CreatedAt.IsZero() || !created.UpdatedAt.Equal(created.CreatedAt) {
		t.Fatalf("created %+v", created)
	}
	var attrs map[string]any
	if err := json.Unmarshal(created.Attrs, &attrs); err != nil || attrs["color"] != "red" {
		t.Fatalf("attrs %s (%v)", created.Attrs, err)
	}
	if loc := r.header.Get("Location"); loc != orderPath(created.ID) {
		t.Fatalf("Location %q", loc)
	}

	r = e.do(t, "GET", orderPath(created.ID), tenant, target, nil)
	expect(t, r, http.StatusOK, "")
	served(r)
	if got := r.order(t); got.ID != created.ID || got.Item != "widget" || !got.CreatedAt.Equal(created.CreatedAt) {
		t.Fatalf("get %+v, created %+v", got, created)
	}

	r = e.do(t, "PUT", orderPath(created.ID), tenant, target, orders.OrderInput{Item: "gadget", Quantity: 7, PriceCents: 0})
	expect(t, r, http.StatusOK, "")
	served(r)
	updated := r.order(t)
	if updated.ID != created.ID || updated.Item != "gadget" || updated.Quantity != 7 || updated.PriceCents != 0 ||
		updated.Version != 2 || string(updated.Attrs) != "{}" || !updated.CreatedAt.Equal(created.CreatedAt) ||
		updated.UpdatedAt.Before(created.UpdatedAt) {
		t.Fatalf("updated %+v", updated)
	}

	r = e.do(t, "GET", "/orders", tenant, target, nil)
	expect(t, r, http.StatusOK, "")
	served(r)
	var page orders.OrderList
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(page.Orders, func(o orders.Order) bool { return o.ID == created.ID && o.Version == 2 }) {
		t.Fatalf("list lacks order %d v2: %s", created.ID, r.body)
	}

	// The data lives in the target's database for the tenant, with one event
	// per version.
	if got, want := events(t, db, tenant, created.ID), []event{{1, "created"}, {2, "updated"}}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}

	r = e.do(t, "DELETE", orderPath(created.ID), tenant, target, nil)
	expect(t, r, http.StatusNoContent, "")
	served(r)
	if len(r.body) != 0 {
		t.Fatalf("204 with body %q", r.body)
	}
	for _, method := range []string{"GET", "PUT", "DELETE"} {
		var body any
		if method == "PUT" {
			body = orders.OrderInput{Item: "again", Quantity: 1}
		}
		r = e.do(t, method, orderPath(created.ID), tenant, target, body)
		expect(t, r, http.StatusNotFound, orders.CodeNotFound)
		served(r)
	}
	if got := events(t, db, tenant, created.ID); len(got) != 0 {
		t.Fatalf("events left after delete: %v", got)
	}
}

func testPagination(t *testing.T, e *env) {
	const tenant, n = "t-pager", 5
	var ids []int64
	for i := range n {
		r := e.do(t, "POST", "/orders", tenant, targetShared, orders.OrderInput{Item: fmt.Sprintf("p%d", i), Quantity: 1})
		expect(t, r, http.StatusCreated, "")
		ids = append(ids, r.order(t).ID)
	}
	var got []int64
	pages := 0
	after := int64(0)
	for {
		r := e.do(t, "GET", fmt.Sprintf("/orders?limit=2&after_id=%d", after), tenant, targetShared, nil)
		expect(t, r, http.StatusOK, "")
		var page orders.OrderList
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page.Orders {
			got = append(got, o.ID)
		}
		if page.NextAfterID == nil {
			if !strings.Contains(string(r.body), `"next_after_id":null`) {
				t.Fatalf("last page without next_after_id null: %s", r.body)
			}
			break
		}
		if len(page.Orders) != 2 || *page.NextAfterID != page.Orders[1].ID {
			t.Fatalf("page %s", r.body)
		}
		after = *page.NextAfterID
		if pages > n {
			t.Fatal("pagination does not end")
		}
	}
	if !slices.Equal(got, ids) || pages != 3 {
		t.Fatalf("paged %v in %d pages, want %v in 3", got, pages, ids)
	}

	// An empty tenant lists [] rather than null.
	r := e.do(t, "GET", "/orders", "t-nobody", targetShared, nil)
	expect(t, r, http.StatusOK, "")
	if string(r.body) != `{"orders":[],"next_after_id":null}` {
		t.Fatalf("empty list %s", r.body)
	}
}

func testValidation(t *testing.T, e *env) {
	long := strings.Repeat("é", 201)
	for _, tc := range []struct {
		name           string
		method, path   string
		tenant, target string
		body           string
		status         int
		code, field    string
	}{
		{"missing tenant", "GET", "/orders", "", targetShared, "", 400, orders.CodeMissingTenant, orders.HeaderTenantID},
		{"invalid tenant", "GET", "/orders", "Bad_Tenant", targetShared, "", 400, orders.CodeInvalidField, orders.HeaderTenantID},
		{"missing target", "GET", "/orders", "t-alpha", "", "", 400, orders.CodeMissingTarget, orders.HeaderTenantTarget},
		{"empty body", "POST", "/orders", "t-alpha", targetShared, "", 400, orders.CodeBadJSON, ""},
		{"malformed json", "POST", "/orders", "t-alpha", targetShared, `{"item":`, 400, orders.CodeBadJSON, ""},
		{"syntax error", "POST", "/orders", "t-alpha", targetShared, `{"item" "x"}`, 400, orders.CodeBadJSON, ""},
		{"not an object", "POST", "/orders", "t-alpha", targetShared, `[1,2]`, 400, orders.CodeBadJSON, ""},
		{"two objects", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1}{}`, 400, orders.CodeBadJSON, ""},
		{"item missing", "POST", "/orders", "t-alpha", targetShared, `{"quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"item null", "POST", "/orders", "t-alpha", targetShared, `{"item":null,"quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"item empty", "POST", "/orders", "t-alpha", targetShared, `{"item":"","quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"item too long", "POST", "/orders", "t-alpha", targetShared, `{"item":"` + long + `","quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"item not a string", "POST", "/orders", "t-alpha", targetShared, `{"item":5,"quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"item with NUL", "POST", "/orders", "t-alpha", targetShared, `{"item":"a\u0000b","quantity":1}`, 400, orders.CodeInvalidField, "item"},
		{"quantity missing", "POST", "/orders", "t-alpha", targetShared, `{"item":"a"}`, 400, orders.CodeInvalidField, "quantity"},
		{"quantity zero", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":0}`, 400, orders.CodeInvalidField, "quantity"},
		{"quantity too big", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1000001}`, 400, orders.CodeInvalidField, "quantity"},
		{"quantity fractional", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1.5}`, 400, orders.CodeInvalidField, "quantity"},
		{"quantity string", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":"2"}`, 400, orders.CodeInvalidField, "quantity"},
		{"price negative", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"price_cents":-1}`, 400, orders.CodeInvalidField, "price_cents"},
		{"price overflow", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"price_cents":1e30}`, 400, orders.CodeInvalidField, "price_cents"},
		{"attrs array", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"attrs":[1]}`, 400, orders.CodeInvalidField, "attrs"},
		{"attrs string", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"attrs":"x"}`, 400, orders.CodeInvalidField, "attrs"},
		{"attrs with NUL", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"attrs":{"k":"\u0000"}}`, 400, orders.CodeInvalidField, "attrs"},
		{"unknown field", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"tenant_id":"t-other"}`, 400, orders.CodeInvalidField, "tenant_id"},
		{"put validates too", "PUT", "/orders/1", "t-alpha", targetShared, `{"item":"a","quantity":-3}`, 400, orders.CodeInvalidField, "quantity"},
		{"bad id", "GET", "/orders/abc", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "id"},
		{"zero id", "DELETE", "/orders/0", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "id"},
		{"limit too big", "GET", "/orders?limit=1001", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "limit"},
		{"limit zero", "GET", "/orders?limit=0", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "limit"},
		{"limit not a number", "GET", "/orders?limit=ten", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "limit"},
		{"after_id negative", "GET", "/orders?after_id=-1", "t-alpha", targetShared, "", 400, orders.CodeInvalidField, "after_id"},
		{"body too large", "POST", "/orders", "t-alpha", targetShared, `{"item":"a","quantity":1,"attrs":{"k":"` + strings.Repeat("x", 1<<20) + `"}}`, 413, orders.CodeBodyTooLarge, ""},
		{"unknown route", "GET", "/nope", "", "", "", 404, orders.CodeNotFound, ""},
		{"trailing slash", "GET", "/orders/", "t-alpha", targetShared, "", 404, orders.CodeNotFound, ""},
		{"method not allowed", "PATCH", "/orders/1", "t-alpha", targetShared, "", 405, orders.CodeMethod, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := e.do(t, tc.method, tc.path, tc.tenant, tc.target, body)
			expect(t, r, tc.status, tc.code)
			eb := r.errorBody(t)
			if eb.Field != tc.field {
				t.Fatalf("field %q, want %q; body %s", eb.Field, tc.field, r.body)
			}
			if tc.field != "" && !strings.Contains(eb.Message, tc.field) {
				t.Fatalf("message %q does not name %q", eb.Message, tc.field)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
			if r.header.Get(orders.HeaderServedBy) == "" {
				t.Fatal("no X-Served-By")
			}
		})
	}
	// Nothing invalid was stored.
	r := e.do(t, "GET", "/orders", "t-alpha", targetShared, nil)
	expect(t, r, http.StatusOK, "")
	var page orders.OrderList
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	for _, o := range page.Orders {
		if o.Item == "a" {
			t.Fatalf("invalid order stored: %+v", o)
		}
	}
}

// fenceSQL installs a fencing trigger like the migrator's: writes of a tenant
// listed in fence fail with SQLSTATE P0001.
const fenceSQL = `
CREATE TABLE IF NOT EXISTS fence (tenant_id text PRIMARY KEY);
CREATE OR REPLACE FUNCTION fence_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tid text;
BEGIN
    IF TG_OP = 'DELETE' THEN tid := OLD.tenant_id; ELSE tid := NEW.tenant_id; END IF;
    IF EXISTS (SELECT 1 FROM fence WHERE tenant_id = tid) THEN
        RAISE EXCEPTION 'switchyard: tenant % is fenced (cutover in progress)', tid;
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS orders_fence ON orders;
CREATE TRIGGER orders_fence BEFORE INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION fence_check();
`

func testFenced(t *testing.T, e *env) {
	db := e.openDB(t, sharedDB)
	ctx := t.Context()
	r := e.do(t, "POST", "/orders", tenantFenced, targetShared, orders.OrderInput{Item: "before", Quantity: 1})
	expect(t, r, http.StatusCreated, "")
	o := r.order(t)
	if _, err := db.ExecContext(ctx, fenceSQL); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO fence VALUES ($1)`, tenantFenced); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/orders", orders.OrderInput{Item: "during", Quantity: 1}},
		{"PUT", orderPath(o.ID), orders.OrderInput{Item: "during", Quantity: 2}},
		{"DELETE", orderPath(o.ID), nil},
	} {
		t.Run(tc.method, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tenantFenced, targetShared, tc.body)
			expect(t, r, http.StatusServiceUnavailable, orders.CodeTenantFenced)
			if got := r.header.Get("Retry-After"); got != "1" {
				t.Fatalf("Retry-After %q, want 1", got)
			}
			if strings.Contains(string(r.body), "switchyard: tenant") {
				t.Fatalf("body leaks the database message: %s", r.body)
			}
		})
	}
	// Reads still work, and other tenants may write.
	r = e.do(t, "GET", orderPath(o.ID), tenantFenced, targetShared, nil)
	expect(t, r, http.StatusOK, "")
	if got := r.order(t); got.Item != "before" || got.Version != 1 {
		t.Fatalf("fenced order changed: %+v", got)
	}
	r = e.do(t, "POST", "/orders", "t-unfenced", targetShared, orders.OrderInput{Item: "ok", Quantity: 1})
	expect(t, r, http.StatusCreated, "")
	// Unfenced, writes go through again.
	if _, err := db.ExecContext(ctx, `DELETE FROM fence WHERE tenant_id = $1`, tenantFenced); err != nil {
		t.Fatal(err)
	}
	r = e.do(t, "PUT", orderPath(o.ID), tenantFenced, targetShared, orders.OrderInput{Item: "after", Quantity: 2})
	expect(t, r, http.StatusOK, "")
	if got := r.order(t); got.Version != 2 {
		t.Fatalf("after unfence: %+v", got)
	}
}

// waitPassing polls Consul health until service id of service is passing.
func waitPassing(t *testing.T, client *api.Client, service, id string) *api.ServiceEntry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _, err := client.Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if en.Service.ID == id && en.Checks.AggregatedStatus() == api.HealthPassing {
				return en
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s instance %s not passing after 20s (entries %d)", service, id, len(entries))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testLifecycle(t *testing.T, e *env) {
	client := e.consul.Client()
	cfg := orders.DefaultConfig("app-extra", client)
	cfg.ServiceID = "app-extra-1"
	cfg.Logger = testLogger(t)
	app, err := orders.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = app.Stop(context.Background())
		}
	})
	waitPassing(t, client, "app-extra", "app-extra-1")

	// An agent that forgets the instance (e.g. restarted without state) gets
	// it back.
	if err := client.Agent().ServiceDeregister("app-extra-1"); err != nil {
		t.Fatal(err)
	}
	waitPassing(t, client, "app-extra", "app-extra-1")

	// A request for app-shared's target is misdirected here.
	ex := &env{base: "http://" + app.Addr(), http: e.http}
	ex.waitReady(t)
	r := ex.do(t, "GET", "/orders", "t-alpha", targetShared, nil)
	expect(t, r, http.StatusMisdirectedRequest, orders.CodeMisdirected)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := app.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := app.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	svcs, err := client.Agent().ServicesWithFilter(`Service == "app-extra"`)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 0 {
		t.Fatalf("still registered after Stop: %v", svcs)
	}
	if _, err := e.http.Get("http://" + app.Addr() + "/livez"); err == nil {
		t.Fatal("still serving after Stop")
	}
}

func testNotReady(t *testing.T, e *env) {
	const prefix = "uninitialized"
	cfg := orders.DefaultConfig("app-unready", e.consul.Client())
	cfg.CatalogPrefix = prefix
	cfg.Register = false
	cfg.Logger = testLogger(t)
	app, err := orders.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Stop(context.Background()) })
	ex := &env{base: "http://" + app.Addr(), http: e.http}

	expect(t, ex.do(t, "GET", "/livez", "", "", nil), http.StatusOK, "")
	expect(t, ex.do(t, "GET", "/readyz", "", "", nil), http.StatusServiceUnavailable, orders.CodeNotReady)
	r := ex.do(t, "GET", "/orders", "t-alpha", targetShared, nil)
	expect(t, r, http.StatusServiceUnavailable, orders.CodeNotReady)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After on not_ready")
	}
	// Register is off: nothing in Consul.
	svcs, err := e.consul.Client().Agent().ServicesWithFilter(`Service == "app-unready"`)
	if err != nil || len(svcs) != 0 {
		t.Fatalf("registered with Register off: %v %v", svcs, err)
	}

	// Once the catalog exists the app becomes ready and serves its targets.
	st := catalog.NewStore(e.consul.Client(), prefix)
	if err := st.Init(t.Context(), 8); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTarget(t.Context(), catalog.Target{ID: "late-1", Tier: catalog.TierShared, Service: "app-unready", DSN: e.pg.DSN(sharedDB)}); err != nil {
		t.Fatal(err)
	}
	ex.waitReady(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = ex.do(t, "GET", "/orders", "t-late", "late-1", nil)
		if r.status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	expect(t, r, http.StatusOK, "")
	if got := r.header.Get(orders.HeaderServedBy); got != "late-1" {
		t.Fatalf("X-Served-By %q", got)
	}
}
