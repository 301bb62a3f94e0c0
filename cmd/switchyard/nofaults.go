//go:build !faultinject

package main

import "github.com/switchyard/switchyard/migrator"

// faultHooks: the shipping binary injects no faults (see faults.go).
func faultHooks() *migrator.Hooks { return nil }
