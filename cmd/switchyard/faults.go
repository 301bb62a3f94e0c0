//go:build faultinject

package main

import (
	"fmt"
	"os"

	"github.com/switchyard/switchyard/migrator"
)

// faultHooks stall a move at a named point when SWITCHYARD_FAULT_STALL says
// so (copy, catch-up, switch): fault tests SIGKILL the process there. Only
// a binary built with -tags faultinject (the fault tests build one) has
// them; the shipping binary ignores the variable.
func faultHooks() *migrator.Hooks {
	point := os.Getenv("SWITCHYARD_FAULT_STALL")
	if point == "" {
		return nil
	}
	stall := func(name string) func(*migrator.Move) error {
		return func(*migrator.Move) error {
			if name == point {
				fmt.Fprintf(os.Stderr, "STALLED AT %s\n", name)
				select {}
			}
			return nil
		}
	}
	return &migrator.Hooks{AfterChunk: stall("copy"), AfterApply: stall("catch-up"), AfterFence: stall("switch")}
}
