// Package compose checks that compose.yaml and the Dockerfile wire what
// docs/design.md#beyond-one-machine promises. There is no Docker engine here, so compose.yaml is
// loaded and validated with compose-go (the library `docker compose` itself
// uses), and each NATS node's command line is parsed by nats-server's own
// flag parser against the committed nats.conf. The gateway's
// deploy/Caddyfile is read for its routes (caddyfile_test.go), each checked
// against the services compose.yaml defines.
package compose

import (
	"context"
	"flag"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
)

const repo = "../.."

// testEnv is what an operator exports before `docker compose up`.
var testEnv = map[string]string{
	"BEAMLINE_AUTH_SECRET":             "auth-secret-for-compose-test-0123456789",
	"BEAMLINE_NATS_INGEST_PASSWORD":    "pw-ingest-7f3a",
	"BEAMLINE_NATS_PROCESSOR_PASSWORD": "pw-processor-91bc",
	"BEAMLINE_NATS_NOTIFIER_PASSWORD":  "pw-notifier-c04d",
	"BEAMLINE_NATS_ADMIN_PASSWORD":     "pw-admin-5e21",
}

// userOf is the NATS user each binary must connect as, and the variable that
// holds its password.
var userOf = map[string]struct{ user, pwEnv string }{
	"ingest":    {"ingest", "BEAMLINE_NATS_INGEST_PASSWORD"},
	"processor": {"processor", "BEAMLINE_NATS_PROCESSOR_PASSWORD"},
	"notifier":  {"notifier", "BEAMLINE_NATS_NOTIFIER_PASSWORD"},
}

func load(t *testing.T, env map[string]string, opts ...func(*loader.Options)) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]func(*loader.Options){func(o *loader.Options) { o.SetProjectName("beamline", true) }}, opts...)
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "compose.yaml")}},
		Environment: maps.Clone(env), // the loader adds to it
	}, opts...)
}

func mustLoad(t *testing.T) *types.Project {
	t.Helper()
	p, err := load(t, testEnv)
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

func isNATS(s types.ServiceConfig) bool { return strings.HasPrefix(s.Image, "nats:") }

func isGateway(s types.ServiceConfig) bool { return strings.HasPrefix(s.Image, "caddy:") }

// binaryOf is the Beamline binary a service runs ("" for other images).
func binaryOf(s types.ServiceConfig) string {
	if isNATS(s) || isGateway(s) || len(s.Entrypoint) == 0 {
		return ""
	}
	return filepath.Base(s.Entrypoint[0])
}

// flagValue returns the value of -name or --name in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		for _, p := range []string{"-" + name, "--" + name} {
			if a == p && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

func TestComposeLoadsAndValidates(t *testing.T) {
	p := mustLoad(t)
	var nats, beamline []string
	for name, s := range p.Services {
		if isNATS(s) {
			nats = append(nats, name)
		} else {
			beamline = append(beamline, name)
		}
	}
	slices.Sort(nats)
	if len(nats) != 3 {
		t.Fatalf("want 3 NATS services, got %v", nats)
	}
	count := map[string]int{}
	for _, name := range beamline {
		count[binaryOf(p.Services[name])]++
	}
	want := map[string]int{"ingest": 1, "processor": 2, "notifier": 2}
	for bin, n := range want {
		if count[bin] != n {
			t.Errorf("%s services: got %d, want %d (services: %v)", bin, count[bin], n, count)
		}
	}
}

func TestComposeRequiresEverySecretFromTheEnvironment(t *testing.T) {
	for key := range testEnv {
		t.Run(key, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range testEnv {
				if k != key {
					env[k] = v
				}
			}
			if _, err := load(t, env); err == nil || !strings.Contains(err.Error(), key) {
				t.Fatalf("compose.yaml loaded without $%s (err %v): a missing secret must stop `docker compose up`", key, err)
			}
		})
	}
}

