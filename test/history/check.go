package history

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// state is one order in the model: nil when absent.
type state = *Value

// stepOrder is the register model of one order.
func stepOrder(s, in, out any) (bool, any) {
	cur, i, o := s.(state), in.(Input), out.(Output)
	if o.Unknown {
		// It may have happened (linearized where it fits) or not at all
		// (linearized after everything: its return is unbounded).
		switch i.Kind {
		case Update:
			if cur == nil {
				return true, cur
			}
			return true, &Value{Item: i.Item, Quantity: i.Quantity, Version: cur.Version + 1}
		case Delete:
			return true, state(nil)
		}
		return true, cur
	}
	switch i.Kind {
	case Create:
		if cur != nil {
			return false, cur
		}
		v := o.Value
		return true, &v
	case Read:
		if !o.Found {
			return cur == nil, cur
		}
		return cur != nil && *cur == o.Value, cur
	case Update:
		if !o.Found {
			return cur == nil, cur
		}
		if cur == nil || o.Value != (Value{Item: i.Item, Quantity: i.Quantity, Version: cur.Version + 1}) {
			return false, cur
		}
		v := o.Value
		return true, &v
	default: // Delete
		return o.Found == (cur != nil), state(nil)
	}
}

// Model is the porcupine model of a tenant's orders: a register per order,
// partitioned by order id.
var Model = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int64][]porcupine.Operation{}
		var keys []int64
		for _, op := range h {
			k := op.Metadata.(Op).Key()
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return state(nil) },
	Step: stepOrder,
	Equal: func(a, b any) bool {
		x, y := a.(state), b.(state)
		return x == y || x != nil && y != nil && *x == *y
	},
	DescribeOperation:         func(in, out any) string { return Op{In: in.(Input), Out: out.(Output)}.String() },
	DescribeOperationMetadata: func(m any) string { return m.(Op).String() },
	DescribeState: func(s any) string {
		if s.(state) == nil {
			return "absent"
		}
		return fmt.Sprintf("%+v", *s.(state))
	},
}

// Final is an order's row in the database after the run; nil when absent.
type Final map[int64]*Value

// Result is the outcome of checking a history.
type Result struct {
	Ops, Orders int
	// Linearizable is porcupine's verdict (Unknown when it timed out).
	Linearizable porcupine.CheckResult
	// Violations are the orders whose history is not linearizable, each
	// with its operations.
	Violations []string
	// Lost are acknowledged writes not in the final rows.
	Lost []string
	// Visualization is an HTML file of a failed check, if one was written.
	Visualization string
}

// Check checks ops, with a final read of every order from the database
// appended after them, for linearizability and for acknowledged writes
// lost. Unknown creates (no id), failed reads and the router's refusals
// are left out. A failed
// check is drawn by porcupine into an HTML file in htmlDir, unless it is "".
func Check(ops []Op, final Final, timeout time.Duration, htmlDir string) Result {
	var h []porcupine.Operation
	var end time.Time
	orders := map[int64]bool{}
	for _, op := range ops {
		if op.Return.After(end) {
			end = op.Return
		}
		if op.Out.Unknown && (op.In.Kind == Create || op.In.Kind == Read) || op.Out.Refused {
			continue // no effect to place (a refusal certainly had none)
		}
		ret := op.Return.UnixNano()
		if op.Out.Unknown {
			ret = math.MaxInt64
		}
		h = append(h, porcupine.Operation{ClientId: op.Client, Input: op.In, Output: op.Out, Call: op.Call.UnixNano(), Return: ret, Metadata: op})
		orders[op.Key()] = true
	}
	finalClient := 1 + maxClient(ops)
	for id := range orders {
		at := end.Add(time.Millisecond)
		op := Op{Client: finalClient, In: Input{Kind: Read, ID: id}, Call: at, Return: at.Add(time.Millisecond), Via: "database (final)"}
		if v := final[id]; v != nil {
			op.Out = Output{Found: true, Value: *v}
		}
		h = append(h, porcupine.Operation{ClientId: op.Client, Input: op.In, Output: op.Out, Call: op.Call.UnixNano(), Return: op.Return.UnixNano(), Metadata: op})
	}
	res := Result{Ops: len(ops), Orders: len(orders), Lost: lost(ops, final)}
	verdict, info := porcupine.CheckOperationsVerbose(Model, h, timeout)
	res.Linearizable = verdict
	if verdict != porcupine.Ok {
		res.Violations = violations(h)
		if htmlDir != "" {
			res.Visualization = visualize(info, htmlDir)
		}
	}
	return res
}

