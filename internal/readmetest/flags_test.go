package readmetest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README.md's flag table from the binaries' --help")

// binaries are the three services the table documents, in column order.
var binaries = []string{"ingest", "processor", "notifier"}

const (
	tableBegin = "<!-- flags:begin -->"
	tableEnd   = "<!-- flags:end -->"
)

// envDoc says what each environment variable is for; a variable a --help
// names that is not here still gets a row, saying which flag it sets.
var envDoc = map[string]string{
	"BEAMLINE_AUTH_SECRET":              "the HS256 token secret, at least 16 bytes; required (never a flag)",
	"NATS_URL":                          "the NATS URL, `user:password@` included; the default of `-nats`",
	"BEAMLINE_KINDS":                    "the default of `-kinds`",
	"BEAMLINE_PROVIDER_URL":             "the default of `-http-url`",
	"REPLICATE_API_TOKEN":               "the Replicate API token of `replicate:<model>` kinds (never a flag)",
	"BEAMLINE_WEBHOOK_KEY":              "the key of the per-job tokens in Cog webhook URLs, shared by ingest and processors; default derived from `$BEAMLINE_AUTH_SECRET`",
	"BEAMLINE_REPLICATE_WEBHOOK_SECRET": "the `whsec_…` signing secret of Replicate's webhooks; unset: `POST /v1/webhooks/replicate` answers 404",
	"BEAMLINE_OUTPUTS_KEY":              "the key of signed output and preview URLs, shared by ingest and processors, so processors can sign preview links without the auth secret; unset: ingest signs with the auth secret and previews carry no signed URL",
	"OTEL_EXPORTER_OTLP_ENDPOINT":       "when set, traces are exported over OTLP/HTTP (and the other `OTEL_EXPORTER_OTLP_*` settings apply)",
}

// alwaysEnv are variables every binary reads that no --help names.
var alwaysEnv = []string{"OTEL_EXPORTER_OTLP_ENDPOINT"}

// flagDoc is one flag as a --help prints it.
type flagDoc struct {
	name, typ, usage, def string
}

var defaultRE = regexp.MustCompile(` \(default ([^()]*|\([^()]*\))\)$`)

// parseHelp reads Go's flag.PrintDefaults output.
func parseHelp(help string) []flagDoc {
	var out []flagDoc
	for _, l := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(l, "  -"):
			f := strings.Fields(l)
			d := flagDoc{name: strings.TrimPrefix(f[0], "-")}
			if len(f) > 1 {
				d.typ = f[1]
			}
			out = append(out, d)
		case strings.HasPrefix(l, "    \t") && len(out) > 0:
			d := &out[len(out)-1]
			d.usage = strings.TrimSpace(d.usage + " " + strings.TrimSpace(l))
		}
	}
	for i := range out {
		if m := defaultRE.FindStringSubmatch(out[i].usage); m != nil {
			out[i].def = strings.Trim(m[1], `"`)
			out[i].usage = strings.TrimSuffix(out[i].usage, m[0])
		}
	}
	return out
}

// helpOf builds a binary and returns its --help, run with an empty
// environment so that no local $NATS_URL or $BEAMLINE_KINDS shows as a
// default.
func helpOf(t *testing.T, dir, name string) string {
	t.Helper()
	root, _ := filepath.Abs(repo)
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = root
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	cmd := exec.Command(bin, "--help")
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", name, err, out)
	}
	return string(out)
}

// md escapes a table cell's text: a pipe would end the cell, <word> would
// be read as an HTML tag and * as emphasis.
func md(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "*", `\*`).Replace(s)
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

