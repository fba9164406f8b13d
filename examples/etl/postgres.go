package main

import (
	"context"
	"errors"
)

// newPostgresMode is the -sink postgres mode.
func newPostgresMode(ctx context.Context, cfg config, tp topics) (mode, error) {
	return nil, errors.New("-sink postgres: not built yet")
}
