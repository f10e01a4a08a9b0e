package main

import (
	"errors"
	"flag"
	"testing"
)

func TestHelp(t *testing.T) {
	if err := run([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
}

func TestMissingSecret(t *testing.T) {
	t.Setenv("BEAMLINE_AUTH_SECRET", "")
	if err := run([]string{"-nats", "nats://127.0.0.1:1"}); err == nil {
		t.Fatal("started without a secret")
	}
}
