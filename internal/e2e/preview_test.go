package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A job that draws a picture shows it forming: the job's <img> shows each
// live preview the progress events name (each a decodable image, served by
// ingest through a signed URL), then the stored final image.
func TestPreviewFormsThenFinalImage(t *testing.T) {
	tb := openDemo(t, 60*time.Second)
	// Record every src the job images take, as the browser sets them.
	tb.run("watch images", chromedp.Evaluate[chromedp.Void](`(() => {
		window.__srcs = [];
		new MutationObserver((ms) => {
			for (const m of ms) {
				const el = m.target;
				if (el.tagName === "IMG" && el.dataset.role === "image") window.__srcs.push(el.getAttribute("src"));
			}
		}).observe(document.getElementById("jobs"), { subtree: true, attributes: true, attributeFilter: ["src"] });
		return true;
	})()`))
	tb.run("submit", fillForm(5, 4000, 0, false),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("image").checked = true; true`),
		chromedp.Click(chromedp.ID("submit")))
	id := tb.submittedJob()
	sel := jobSel(id)
	img := fmt.Sprintf(`document.querySelector(%q + ' [data-role="image"]')`, sel)

	tb.waitJS("a decoded preview while the job runs", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q), img = %s;
		return !!li && li.dataset.status === "running" && li.dataset.media === "preview" &&
			!img.hidden && img.complete && img.naturalWidth > 0 && img.offsetHeight > 0 &&
			li.querySelector('[data-role="video"]').offsetHeight === 0;
	})()`, sel, img), 20*time.Second)
	first := eval[string](tb, img+`.getAttribute("src")`)
	tb.screenshot("demo-preview")
	tb.waitJS("a newer preview", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q), img = %s;
		return li.dataset.media === "output" || (img.getAttribute("src") !== %q && img.complete && img.naturalWidth > 0);
	})()`, sel, img, first), 20*time.Second)

	tb.waitJS("the final image, decoded", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q), img = %s;
		return li.dataset.status === "succeeded" && li.dataset.media === "output" &&
			img.complete && img.naturalWidth === 256;
	})()`, sel, img), 30*time.Second)
	tb.screenshot("demo-final-image")

	srcs := eval[[]string](tb, `window.__srcs`)
	var previews []string
	for _, s := range srcs {
		if strings.Contains(s, "/v1/jobs/"+id+"/outputs/preview?") && strings.Contains(s, "sig=") {
			if len(previews) == 0 || previews[len(previews)-1] != s {
				previews = append(previews, s)
			}
		}
	}
	last := srcs[len(srcs)-1]
	if len(previews) < 2 || !strings.Contains(last, "/v1/jobs/"+id+"/outputs/0.png?") || !strings.Contains(last, "sig=") {
		t.Fatalf("image sources %q: want two previews or more, then the signed final output", srcs)
	}
	t.Logf("%d previews, then %s", len(previews), last)
}
