// Package e2e drives the demo page and the dashboard in a real browser
// (Debian's chromium through chromedp) against devstack started in-process:
// what a user sees, end to end.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/devstack/devstacktest"
	"github.com/beamline/beamline/internal/testutil"
)

// One stack and one browser serve every test of the package: starting them
// costs more than most tests take. Tests run one after another.
var (
	stack    *devstack.Stack
	allocCtx context.Context
	setupErr error
	skipWhy  string
)

func TestMain(m *testing.M) {
	// No goleak here: chromedp keeps package-level goroutines per browser
	// and the browser process itself is outside Go's view anyway.
	os.Exit(run(m))
}

func run(m *testing.M) int {
	chromium := findChromium()
	if chromium == "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "e2e: chromium not found and CI=true: install it (apt-get install chromium)")
			return 1
		}
		skipWhy = "chromium not found (install Debian's chromium; CI fails instead of skipping)"
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "beamline-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	logf, err := os.Create(filepath.Join(artifactsDir(), "e2e-devstack.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	stack, setupErr = devstack.Start(ctx, devstacktest.Config(filepath.Join(tmp, "data"),
		slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	cancel()
	if setupErr != nil {
		fmt.Fprintln(os.Stderr, "e2e: devstack:", setupErr)
		return 1
	}
	defer stack.Close()

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(filepath.Join(tmp, "chromium")),
		chromedp.WindowSize(1280, 800),
	}
	var cancelAlloc context.CancelFunc
	allocCtx, cancelAlloc = chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	// Start the browser once, with a first tab kept open for the whole run.
	// The first Do must not carry a timeout (the browser would live only as
	// long as it), so bound it from outside.
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browserCtx) }()
	select {
	case err = <-started:
	case <-time.After(30 * time.Second):
		err = fmt.Errorf("no browser after 30s")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting chromium:", err)
		return 1
	}
	allocCtx = browserCtx
	return m.Run()
}

func findChromium() string {
	for _, p := range []string{os.Getenv("BEAMLINE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// artifactsDir is $BEAMLINE_ARTIFACTS, else artifacts/ at the repo root.
func artifactsDir() string {
	dir := os.Getenv("BEAMLINE_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
		if wd, err := os.Getwd(); err == nil {
			for d := wd; ; d = filepath.Dir(d) {
				if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
					dir = filepath.Join(d, "artifacts")
					break
				}
				if filepath.Dir(d) == d {
					break
				}
			}
		}
	}
	_ = os.MkdirAll(dir, 0o755)
	return dir
}

// tab is one browser tab with a deadline, whose JS errors fail the test.
type tab struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	log []string
}

func newTab(t *testing.T, timeout time.Duration) *tab {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	ctx, cancel := chromedp.NewContext(allocCtx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	tb := &tab{t: t, ctx: ctx}
	// Uncaught exceptions and console errors in the page fail the test.
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || (m.Type == chromedp.ConsoleError && m.Source == "") {
				tb.record(m.String())
			}
		}
	}()
	t.Cleanup(func() {
		cancelT()
		cancel()
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, l := range tb.log {
			t.Errorf("browser: %s", l)
		}
	})
	return tb
}

func (tb *tab) record(s string) {
	tb.mu.Lock()
	tb.log = append(tb.log, s)
	tb.mu.Unlock()
}

// run runs actions and fails the test (with a screenshot) on error.
func (tb *tab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.screenshot("failed-" + safeName(tb.t.Name()))
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// waitJS polls a JS boolean expression until it is true, bounded by d.
func (tb *tab) waitJS(what, expr string, d time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		tb.screenshot("failed-" + safeName(tb.t.Name()))
		state, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText + " | conn=" + document.getElementById("conn").dataset.state`))
		tb.t.Fatalf("waiting for %s: %v\npage: %s", what, err, state)
	}
}

// tryWaitJS is waitJS that reports a timeout instead of failing.
func (tb *tab) tryWaitJS(expr string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d)))
	return err == nil
}

// eval evaluates a JS expression in the tab and decodes its value.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// screenshot saves a full-page PNG in the artifacts folder.
func (tb *tab) screenshot(name string) string {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(artifactsDir(), name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	tb.t.Logf("screenshot: %s", p)
	return p
}

func safeName(s string) string {
	return strings.NewReplacer("/", "_", " ", "_").Replace(s)
}

// openDemo loads the demo page with the dev token in the fragment, as
// devstack prints it, and waits for the live connection.
func openDemo(t *testing.T, timeout time.Duration) *tab {
	tb := newTab(t, timeout)
	tb.run("open demo page",
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(stack.NotifierURL+"/#token="+stack.Token),
		chromedp.WaitVisible(chromedp.ID("new-job")),
	)
	tb.waitJS("the connection indicator to show live", `document.getElementById("conn").dataset.state === "open"`, 15*time.Second)
	if hash := eval[string](tb, `location.hash`); hash != "" {
		t.Errorf("token left in the address bar: %q", hash)
	}
	return tb
}

// fillForm sets the sim knobs on the demo page.
func fillForm(steps, durationMS, failTimes int, terminal bool) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const f = document.getElementById("new-job");
		f.elements.steps.value = %d;
		f.elements.duration_ms.value = %d;
		f.elements.fail_times.value = %d;
		f.elements.panic_times.value = 0;
		f.elements.terminal.checked = %t;
		delete f.dataset.lastJob;
		return true;
	})()`, steps, durationMS, failTimes, terminal))
}

// submittedJob waits for the page to report the id of the job it submitted.
func (tb *tab) submittedJob() string {
	tb.t.Helper()
	tb.waitJS("the page to accept the job", `!!document.getElementById("new-job").dataset.lastJob`, 10*time.Second)
	return eval[string](tb, `document.getElementById("new-job").dataset.lastJob`)
}

func jobSel(id string) string { return fmt.Sprintf(`li.job[data-job-id=%q]`, id) }

// submitAPI submits a job over HTTP as another service would.
func submitAPI(t *testing.T, input string) string {
	t.Helper()
	body := `{"kind":"image","priority":"normal","input":` + input + `}`
	req, _ := http.NewRequest(http.MethodPost, stack.IngestURL+"/v1/jobs", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+stack.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, b := testutil.Do(t, http.DefaultClient, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %s", resp.StatusCode, b)
	}
	var snap struct{ ID string }
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatal(err)
	}
	return snap.ID
}
