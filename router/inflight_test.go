package router

import "testing"

func TestInflightCountsAndReports(t *testing.T) {
	f := NewInflight()
	a1, a2, b := f.Enter("a"), f.Enter("a"), f.Enter("b")
	if f.Count("a") != 2 || f.Count("b") != 1 || f.Count("c") != 0 {
		t.Fatalf("counts a=%d b=%d", f.Count("a"), f.Count("b"))
	}
	a1.Leave()
	b.Leave()
	if got := f.TakeCounts(); got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("report %v", got)
	}
	if f.Count("a") != 1 || f.Count("b") != 0 {
		t.Fatalf("after report a=%d b=%d", f.Count("a"), f.Count("b"))
	}
	a2.Leave()
	if got := f.TakeCounts(); len(got) != 0 {
		t.Fatalf("second report %v", got)
	}
	if f.Count("a") != 0 {
		t.Fatal("a still in flight")
	}
}
