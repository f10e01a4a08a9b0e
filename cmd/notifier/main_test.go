package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"testing"
)

func TestHelp(t *testing.T) {
	if err := run(context.Background(), []string{"--help"}, io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
}

func TestMissingSecret(t *testing.T) {
	t.Setenv("BEAMLINE_AUTH_SECRET", "")
	if err := run(context.Background(), []string{"-nats", "nats://127.0.0.1:1"}, io.Discard, io.Discard); err == nil {
		t.Fatal("started without a secret")
	}
}