func TestComposeNATSCluster(t *testing.T) {
	p := mustLoad(t)
	conf, err := filepath.Abs(filepath.Join(repo, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var natsNames []string
	for name, s := range p.Services {
		if isNATS(s) {
			natsNames = append(natsNames, name)
		}
	}
	names := map[string]bool{}
	clusters := map[string]bool{}
	for _, name := range natsNames {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			// The committed nats.conf is mounted, unchanged.
			mounted := false
			for _, v := range s.Volumes {
				if filepath.Base(v.Source) == "nats.conf" && v.ReadOnly {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("nats.conf is not mounted read-only: %+v", s.Volumes)
			}
			// Parse the command line with nats-server's own parser, reading
			// the real nats.conf with the service's environment.
			args := slices.Clone([]string(s.Command))
			cfgPath, ok := flagValue(args, "c")
			if !ok {
				t.Fatalf("command %v does not pass -c", args)
			}
			for i := range args {
				if args[i] == cfgPath {
					args[i] = conf
				}
			}
			for k, v := range s.Environment {
				if v != nil {
					t.Setenv(k, *v)
				}
			}
			fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
			opts, err := server.ConfigureOptions(fs, args, func() {}, func() {}, func() {})
			if err != nil {
				t.Fatalf("nats-server rejects %v: %v", s.Command, err)
			}
			if !opts.JetStream {
				t.Error("JetStream is off")
			}
			if opts.ServerName == "" || names[opts.ServerName] {
				t.Errorf("server name %q empty or not unique", opts.ServerName)
			}
			names[opts.ServerName] = true
			clusters[opts.Cluster.Name] = true
			if opts.Cluster.Port == 0 {
				t.Errorf("no cluster listener")
			}
			var routeHosts []string
			for _, r := range opts.Routes {
				routeHosts = append(routeHosts, r.Hostname())
			}
			for _, other := range natsNames {
				if other != name && !slices.Contains(routeHosts, other) {
					t.Errorf("no route to %s (routes %v)", other, routeHosts)
				}
			}
			if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), ":8222/healthz?js-enabled-only=true") {
				t.Errorf("healthcheck must probe /healthz?js-enabled-only=true on 8222: %+v", s.HealthCheck)
			}
		})
	}
	if len(clusters) != 1 || clusters[""] {
		t.Errorf("all nodes must share one named cluster: %v", clusters)
	}
}

func TestComposeBeamlineServices(t *testing.T) {
	p := mustLoad(t)
	var natsNames []string
	for name, s := range p.Services {
		if isNATS(s) {
			natsNames = append(natsNames, name)
		}
	}
	addrs := map[string]map[string]bool{}
	for name, s := range p.Services {
		bin := binaryOf(s)
		if isNATS(s) || isGateway(s) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			u, ok := userOf[bin]
			if !ok {
				t.Fatalf("entrypoint %v is not a Beamline service binary", s.Entrypoint)
			}
			if _, ok := flagValue(s.Command, "nats"); ok {
				t.Errorf("-nats on the command line shows the password in ps; use $NATS_URL")
			}
			// Every URL of the list uses the service's own user and password,
			// and the list names every node.
			raw := env(s, "NATS_URL")
			if raw == "" {
				t.Fatal("NATS_URL is not set")
			}
			var hosts []string
			for _, one := range strings.Split(raw, ",") {
				pu, err := url.Parse(one)
				if err != nil {
					t.Fatalf("NATS_URL entry: %v", err)
				}
				pw, _ := pu.User.Password()
				if pu.User.Username() != u.user || pw != testEnv[u.pwEnv] {
					t.Errorf("NATS_URL entry for host %s connects as %q (password ok: %v), want user %q with $%s",
						pu.Host, pu.User.Username(), pw == testEnv[u.pwEnv], u.user, u.pwEnv)
				}
				hosts = append(hosts, pu.Hostname())
			}
			for _, n := range natsNames {
				if !slices.Contains(hosts, n) {
					t.Errorf("NATS_URL does not list %s", n)
				}
			}
			if r, _ := flagValue(s.Command, "replicas"); r != "3" {
				t.Errorf("-replicas %q, want 3 (R3 streams on the cluster)", r)
			}
			if bin != "processor" {
				if env(s, "BEAMLINE_AUTH_SECRET") != testEnv["BEAMLINE_AUTH_SECRET"] {
					t.Errorf("BEAMLINE_AUTH_SECRET is not passed from the environment")
				}
			} else if _, ok := s.Environment["BEAMLINE_AUTH_SECRET"]; ok {
				t.Errorf("the processor needs no token secret; do not hand it one")
			}
			addr, ok := flagValue(s.Command, "addr")
			if !ok {
				t.Fatalf("no -addr (the default 127.0.0.1 is unreachable from outside the container)")
			}
			if addrs[bin] == nil {
				addrs[bin] = map[string]bool{}
			}
			if addrs[bin][addr] {
				t.Errorf("two %s services share -addr %s", bin, addr)
			}
			addrs[bin][addr] = true
			for _, n := range natsNames {
				d, ok := s.DependsOn[n]
				if !ok || d.Condition != types.ServiceConditionHealthy {
					t.Errorf("does not wait for %s to be healthy: %+v", n, s.DependsOn)
				}
			}
			hc := s.HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Fatalf("no healthcheck")
			}
			_, port, _ := strings.Cut(addr, ":")
			probe := strings.Join(hc.Test, " ")
			if !regexp.MustCompile(`:` + port + `/(healthz|readyz)\b`).MatchString(probe) {
				t.Errorf("healthcheck %q does not probe /healthz or /readyz on the service's port %s", probe, port)
			}
			if p.Services[name].Build == nil && s.Image == "" {
				t.Errorf("neither image nor build")
			}
		})
	}
}

