// Package history records what clients saw of a tenant's orders through the
// routers — every operation with its invocation and completion time, input
// and output, or "unknown" when it timed out or failed — and checks it:
// for linearizability with porcupine (each order a register with create,
// read, update, delete; partitioned by order id), and row by row against
// the tenant's final rows in PostgreSQL (acknowledged writes lost).
package history

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Kind is an operation on one order.
type Kind uint8

// The operations of the orders API a workload sends.
const (
	Create Kind = iota
	Read
	Update
	Delete
)

func (k Kind) String() string {
	return [...]string{"create", "read", "update", "delete"}[k]
}

// Value is the state of an order the model tracks.
type Value struct {
	Item     string
	Quantity int
	Version  int
}

// Input is what a client asked for. ID is 0 for a create.
type Input struct {
	Kind     Kind
	ID       int64
	Item     string
	Quantity int
}

// Output is what a client got. Unknown means no definite answer (timeout,
// transport error, 5xx): the operation may or may not have taken effect.
// Found is false for 404 (and a delete answers Found with no Value).
type Output struct {
	Unknown bool
	// Refused: the router answered itself without forwarding (see
	// refusals), so the operation certainly had no effect; it still
	// counts as failed.
	Refused bool
	Found   bool
	ID      int64 // a create's new id
	Value   Value
}

// Op is one recorded operation.
type Op struct {
	Client       int
	In           Input
	Out          Output
	Call, Return time.Time
	// Via is which router served it and Detail what went wrong, for
	// reports; ServedBy is the backend's X-Served-By (its target).
	Via, Detail, ServedBy string
}

// Key is the order the operation is about.
func (o Op) Key() int64 {
	if o.In.Kind == Create {
		return o.Out.ID
	}
	return o.In.ID
}

// Write reports whether the operation changes state.
func (o Op) Write() bool { return o.In.Kind != Read }

func (o Op) String() string {
	var out string
	switch {
	case o.Out.Unknown:
		out = "unknown (" + o.Detail + ")"
	case !o.Out.Found:
		out = "not found"
	case o.In.Kind == Delete:
		out = "deleted"
	default:
		out = fmt.Sprintf("%+v", o.Out.Value)
	}
	in := fmt.Sprintf("%s %d", o.In.Kind, o.Key())
	if o.In.Kind == Create || o.In.Kind == Update {
		in += fmt.Sprintf(" {%s %d}", o.In.Item, o.In.Quantity)
	}
	return fmt.Sprintf("client %d via %s [%s → %s]: %s → %s",
		o.Client, o.Via, o.Call.Format("15:04:05.000000"), o.Return.Format("15:04:05.000000"), in, out)
}

// Recorder collects operations from any number of goroutines.
type Recorder struct {
	mu  sync.Mutex
	ops []Op
}

// Record adds one operation.
func (r *Recorder) Record(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

// Ops returns a copy of the operations recorded so far, by call time.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	ops := append([]Op(nil), r.ops...)
	r.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call.Before(ops[j].Call) })
	return ops
}

// Failed reports whether the client got no definite answer.
func (o Op) Failed() bool { return o.Out.Unknown }

// Stats are the figures a scenario prints.
type Stats struct {
	Total, Failed int
	// Recovery is from the fault to the completion of the last failed
	// operation invoked after it (0 if none failed).
	Recovery time.Duration
	// Failures are the first few failed operations.
	Failures []string
}

// Stats counts the operations and failures; fault is when the fault began
// (zero: the first operation).
func (r *Recorder) Stats(fault time.Time) Stats {
	var s Stats
	for _, op := range r.Ops() {
		s.Total++
		if !op.Failed() {
			continue
		}
		s.Failed++
		if len(s.Failures) < 10 {
			s.Failures = append(s.Failures, op.String())
		}
		if !op.Call.Before(fault) && op.Return.Sub(fault) > s.Recovery {
			s.Recovery = op.Return.Sub(fault)
		}
	}
	return s
}
