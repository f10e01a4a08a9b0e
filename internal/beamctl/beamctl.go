// Package beamctl is the operator's command-line tool, cmd/beamctl: it
// makes tokens, reads, cancels and reruns jobs, lists and redrives the DLQ,
// tails live events and manages schedules, over the same HTTP API apps use
// (ingest and the notifier) and over NATS where the API has no equivalent
// (reading the DLQ). The logic lives here so tests run it in process.
//
// Output is a table for people and JSON with -o json for scripts; the exit
// code tells scripts what happened (ExitOK, ExitError, ExitUsage,
// ExitNotFound, ExitRefused).
package beamctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // anything else: unreachable server, 5xx, a bad answer
	ExitUsage = 2 // bad command line, flags or environment
	// ExitNotFound: the job, schedule or route asked for does not exist
	// (HTTP 404).
	ExitNotFound = 3
	// ExitRefused: the token was refused (HTTP 401) or may not do this
	// (HTTP 403).
	ExitRefused = 4
	// ExitConflict: the job is in a state that does not allow it (HTTP
	// 409, e.g. cancelling a finished job).
	ExitConflict = 5
)

// Environment variables read for flags not given.
const (
	EnvAPI      = "BEAMLINE_API"
	EnvNotifier = "BEAMLINE_NOTIFIER"
	EnvToken    = "BEAMLINE_TOKEN"
	EnvNATS     = "NATS_URL"
	EnvSecret   = "BEAMLINE_AUTH_SECRET"
)

// DefaultAPI is ingest's default address (and devstack's).
const DefaultAPI = "http://127.0.0.1:8080"

// usageError is a bad command line: exit 2 with the command's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// env is what every command runs with: the global settings and the
// output streams.
type env struct {
	api, notifier, token, nats, output string
	getenv                             func(string) string
	stdout, stderr                     io.Writer
}

func (e *env) json() bool { return e.output == "json" }

// command is a node of the command tree: a group (sub) or a leaf (run).
type command struct {
	name, args, summary, help string
	sub                       []*command
	// flags adds the command's own flags; its parsed values are read by run.
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, e *env, args []string) error
	// needs lists the global settings the command uses, for its --help.
	needs []string
}

func root() *command {
	return &command{name: "beamctl", summary: "operate a Beamline deployment", sub: []*command{
		tokenCmd(),
		{name: "jobs", summary: "read, list, cancel and rerun jobs", sub: []*command{
			jobsGetCmd(), jobsLsCmd(), jobsCancelCmd(), jobsRerunCmd(),
		}},
		{name: "dlq", summary: "list dead jobs and send them back to work", sub: []*command{
			dlqLsCmd(), dlqRedriveCmd(),
		}},
		tailCmd(),
		{name: "schedules", summary: "list and remove repeating submissions", sub: []*command{
			schedulesLsCmd(), schedulesRmCmd(),
		}},
	}}
}

// Main runs beamctl with args (without the program name) and returns the
// exit code. getenv reads the environment (os.Getenv in cmd/beamctl).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{getenv: getenv, stdout: stdout, stderr: stderr}
	cmd, path := root(), []string{"beamctl"}
	for cmd.run == nil {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			w := stdout
			code := ExitOK
			if len(args) == 0 {
				w, code = stderr, ExitUsage
			}
			groupUsage(w, cmd, path)
			return code
		}
		var next *command
		for _, s := range cmd.sub {
			if s.name == args[0] {
				next = s
			}
		}
		if next == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n\n", strings.Join(path, " "), args[0])
			groupUsage(stderr, cmd, path)
			return ExitUsage
		}
		cmd, path, args = next, append(path, next.name), args[1:]
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs, cmd.needs)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	usage := func(w io.Writer) { leafUsage(w, cmd, path, fs) }
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return ExitOK
	}
	if err == nil {
		err = e.resolve()
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n\n", strings.Join(path, " "), err)
		usage(stderr)
		return ExitUsage
	}
	err = cmd.run(ctx, e, pos)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %v\n\n", strings.Join(path, " "), err)
		usage(stderr)
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", strings.Join(path, " "), err)
		return exitCode(err)
	}
	return ExitOK
}

// globalFlags registers the settings every command shares (only those it
// uses appear in its --help).
func (e *env) globalFlags(fs *flag.FlagSet, needs []string) {
	fs.StringVar(&e.output, "o", "table", "output: table (for people) or json (for scripts)")
	for _, n := range needs {
		switch n {
		case "api":
			fs.StringVar(&e.api, "api", "", "ingest's base URL, or the gateway's (default $"+EnvAPI+", else "+DefaultAPI+")")
			fs.StringVar(&e.token, "token", "", "bearer token (default $"+EnvToken+"; make one with: beamctl token)")
		case "notifier":
			fs.StringVar(&e.notifier, "notifier", "", "the notifier's base URL (default $"+EnvNotifier+", else --api: behind the gateway they are one origin)")
		case "nats":
			fs.StringVar(&e.nats, "nats", "", "NATS URL with the admin user (default $"+EnvNATS+", else nats://127.0.0.1:4222)")
		}
	}
}

// resolve fills settings from the environment and checks them.
func (e *env) resolve() error {
	if e.output != "table" && e.output != "json" {
		return usagef("-o %q: want table or json", e.output)
	}
	e.api = strings.TrimRight(first(e.api, e.getenv(EnvAPI), DefaultAPI), "/")
	e.notifier = strings.TrimRight(first(e.notifier, e.getenv(EnvNotifier), e.api), "/")
	e.token = first(e.token, e.getenv(EnvToken))
	e.nats = first(e.nats, e.getenv(EnvNATS), "nats://127.0.0.1:4222")
	return nil
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments (`beamctl jobs get ID -o json`); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func groupUsage(w io.Writer, c *command, path []string) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\n%s.\n\nCommands:\n", strings.Join(path, " "), upper(c.summary))
	for _, s := range c.sub {
		name := s.name
		if s.run == nil {
			name += " " + strings.Join(names(s.sub), "|")
		}
		fmt.Fprintf(w, "  %-28s %s\n", name, s.summary)
	}
	fmt.Fprintf(w, "\nRun `%s <command> --help` for a command's flags.\n", strings.Join(path, " "))
	if len(path) == 1 {
		fmt.Fprintf(w, "\nExit codes: %d ok, %d error, %d usage, %d not found, %d token refused or not allowed, %d conflict (e.g. the job already ended).\n",
			ExitOK, ExitError, ExitUsage, ExitNotFound, ExitRefused, ExitConflict)
	}
}

func leafUsage(w io.Writer, c *command, path []string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n%s.\n", strings.TrimSpace(strings.Join(path, " ")+" [flags] "+c.args), upper(c.summary))
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	fmt.Fprintf(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

func names(cs []*command) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.name)
	}
	return out
}

func upper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// oneArg checks that exactly one positional argument, named what, was
// given.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 || args[0] == "" {
		return "", usagef("want exactly one %s, got %d arguments", what, len(args))
	}
	return args[0], nil
}

func noArgs(args []string) error {
	if len(args) != 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}
