// Command beamctl is the Beamline operator's tool: tokens, jobs, the DLQ,
// live events and schedules, over the HTTP API (and NATS for the DLQ).
// `beamctl --help` lists the commands; internal/beamctl has the logic.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/beamline/beamline/internal/beamctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := beamctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