func maxClient(ops []Op) int {
	m := 0
	for _, op := range ops {
		m = max(m, op.Client)
	}
	return m
}

// violations checks each partition alone and describes those that fail.
func violations(h []porcupine.Operation) []string {
	var out []string
	for _, part := range Model.Partition(h) {
		if porcupine.CheckOperationsTimeout(Model, part, 10*time.Second) == porcupine.Ok {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "order %d is not linearizable:", part[0].Metadata.(Op).Key())
		for _, op := range part {
			fmt.Fprintf(&b, "\n    %s", op.Metadata.(Op))
		}
		out = append(out, b.String())
	}
	return out
}

// visualize writes porcupine's HTML view of a failed check into dir and
// returns its path.
func visualize(info porcupine.LinearizationInfo, dir string) string {
	f, err := os.CreateTemp(dir, "switchyard-history-*.html")
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := porcupine.Visualize(Model, info, f); err != nil {
		return ""
	}
	return filepath.Clean(f.Name())
}

// lost lists the orders whose last acknowledged write is not what the
// database holds, skipping orders with a write of unknown outcome after it
// (either state would then be right).
func lost(ops []Op, final Final) []string {
	type last struct {
		op      Op
		unknown bool
		// pending are the writes with no definite answer: each may still
		// take effect, even after a later acknowledged write (a request
		// held by a stalled router and forwarded when it resumes).
		pending []Input
	}
	by := map[int64]*last{}
	for _, op := range ops { // by call time; one client writes each order
		if !op.Write() || op.In.Kind == Create && op.Out.Unknown {
			continue
		}
		l := by[op.Key()]
		if l == nil {
			l = &last{}
			by[op.Key()] = l
		}
		if op.Out.Unknown {
			l.unknown = true
			if !op.Out.Refused { // a router's refusal certainly had no effect
				l.pending = append(l.pending, op.In)
			}
			continue
		}
		if op.Out.Found || op.In.Kind == Create {
			l.op, l.unknown = op, false
		}
	}
	var out []string
	for id, l := range by {
		if l.unknown || l.op.Return.IsZero() || explainedByPending(l.pending, final[id]) {
			continue // the linearizability check judges whether it may land there
		}
		got := final[id]
		switch {
		case l.op.In.Kind == Delete && got != nil:
			out = append(out, fmt.Sprintf("order %d: deleted (%s) but in the database as %+v", id, l.op, *got))
		case l.op.In.Kind != Delete && got == nil:
			out = append(out, fmt.Sprintf("order %d: missing from the database; last acknowledged %s", id, l.op))
		case l.op.In.Kind != Delete && *got != l.op.Out.Value:
			out = append(out, fmt.Sprintf("order %d: database has %+v; last acknowledged %s", id, *got, l.op))
		}
	}
	sort.Strings(out)
	return out
}

// explainedByPending reports whether the final row is what one of the
// writes without an answer would have left: its update's values, or its
// delete's absence.
func explainedByPending(pending []Input, got *Value) bool {
	for _, in := range pending {
		switch {
		case in.Kind == Delete && got == nil:
			return true
		case in.Kind == Update && got != nil && got.Item == in.Item && got.Quantity == in.Quantity:
			return true
		}
	}
	return false
}