// flagTable renders the table from the three --help texts.
func flagTable(helps map[string]string) string {
	flags := map[string]map[string]flagDoc{} // name -> binary -> doc
	env := map[string][]string{}             // variable -> binaries
	for _, b := range binaries {
		for _, d := range parseHelp(helps[b]) {
			if flags[d.name] == nil {
				flags[d.name] = map[string]flagDoc{}
			}
			flags[d.name][b] = d
		}
		for _, m := range regexp.MustCompile(`\$([A-Z][A-Z0-9_]{2,})`).FindAllStringSubmatch(helps[b], -1) {
			if !slices.Contains(env[m[1]], b) {
				env[m[1]] = append(env[m[1]], b)
			}
		}
	}
	for _, v := range alwaysEnv {
		env[v] = slices.Clone(binaries)
	}
	var sb strings.Builder
	sb.WriteString("| flag or variable | ingest | processor | notifier | default | what |\n|---|:-:|:-:|:-:|---|---|\n")
	marks := func(has func(string) bool) string {
		var cells []string
		for _, b := range binaries {
			if has(b) {
				cells = append(cells, "✓")
			} else {
				cells = append(cells, "")
			}
		}
		return strings.Join(cells, " | ")
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range flags {
			if !yield(k) {
				return
			}
		}
	}) {
		per := flags[name]
		var first flagDoc
		var defs []string
		same := true
		for _, b := range binaries {
			d, ok := per[b]
			if !ok {
				continue
			}
			if first.name == "" {
				first = d
			} else if d.def != first.def {
				same = false
			}
			defs = append(defs, b+": "+code(d.def))
		}
		def := code(first.def)
		if !same {
			def = strings.Join(defs, ", ")
		}
		flagName := "-" + name
		if first.typ != "" {
			flagName += " " + first.typ
		}
		fmt.Fprintf(&sb, "| `%s` | %s | %s | %s |\n", md(flagName), marks(func(b string) bool { _, ok := per[b]; return ok }), md(def), md(first.usage))
	}
	for _, v := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		what := envDoc[v]
		if what == "" {
			what = "named by `--help`"
		}
		fmt.Fprintf(&sb, "| `$%s` | %s |  | %s |\n", v, marks(func(b string) bool { return slices.Contains(env[v], b) }), md(what))
	}
	return sb.String()
}

// TestREADMEFlagTable: the table under "Run it in production" lists every
// flag and environment variable of the three binaries, each marked for the
// binaries that take it. -update rewrites it from their --help.
func TestREADMEFlagTable(t *testing.T) {
	need(t, "go")
	dir := t.TempDir()
	helps := map[string]string{}
	for _, b := range binaries {
		helps[b] = helpOf(t, dir, b)
	}
	want := flagTable(helps)
	path := filepath.Join(repo, "README.md")
	text := readme(t)
	begin, end := strings.Index(text, tableBegin), strings.Index(text, tableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README.md lacks %s … %s", tableBegin, tableEnd)
	}
	have := strings.TrimSpace(text[begin+len(tableBegin) : end])
	if *update {
		text = text[:begin+len(tableBegin)] + "\n" + want + text[end:]
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	// Every flag and variable has its row, marked for exactly the
	// binaries that take it (the words may be edited by hand).
	rows := map[string]string{}
	for _, l := range strings.Split(have, "\n") {
		cells := strings.Split(l, " | ")
		if len(cells) > 4 && strings.HasPrefix(cells[0], "| `") {
			key := strings.Fields(strings.Trim(cells[0], "| `"))[0]
			rows[key] = strings.Join(cells[1:4], " | ")
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(want), "\n")[2:] {
		cells := strings.Split(l, " | ")
		key := strings.Fields(strings.Trim(cells[0], "| `"))[0]
		got, ok := rows[key]
		switch {
		case !ok:
			t.Errorf("README's flag table lacks %s (go test ./internal/readmetest -run TestREADMEFlagTable -update)", key)
		case got != strings.Join(cells[1:4], " | "):
			t.Errorf("README's flag table marks %s for %q, want %q (-update rewrites it)", key, got, strings.Join(cells[1:4], " | "))
		}
		delete(rows, key)
	}
	for key := range rows {
		t.Errorf("README's flag table lists %s, which no binary takes", key)
	}
}
