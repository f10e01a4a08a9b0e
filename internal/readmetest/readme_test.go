package readmetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/pkg/envelope"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const repo = "../.."

// block is one fenced shell block of README.md.
type block struct {
	line   int    // 1-based line of its opening fence
	run    bool   // marked <!-- run -->
	reason string // the reason of <!-- not run: reason -->
	text   string
}

var shellFences = map[string]bool{"```sh": true, "```bash": true, "```shell": true, "```console": true}

// shellBlocks reads README's shell blocks and their markers: the last
// non-blank line before a block's fence must be "<!-- run -->" or
// "<!-- not run: <reason> -->".
func shellBlocks(t *testing.T, text string) []block {
	t.Helper()
	lines := strings.Split(text, "\n")
	var out []block
	prev := ""       // the last non-blank line outside a block
	pendingRun := -1 // line of a <!-- run --> not yet followed by a block
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "```") && l != "```" {
			// Find the block's end, whatever its language.
			end := i + 1
			for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
				end++
			}
			if end == len(lines) {
				t.Fatalf("README.md:%d: unclosed fence", i+1)
			}
			if shellFences[l] {
				b := block{line: i + 1, text: strings.Join(lines[i+1:end], "\n")}
				switch {
				case prev == "<!-- run -->":
					b.run = true
				case strings.HasPrefix(prev, "<!-- not run:") && strings.HasSuffix(prev, "-->"):
					b.reason = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(prev, "<!-- not run:"), "-->"))
				}
				out = append(out, b)
			}
			pendingRun = -1
			prev = ""
			i = end
			continue
		}
		if l == "" {
			continue
		}
		if pendingRun >= 0 {
			t.Errorf("README.md:%d: <!-- run --> is not followed by a shell block", pendingRun+1)
			pendingRun = -1
		}
		if l == "<!-- run -->" {
			pendingRun = i
		}
		prev = l
	}
	return out
}

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestREADMEBlocksAreMarked: every shell block says whether the test runs
// it, and why not when it does not.
func TestREADMEBlocksAreMarked(t *testing.T) {
	blocks := shellBlocks(t, readme(t))
	run := 0
	for _, b := range blocks {
		switch {
		case b.run:
			run++
		case b.reason == "":
			t.Errorf("README.md:%d: a shell block marked neither <!-- run --> nor <!-- not run: why -->", b.line)
		}
	}
	if run == 0 {
		t.Error("no shell block of README.md is marked <!-- run -->")
	}
	// The rule itself: an unmarked block, and a marker without a reason,
	// are found.
	fake := shellBlocks(t, "x\n\n```sh\necho a\n```\n<!-- not run: -->\n```sh\necho b\n```\n<!-- run -->\n\n```sh\necho c\n```\n")
	if len(fake) != 3 || fake[0].run || fake[0].reason != "" || fake[1].reason != "" || !fake[2].run {
		t.Errorf("marker parsing: %+v", fake)
	}
}

// need finds a tool on PATH, skipping the test locally when it is missing
// and failing it under CI=true, where .ci/run installs it.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not on PATH (.ci/run installs it)", tool)
		}
		t.Skipf("%s is not on PATH", tool)
	}
	return p
}

// TestREADMECommands pastes every <!-- run --> block of README.md, in
// order, into one bash session against an in-process devstack on which one
// job has already died (so the DLQ commands have something to show).
// README's addresses become devstack's (localhost:8080 its ingest,
// localhost:8090 its notifier, https://beamline.example.com its ingest),
// <the token devstack printed> its dev token; NATS_URL and
// BEAMLINE_AUTH_SECRET are set as an operator's shell would have them, and
// `go install` installs into a temporary folder on PATH. Every command must
// exit 0 (set -e, pipefail) and none may print a JSON error.
func TestREADMECommands(t *testing.T) {
	bash := need(t, "bash")
	for _, tool := range []string{"curl", "jq", "nats", "go"} {
		need(t, tool)
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail -x\n")
	st := devstacktest.Start(t, func(c *devstack.Config) {
		c.Tune.Processor = func(p *processor.Config) {
			p.MaxDeliver = 2
			p.BackoffMin, p.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
		}
	})
	ingest := strings.TrimPrefix(st.IngestURL, "http://")
	notifier := strings.TrimPrefix(st.NotifierURL, "http://")
	subst := strings.NewReplacer(
		"https://beamline.example.com", st.IngestURL,
		"localhost:8080", ingest,
		"localhost:8090", notifier,
		"<the token devstack printed>", st.Token,
	)
	n := 0
	for _, b := range shellBlocks(t, readme(t)) {
		if b.run {
			n++
			fmt.Fprintf(&script, "\n# README.md:%d\n%s\n", b.line, subst.Replace(b.text))
		}
	}
	if n == 0 {
		t.Fatal("no <!-- run --> block")
	}

	// One dead job, as a user who followed the README for a while has.
	dead := devstacktest.Submit(t, st.IngestURL, st.Token, `{"kind":"image","input":{"sim":{"fail_times":100,"duration_ms":1}}}`, nil)
	if s := devstacktest.WaitTerminal(t, st.IngestURL, st.Token, dead.ID, 30*time.Second); s.Status != envelope.StatusDead {
		t.Fatalf("seed job ended %s, want dead", s.Status)
	}

	bin := t.TempDir()
	root, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-c", script.String())
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GOBIN="+bin,
		"GOFLAGS=", // no -race or -mod from the test's environment
		"NATS_URL="+st.NATSURL,
		"NATS_CONTEXT=", // the nats CLI's selected context must not win over NATS_URL
		"BEAMLINE_AUTH_SECRET="+string(devstacktest.Secret),
		"BEAMLINE_NOTIFIER="+st.NotifierURL,
		"BEAMLINE_API=", "BEAMLINE_TOKEN=", "TOKEN=", "ID=",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README commands failed: %v\n--- script ---\n%s\n--- output (bash -x) ---\n%s", err, script.String(), out)
	}
	if strings.Contains(string(out), `{"error":{"code"`) {
		t.Fatalf("a README command printed a JSON error:\n%s", out)
	}
	// What the README says the commands show (issue 16's drift: without
	// -a, `nats stream ls` hides the KV bucket's stream).
	for _, want := range []string{"KV_job_status", "Beamline-Dead-Reason", dead.ID} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the README commands' output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("ran %d README blocks:\n%s", n, out)
}
