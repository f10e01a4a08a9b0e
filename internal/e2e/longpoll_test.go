package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/beamline/beamline/internal/testutil"
)

// beforeLoad runs script in every document of the tab before the page's
// own scripts (Page.addScriptToEvaluateOnNewDocument).
func beforeLoad(script string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script})
		return chromedp.Void{}, err
	}
}

// With WebSockets unavailable (no WebSocket at all, or one whose every
// handshake fails, as behind a proxy that refuses upgrades) beamline.js
// falls back to Phoenix long-poll (/socket/longpoll) and still delivers
// every event of a job exactly once and in order: seq 1..N, no gap, no
// duplicate. The demo page on the same client shows the job succeed.
func TestLongPollFallbackDeliversEveryEvent(t *testing.T) {
	for _, tc := range []struct {
		name, script string
	}{
		// The browser has no WebSocket: the client starts on long-poll.
		{"no WebSocket", `window.WebSocket = undefined;`},
		// WebSocket exists but every handshake is refused: the official
		// client's fallback switches to long-poll after the error.
		{"WebSocket refused", `(() => {
			const Real = window.WebSocket;
			window.WebSocket = class extends Real {
				constructor(url, protocols) { super(String(url).replace("/socket/websocket", "/refused/websocket"), protocols); }
			};
			try { sessionStorage.clear(); } catch {}
		})();`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTab(t, 60*time.Second)
			tb.run("open demo page without WebSockets",
				beforeLoad(tc.script),
				chromedp.EmulateViewport(1280, 800),
				chromedp.Navigate(stack.NotifierURL+"/#token="+stack.Token),
				chromedp.WaitVisible(chromedp.ID("new-job")),
			)
			tb.waitJS("the demo page to be live over long-poll", `document.getElementById("conn").dataset.state === "open" && window.beamline.transport === "longpoll"`, 20*time.Second)

			// A second client in the page records every callback of the
			// user topic, joined before the job exists.
			tb.run("watch the user's jobs", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(async () => {
				const { connect } = await import("/beamline.js");
				window.seen = [];
				window.probe = connect({ token: %q });
				window.probe.onStatus((s) => { window.probeState = s; });
				window.probe.watchUser((job, info) => window.seen.push({ id: job.id, seq: job.seq, status: job.status, type: info.type }), { includeFinished: true });
			})()`, stack.Token), chromedp.EvalAwaitPromise))
			tb.waitJS("the probe to join over long-poll", `window.probeState === "open" && window.probe.transport === "longpoll"`, 20*time.Second)
			// Give the user topic's join a moment to complete before submitting.
			time.Sleep(300 * time.Millisecond)

			id := submitAPI(t, `{"prompt":"long-poll","sim":{"steps":6,"duration_ms":1200}}`)
			tb.waitJS("the demo page to show the job succeed", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.status === "succeeded"; })()`, jobSel(id)), 30*time.Second)
			tb.waitJS("the probe to see the job succeed", fmt.Sprintf(`window.seen.some((e) => e.id === %q && e.status === "succeeded")`, id), 30*time.Second)

			req, _ := http.NewRequest(http.MethodGet, stack.IngestURL+"/v1/jobs/"+id, nil)
			req.Header.Set("Authorization", "Bearer "+stack.Token)
			resp, b := testutil.Do(t, http.DefaultClient, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET job = %d %s", resp.StatusCode, b)
			}
			var final struct{ Seq int }
			if err := json.Unmarshal(b, &final); err != nil {
				t.Fatal(err)
			}
			seqs := eval[[]int](tb, fmt.Sprintf(`window.seen.filter((e) => e.id === %q).map((e) => e.seq)`, id))
			types := eval[[]string](tb, fmt.Sprintf(`window.seen.filter((e) => e.id === %q).map((e) => e.type)`, id))
			t.Logf("final seq %d; seen seqs %v types %v", final.Seq, seqs, types)
			if len(seqs) != final.Seq || final.Seq < 3 {
				t.Fatalf("saw %d updates %v, want every seq 1..%d", len(seqs), seqs, final.Seq)
			}
			for i, s := range seqs {
				if s != i+1 {
					t.Fatalf("updates %v: position %d has seq %d, want %d (gap, duplicate or reorder)", seqs, i, s, i+1)
				}
			}
			if tr := eval[string](tb, `window.beamline.transport`); tr != "longpoll" {
				t.Errorf("demo client transport = %q, want longpoll", tr)
			}
			tb.run("close the probe", chromedp.Evaluate[chromedp.Void](`window.probe.close()`))
		})
	}
}
