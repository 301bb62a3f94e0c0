package main

import (
	"context"
	"errors"
)

func runApp(ctx context.Context, args []string) error { return errors.New("not yet") }

func runDev(ctx context.Context, args []string) error { return errors.New("not yet") }
