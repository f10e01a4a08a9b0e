package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// A job submitted through the page runs to 100% and succeeded, live.
func TestSubmitShowsProgressToSuccess(t *testing.T) {
	tb := openDemo(t, 45*time.Second)
	tb.run("submit", fillForm(4, 1500, 0, false), chromedp.Click(chromedp.ID("submit")))
	id := tb.submittedJob()
	sel := jobSel(id)
	// Progress is visible while it runs, then the bar is full.
	tb.waitJS("the job to start", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.status !== "queued"; })()`, sel), 15*time.Second)
	tb.waitJS("the job to succeed at 100%", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q);
		if (!li || li.dataset.status !== "succeeded") return false;
		const bar = li.querySelector('[role="progressbar"]');
		return bar.getAttribute("aria-valuenow") === "100" && li.querySelector('[data-role="status"]').textContent === "succeeded";
	})()`, sel), 20*time.Second)
	errHidden := eval[bool](tb, fmt.Sprintf(`document.querySelector(%q).querySelector('[data-role="error"]').hidden`, sel))
	if !errHidden {
		t.Error("a succeeded job shows an error")
	}
	tb.screenshot("demo-succeeded")
}

// A job that fails terminally shows failed and its error.
func TestTerminalFailureShowsError(t *testing.T) {
	tb := openDemo(t, 45*time.Second)
	tb.run("submit", fillForm(3, 300, 0, true), chromedp.Click(chromedp.ID("submit")))
	id := tb.submittedJob()
	sel := jobSel(id)
	tb.waitJS("the job to fail with a visible error", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q);
		if (!li || li.dataset.status !== "failed") return false;
		const e = li.querySelector('[data-role="error"]');
		return !e.hidden && e.textContent.length > "Error: ".length && e.offsetHeight > 0;
	})()`, sel), 20*time.Second)
	msg := eval[string](tb, fmt.Sprintf(`document.querySelector(%q).querySelector('[data-role="error"]').textContent`, sel))
	t.Logf("error shown: %q", msg)
	tb.screenshot("demo-failed")
}

// Keyboard only: Tab reaches the submit button in order, Enter submits.
func TestKeyboardSubmit(t *testing.T) {
	tb := openDemo(t, 45*time.Second)
	tb.run("prepare", fillForm(2, 300, 0, false), chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); true`))
	var order []string
	for i := 0; i < 25; i++ {
		tb.run("tab", chromedp.KeyEvent(kb.Tab))
		id := eval[string](tb, `document.activeElement ? (document.activeElement.id || document.activeElement.tagName) : ""`)
		order = append(order, id)
		if id == "submit" {
			break
		}
	}
	if order[len(order)-1] != "submit" {
		t.Fatalf("Tab never reached the submit button; focus went %v", order)
	}
	t.Logf("tab order: %v", order)
	// The focused button has a visible focus style.
	outline := eval[string](tb, `getComputedStyle(document.activeElement).outlineStyle`)
	if outline == "none" || outline == "" {
		t.Errorf("focused submit button has no outline (%q)", outline)
	}
	tb.run("press Enter", chromedp.KeyEvent(kb.Enter))
	id := tb.submittedJob()
	tb.waitJS("the keyboard-submitted job to succeed", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.status === "succeeded"; })()`, jobSel(id)), 20*time.Second)

	// Enter inside a field submits too (a native form).
	tb.run("Enter in a field", fillForm(2, 300, 0, false), chromedp.Focus(chromedp.ID("prompt")), chromedp.KeyEvent(kb.Enter))
	if id2 := tb.submittedJob(); id2 == id {
		t.Fatal("Enter in the prompt field did not submit a new job")
	}
}

// The connection indicator shows reconnecting and recovered around a
// notifier restart, and the job still ends in its final state.
func TestNotifierRestartRecovers(t *testing.T) {
	tb := openDemo(t, 60*time.Second)
	tb.run("submit", fillForm(8, 5000, 0, false), chromedp.Click(chromedp.ID("submit")))
	id := tb.submittedJob()
	sel := jobSel(id)
	tb.waitJS("the job to make progress", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.status === "running" && Number(li.querySelector(".bar").dataset.progress) > 0; })()`, sel), 15*time.Second)

	if err := stack.StopService("notifier"); err != nil {
		t.Fatalf("stop notifier: %v", err)
	}
	tb.waitJS("the indicator to show reconnecting", `document.getElementById("conn").dataset.state === "reconnecting"`, 10*time.Second)
	tb.screenshot("demo-reconnecting")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := stack.StartService(ctx, "notifier"); err != nil {
		t.Fatalf("start notifier: %v", err)
	}
	tb.waitJS("the indicator to show recovered", `document.getElementById("conn").dataset.state === "recovered"`, 20*time.Second)
	text := eval[string](tb, `document.getElementById("conn-text").textContent`)
	t.Logf("indicator: %q", text)
	// WebSockets worked before the restart: the client reconnects on one
	// rather than falling back to long-poll (docs/phoenix-protocol.md#13-the-bundled-client-webbeamlinejs).
	if tr := eval[string](tb, `window.beamline.transport`); tr != "websocket" {
		t.Errorf("transport after the restart = %q, want websocket", tr)
	}
	tb.waitJS("the job's final state after the restart", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q);
		return !!li && li.dataset.status === "succeeded" && li.querySelector(".bar").dataset.progress === "100";
	})()`, sel), 30*time.Second)
	tb.screenshot("demo-recovered")
}

// Screenshots at phone and desktop widths, with jobs in several states; the
// narrow layout must not scroll sideways.
func TestLayoutNarrowAndWide(t *testing.T) {
	tb := openDemo(t, 60*time.Second)
	ok := submitAPI(t, `{"prompt":"a lighthouse at dusk","sim":{"steps":3,"duration_ms":600}}`)
	bad := submitAPI(t, `{"prompt":"an impossible request","sim":{"steps":3,"duration_ms":300,"fail":"terminal"}}`)
	long := submitAPI(t, `{"prompt":"a long render","sim":{"steps":20,"duration_ms":30000}}`)
	retry := submitAPI(t, `{"prompt":"a flaky provider","sim":{"steps":10,"duration_ms":20000,"fail_times":1}}`)
	tb.waitJS("jobs in several states", fmt.Sprintf(`(() => {
		const st = (id) => document.querySelector('li.job[data-job-id="' + id + '"]')?.dataset.status;
		const pr = (id) => Number(document.querySelector('li.job[data-job-id="' + id + '"] .bar')?.dataset.progress || 0);
		return st(%q) === "succeeded" && st(%q) === "failed" && st(%q) === "running" && pr(%q) >= 10 && !!st(%q);
	})()`, ok, bad, long, long, retry), 30*time.Second)

	tb.run("narrow", chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	tb.waitJS("the narrow layout", `window.innerWidth === 375`, 5*time.Second)
	overflow := eval[bool](tb, `document.documentElement.scrollWidth > window.innerWidth + 1`)
	if overflow {
		w := eval[int](tb, `document.documentElement.scrollWidth`)
		t.Errorf("at 375px the page scrolls sideways (scrollWidth %d)", w)
	}
	tb.screenshot("demo-narrow-375")

	tb.run("wide", chromedp.EmulateViewport(1280, 800), chromedp.Evaluate[chromedp.Void](`window.scrollTo(0,0); true`))
	tb.waitJS("the wide layout", `window.innerWidth === 1280`, 5*time.Second)
	overflow = eval[bool](tb, `document.documentElement.scrollWidth > window.innerWidth + 1`)
	if overflow {
		t.Error("at 1280px the page scrolls sideways")
	}
	// The form and the list sit side by side when wide.
	side := eval[bool](tb, `(() => { const a = document.getElementById("new-job").getBoundingClientRect(), b = document.getElementById("jobs-title").getBoundingClientRect(); return b.left > a.right; })()`)
	if !side {
		t.Error("at 1280px the job list is not beside the form")
	}
	tb.screenshot("demo-wide-1280")

	// Cancel the unfinished jobs with their Cancel buttons (by keyboard).
	for _, id := range []string{long, retry} {
		tb.run("cancel "+id, chromedp.Focus(chromedp.CSS(jobSel(id)+" .cancel")), chromedp.KeyEvent(kb.Enter))
		tb.waitJS("the job to show cancelled", fmt.Sprintf(`document.querySelector(%q)?.dataset.status === "cancelled"`, jobSel(id)), 15*time.Second)
	}
}
