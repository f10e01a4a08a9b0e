package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/beamline/beamline/internal/testutil"
)

// waitJobStatus polls GET /v1/jobs/{id} until the job has status.
func waitJobStatus(t *testing.T, id, status string, d time.Duration) {
	t.Helper()
	testutil.WaitFor(t, d, func() bool {
		req, _ := http.NewRequest(http.MethodGet, stack.IngestURL+"/v1/jobs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+stack.Token)
		resp, b := testutil.Do(t, http.DefaultClient, req)
		return resp.StatusCode == http.StatusOK && contains(b, `"status":"`+status+`"`)
	}, "job ", id, " never ", status)
}

// The dashboard's job view: a user's recent jobs, and a job's timeline
// with every event (a retry included), oldest first, each naming its
// provider and the trace of the request that submitted the job.
func TestDashboardJobTimeline(t *testing.T) {
	if skipWhy != "" {
		t.Skip(skipWhy) // no stack either
	}
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest(http.MethodPost, stack.IngestURL+"/v1/jobs", bytes.NewBufferString(
		`{"kind":"image","priority":"normal","input":{"prompt":"timeline","sim":{"steps":2,"duration_ms":200,"fail_times":1}}}`))
	req.Header.Set("Authorization", "Bearer "+stack.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	resp, b := testutil.Do(t, http.DefaultClient, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %s", resp.StatusCode, b)
	}
	var job struct{ ID string }
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	id := job.ID
	waitJobStatus(t, id, "succeeded", 30*time.Second)
	tb := openAdmin(t, stack.AdminToken, 60*time.Second)
	tb.run("list dev's jobs", chromedp.SetValue(chromedp.CSS("#job-user"), "dev"), chromedp.Click(chromedp.CSS("#job-user-go")))
	tb.waitJS("the job among dev's recent jobs", fmt.Sprintf(`!!document.querySelector('#job-recent button[data-job-id=%q]')`, id), 10*time.Second)
	tb.run("open its timeline", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#job-recent button[data-job-id=%q]`, id))))
	tb.waitJS("a timeline with the retry and the success", `(() => {
		const rows = [...document.querySelectorAll("#job-timeline tbody tr")].map((r) => r.dataset.status);
		return rows.includes("retrying") && rows[rows.length - 1] === "succeeded" && rows.length >= 4;
	})()`, 15*time.Second)
	n := eval[int](tb, `document.querySelectorAll("#job-timeline tbody tr").length`)
	t.Logf("timeline rows: %d", n)
	// Every event the processor wrote names the sim provider and the
	// submitting request's trace.
	rows := eval[[]map[string]string](tb, `[...document.querySelectorAll("#job-timeline tbody tr")].map((r) => ({
		status: r.dataset.status, provider: r.querySelector("td.provider").textContent, trace: r.querySelector("td.trace").textContent }))`)
	for i, r := range rows {
		if r["provider"] != "sim" || r["trace"] != traceID {
			t.Errorf("row %d (%s): provider %q trace %q, want sim and %s", i, r["status"], r["provider"], r["trace"], traceID)
		}
	}
	tb.screenshot("admin-job-timeline")
}

// The dashboard's DLQ view lists a dead job with its reason, and the
// redrive button (after a confirmation naming the count) reruns it.
func TestDashboardDLQRedrive(t *testing.T) {
	id := submitAPI(t, `{"prompt":"doomed","sim":{"steps":1,"duration_ms":10,"fail_times":50}}`)
	waitJobStatus(t, id, "dead", 80*time.Second)
	tb := openAdmin(t, stack.AdminToken, 60*time.Second)
	tb.run("show dev's dead jobs", chromedp.SetValue(chromedp.CSS("#dlq-user"), "dev"), chromedp.Click(chromedp.CSS(`#dlq-form button[type="submit"]`)))
	tb.waitJS("the dead job listed with its reason", fmt.Sprintf(`(() => {
		const tr = document.querySelector('#dlq-table tr[data-job-id=%q]');
		return !!tr && tr.querySelector(".err").textContent.length > 0;
	})()`, id), 10*time.Second)
	tb.run("accept the confirmation", chromedp.Evaluate[chromedp.Void](`window.confirm = (m) => { window.lastConfirm = m; return true; }; true`))
	tb.run("redrive", chromedp.Click(chromedp.CSS("#dlq-redrive")))
	tb.waitJS("the redrive to report", `Number(document.getElementById("dlq-view").dataset.redriven || 0) >= 1`, 15*time.Second)
	msg := eval[string](tb, `window.lastConfirm`)
	if !contains([]byte(msg), "Rerun ") {
		t.Errorf("confirmation %q does not say how many", msg)
	}
	t.Logf("confirmation: %q", msg)
	tb.waitJS("the redriven job gone from the list", fmt.Sprintf(`!document.querySelector('#dlq-table tr[data-job-id=%q]')`, id), 10*time.Second)
	tb.screenshot("admin-dlq")
}

// The dashboard's schedules view lists a user's schedule and deletes it.
func TestDashboardSchedules(t *testing.T) {
	req, _ := http.NewRequest(http.MethodPost, stack.IngestURL+"/v1/schedules",
		bytes.NewBufferString(`{"name":"hourly-e2e","every":"1h","job":{"kind":"image"}}`))
	req.Header.Set("Authorization", "Bearer "+stack.Token)
	req.Header.Set("Content-Type", "application/json")
	if resp, b := testutil.Do(t, http.DefaultClient, req); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/schedules = %d %s", resp.StatusCode, b)
	}
	tb := openAdmin(t, stack.AdminToken, 60*time.Second)
	tb.run("show dev's schedules", chromedp.SetValue(chromedp.CSS("#sched-user"), "dev"), chromedp.Click(chromedp.CSS(`#sched-form button[type="submit"]`)))
	tb.waitJS("the schedule listed", `!!document.querySelector('#sched-table tr[data-name="hourly-e2e"]')`, 10*time.Second)
	tb.run("accept the confirmation", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true; true`))
	tb.run("delete", chromedp.Click(chromedp.CSS(`#sched-table tr[data-name="hourly-e2e"] button`)))
	tb.waitJS("the schedule gone", `!document.querySelector('#sched-table tr[data-name="hourly-e2e"]')`, 10*time.Second)
}

// The dashboard shows each stream's messages, bytes and retention.
func TestDashboardStreams(t *testing.T) {
	tb := openAdmin(t, stack.AdminToken, 30*time.Second)
	tb.waitJS("the streams table", `(() => {
		const rows = [...document.querySelectorAll("#streams-table tbody tr")].map((r) => r.dataset.stream);
		return ["JOBS", "EVENTS", "DLQ", "KV_job_status", "JOBINDEX", "SCHEDULED"].every((s) => rows.includes(s));
	})()`, 10*time.Second)
	kept := eval[string](tb, `document.querySelector('#streams-table tr[data-stream="EVENTS"] td:nth-child(4)').textContent`)
	if kept != "24h0m0s" {
		t.Errorf("EVENTS kept for %q", kept)
	}
}