// TestComposeHoldsNoSecret reads compose.yaml without interpolation: every
// password and secret must be a reference to the environment.
func TestComposeHoldsNoSecret(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repo, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range testEnv {
		if strings.Contains(string(raw), v) {
			t.Fatalf("compose.yaml contains a secret literal")
		}
	}
	p, err := load(t, testEnv, func(o *loader.Options) { o.SkipInterpolation = true })
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`^\$\{[A-Z0-9_]+(:?\?[^}]*)?\}$`)
	for name, s := range p.Services {
		for k, v := range s.Environment {
			if v == nil {
				continue
			}
			if strings.Contains(k, "PASSWORD") || strings.Contains(k, "SECRET") {
				if !ref.MatchString(*v) {
					t.Errorf("%s: %s=%q is not a ${VAR:?} reference", name, k, *v)
				}
			}
			if k == "NATS_URL" {
				for _, one := range strings.Split(*v, ",") {
					_, rest, _ := strings.Cut(one, "://")
					userinfo, _, ok := strings.Cut(rest, "@")
					_, pw, hasPW := strings.Cut(userinfo, ":")
					if !ok || !hasPW || !ref.MatchString(pw) {
						t.Errorf("%s: NATS_URL password %q is not a ${VAR} reference", name, pw)
					}
				}
			}
		}
		for _, a := range append(slices.Clone([]string(s.Command)), s.Entrypoint...) {
			if strings.Contains(strings.ToLower(a), "password") || strings.Contains(a, "${") {
				t.Errorf("%s: a secret rides on the command line: %q", name, a)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user string
	cgoOff := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			user = "" // USER is per stage
		case "USER":
			user = f[1]
		case "ENV", "ARG", "RUN":
			if strings.Contains(line, "CGO_ENABLED=0") {
				cgoOff = true
			}
		}
	}
	if len(froms) < 2 {
		t.Errorf("not multi-stage: FROM %v", froms)
	}
	if len(froms) > 0 && !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("build stage %q, want golang:1.26", froms[0])
	}
	final := froms[len(froms)-1]
	if !strings.Contains(final, "distroless") && final != "scratch" {
		t.Errorf("final stage %q is neither distroless nor scratch", final)
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		t.Errorf("final stage runs as %q, want a non-root USER", user)
	}
	if !cgoOff {
		t.Errorf("CGO_ENABLED=0 not set: binaries must be static")
	}
	// Every entrypoint compose.yaml uses is a binary the image builds.
	p := mustLoad(t)
	for name, s := range p.Services {
		if bin := binaryOf(s); bin != "" {
			if _, err := os.Stat(filepath.Join(repo, "cmd", bin)); err != nil {
				t.Errorf("%s runs %s, but there is no cmd/%s", name, s.Entrypoint[0], bin)
			}
			if !strings.HasPrefix(s.Entrypoint[0], "/usr/local/bin/") {
				t.Errorf("%s: entrypoint %q is not where the image installs binaries", name, s.Entrypoint[0])
			}
		}
	}
}
