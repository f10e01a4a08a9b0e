package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/testutil"
)

// A job that finished before the page was opened is listed, finished,
// through GET /v1/jobs (the user topic's join only brings active jobs).
func TestDemoListsFinishedJobs(t *testing.T) {
	id := submitAPI(t, `{"prompt":"listed","sim":{"steps":1,"duration_ms":10}}`)
	testutil.WaitFor(t, 20*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, stack.IngestURL+"/v1/jobs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+stack.Token)
		resp, b := testutil.Do(t, http.DefaultClient, req)
		return resp.StatusCode == http.StatusOK && contains(b, `"status":"succeeded"`)
	}, "job ", id, " did not succeed")
	tb := openDemo(t, 45*time.Second)
	tb.waitJS("the finished job to be listed", fmt.Sprintf(`(() => {
		const li = document.querySelector(%q);
		return !!li && li.dataset.status === "succeeded";
	})()`, jobSel(id)), 15*time.Second)
	tb.screenshot("demo-listed")
}

func contains(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}
