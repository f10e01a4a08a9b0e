package config

import (
	"errors"
	"flag"
	"io"
	"testing"
)

func TestExitCode(t *testing.T) {
	plain := errors.New("nats: no servers available")
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{flag.ErrHelp, ExitOK},
		{Invalid(errors.New("-kinds: bad")), ExitUsage},
		{ErrInvalid, ExitUsage},
		{plain, ExitFailed},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestInvalidKeepsMessageAndCause(t *testing.T) {
	cause := errors.New("refusing to start")
	err := Invalid(cause)
	if err.Error() != "refusing to start" || !errors.Is(err, cause) || !errors.Is(err, ErrInvalid) {
		t.Errorf("Invalid = %q", err)
	}
	if Invalid(nil) != nil {
		t.Error("Invalid(nil) is not nil")
	}
}

func TestParse(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("n", 0, "")
		return fs
	}
	if err := Parse(newFS(), []string{"-n", "2"}); err != nil {
		t.Errorf("Parse = %v", err)
	}
	if err := Parse(newFS(), []string{"-help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-help) = %v", err)
	}
	for _, args := range [][]string{{"-m"}, {"-n", "x"}, {"extra"}} {
		if err := Parse(newFS(), args); ExitCode(err) != ExitUsage {
			t.Errorf("Parse(%q) = %v, want a usage error", args, err)
		}
	}
}
