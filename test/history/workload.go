package history

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Workload is a steady load on one tenant's orders through a set of
// routers: each client creates, updates and deletes its own orders and
// reads anybody's, going round the routers, recording every operation.
type Workload struct {
	Tenant  string
	Routers []string // base URLs
	Clients int
	// Pace is the pause after each operation of a client.
	Pace time.Duration
	// Timeout bounds one request; past it the outcome is unknown.
	Timeout time.Duration
	Rec     *Recorder

	hc     *http.Client
	mu     sync.Mutex
	shared []int64 // every order id created, for reads
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start runs the clients until Stop.
func (w *Workload) Start() {
	if w.Timeout == 0 {
		w.Timeout = 5 * time.Second
	}
	if w.Rec == nil {
		w.Rec = &Recorder{}
	}
	w.hc = &http.Client{Timeout: w.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for i := range w.Clients {
		w.wg.Go(func() { w.client(ctx, i) })
	}
}

// Stop stops the clients and waits for their last operations.
func (w *Workload) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// client is one sequential client.
func (w *Workload) client(ctx context.Context, n int) {
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	var mine []int64
	for i := 0; ctx.Err() == nil; i++ {
		base := fmt.Sprintf("%s/t/%s/orders", w.Routers[(n+i)%len(w.Routers)], w.Tenant)
		in := w.next(rng, mine, n, i)
		op := Send(w.hc, base, in)
		op.Client = n
		w.Rec.Record(op)
		switch {
		case in.Kind == Create && !op.Out.Unknown:
			mine = append(mine, op.Out.ID)
			w.mu.Lock()
			w.shared = append(w.shared, op.Out.ID)
			w.mu.Unlock()
		case in.Kind == Delete:
			mine = remove(mine, in.ID)
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.Pace):
		}
	}
}

// next picks the next operation: creates until a client has a few orders,
// then mostly reads and updates.
func (w *Workload) next(rng *rand.Rand, mine []int64, n, i int) Input {
	item := fmt.Sprintf("c%d-%d", n, i)
	p := rng.IntN(100)
	switch {
	case len(mine) < 3 || p < 20:
		return Input{Kind: Create, Item: item, Quantity: rng.IntN(1000) + 1}
	case p < 50:
		return Input{Kind: Update, ID: mine[rng.IntN(len(mine))], Item: item, Quantity: rng.IntN(1000) + 1}
	case p < 58:
		return Input{Kind: Delete, ID: mine[rng.IntN(len(mine))]}
	}
	w.mu.Lock()
	id := w.shared[rng.IntN(len(w.shared))]
	w.mu.Unlock()
	return Input{Kind: Read, ID: id}
}

func remove(ids []int64, id int64) []int64 {
	for k, x := range ids {
		if x == id {
			return append(ids[:k], ids[k+1:]...)
		}
	}
	return ids
}

// wireOrder is the orders API's JSON for an order.
type wireOrder struct {
	ID       int64  `json:"id"`
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
	Version  int    `json:"version"`
}

// expected is each operation's success status; 404 is a definite answer
// for all but a create.
var expected = map[Kind]int{Create: http.StatusCreated, Read: http.StatusOK, Update: http.StatusOK, Delete: http.StatusNoContent}

// Send sends one operation to the orders API at base (a tenant's
// ".../orders" URL) and returns it with its answer; Client is left to the
// caller. Every test client of the orders API goes through it.
func Send(hc *http.Client, base string, in Input) Op {
	method, url, body := "POST", base, any(nil)
	switch in.Kind {
	case Create:
		body = map[string]any{"item": in.Item, "quantity": in.Quantity, "price_cents": 1}
	case Read:
		method, url = "GET", fmt.Sprintf("%s/%d", base, in.ID)
	case Update:
		method, url = "PUT", fmt.Sprintf("%s/%d", base, in.ID)
		body = map[string]any{"item": in.Item, "quantity": in.Quantity, "price_cents": 1}
	case Delete:
		method, url = "DELETE", fmt.Sprintf("%s/%d", base, in.ID)
	}
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	op := Op{In: in, Via: base, Call: time.Now()}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		op.Return, op.Out.Unknown, op.Detail = time.Now(), true, err.Error()
		return op
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		op.Return, op.Out.Unknown, op.Detail = time.Now(), true, err.Error()
		return op
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	op.Return = time.Now()
	return decode(op, resp, data)
}

// refusals are the router's own 503 answers given before anything is
// sent to a backend (router/proxy.go): a hold that expired, a lapsed
// lease, no instance, every breaker open (a retry goes only to requests
// whose connection failed, so nothing was sent either).
var refusals = map[string]bool{"tenant_moving": true, "router_lease_lapsed": true, "no_healthy_backend": true, "breaker_open": true}

// errorCode is the code of a JSON error answer ({"error": code, ...}).
func errorCode(data []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	return e.Error
}

// decode fills in the output from the answer.
func decode(op Op, resp *http.Response, data []byte) Op {
	op.ServedBy = resp.Header.Get("X-Served-By")
	op.Via += " " + op.ServedBy
	switch {
	case resp.StatusCode == expected[op.In.Kind]:
		op.Out.Found = true
	case resp.StatusCode == http.StatusNotFound && op.In.Kind != Create && errorCode(data) == "not_found":
		return op // the app's definite "no such order"
	default:
		op.Out.Unknown = true
		op.Out.Refused = resp.StatusCode == http.StatusServiceUnavailable && refusals[errorCode(data)]
		op.Detail = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(data))
		return op
	}
	if op.In.Kind == Delete {
		return op
	}
	var o wireOrder
	if err := json.Unmarshal(data, &o); err != nil {
		op.Out = Output{Unknown: true}
		op.Detail = fmt.Sprintf("decode %q: %v", data, err)
		return op
	}
	op.Out.ID, op.Out.Value = o.ID, Value{Item: o.Item, Quantity: o.Quantity, Version: o.Version}
	return op
}

// Do sends one operation through one router (a base URL) as client,
// records it and returns it: the probes a scenario aims at one router.
// Start must have been called.
func (w *Workload) Do(router string, client int, in Input) Op {
	op := Send(w.hc, fmt.Sprintf("%s/t/%s/orders", router, w.Tenant), in)
	op.Client = client
	w.Rec.Record(op)
	return op
}
