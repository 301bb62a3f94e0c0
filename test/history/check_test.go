package history

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// at builds an op from call to return in milliseconds after a fixed start.
func at(client int, call, ret int, in Input, out Output) Op {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return Op{Client: client, In: in, Out: out, Call: t0.Add(time.Duration(call) * time.Millisecond), Return: t0.Add(time.Duration(ret) * time.Millisecond)}
}

func TestCheck(t *testing.T) {
	v1 := Value{Item: "a", Quantity: 1, Version: 1}
	v2 := Value{Item: "b", Quantity: 2, Version: 2}
	create := at(0, 0, 10, Input{Kind: Create, Item: "a", Quantity: 1}, Output{Found: true, ID: 7, Value: v1})
	update := at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Found: true, Value: v2})
	cases := []struct {
		name       string
		ops        []Op
		final      Final
		ok         bool
		violations int
		lost       int
	}{
		{"sequential", []Op{create, update, at(1, 40, 50, Input{Kind: Read, ID: 7}, Output{Found: true, Value: v2})}, Final{7: &v2}, true, 0, 0},
		{"read concurrent with the update sees either",
			[]Op{create, update, at(1, 15, 35, Input{Kind: Read, ID: 7}, Output{Found: true, Value: v1})}, Final{7: &v2}, true, 0, 0},
		{"stale read after the update", []Op{create, update, at(1, 40, 50, Input{Kind: Read, ID: 7}, Output{Found: true, Value: v1})}, Final{7: &v2}, false, 1, 0},
		{"acknowledged update lost", []Op{create, update}, Final{7: &v1}, false, 1, 1},
		{"unknown update may have happened", []Op{create, at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Unknown: true})}, Final{7: &v2}, true, 0, 0},
		{"unknown update may not have happened", []Op{create, at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Unknown: true})}, Final{7: &v1}, true, 0, 0},
		{"a router's refusal had no effect", []Op{create, at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Unknown: true, Refused: true})}, Final{7: &v1}, true, 0, 0},
		{"a router's refusal took effect after all", []Op{create, at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Unknown: true, Refused: true})}, Final{7: &v2}, false, 1, 0},
		{"deleted order comes back", []Op{create, at(0, 20, 30, Input{Kind: Delete, ID: 7}, Output{Found: true})}, Final{7: &v1}, false, 1, 1},
		// A stalled router forwards an update its client gave up on after
		// the client's next, acknowledged update: the database ends with
		// the older input at a higher version, which is linearizable.
		{"unknown update lands after a later acknowledged one", []Op{create,
			at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "x", Quantity: 9}, Output{Unknown: true}),
			at(0, 40, 50, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Found: true, Value: v2})},
			Final{7: &Value{Item: "x", Quantity: 9, Version: 3}}, true, 0, 0},
		{"a value nobody wrote", []Op{create,
			at(0, 20, 30, Input{Kind: Update, ID: 7, Item: "x", Quantity: 9}, Output{Unknown: true}),
			at(0, 40, 50, Input{Kind: Update, ID: 7, Item: "b", Quantity: 2}, Output{Found: true, Value: v2})},
			Final{7: &Value{Item: "y", Quantity: 1, Version: 3}}, false, 1, 1},
		{"read of a deleted order", []Op{create, at(0, 20, 30, Input{Kind: Delete, ID: 7}, Output{Found: true}), at(1, 40, 50, Input{Kind: Read, ID: 7}, Output{})}, Final{}, true, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Check(tc.ops, tc.final, 10*time.Second, "")
			if (res.Linearizable == porcupine.Ok) != tc.ok || len(res.Violations) != tc.violations || len(res.Lost) != tc.lost {
				t.Fatalf("linearizable %v, %d violations %v, %d lost %v", res.Linearizable, len(res.Violations), res.Violations, len(res.Lost), res.Lost)
			}
		})
	}
}
