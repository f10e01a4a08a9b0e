package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/testutil"
)

// roomToken issues a token for user whose rooms claim names rooms.
func roomToken(t *testing.T, user string, rooms ...string) string {
	t.Helper()
	tok, err := auth.IssueWith(stackSecret(), auth.Principal{User: user, Rooms: auth.RoomsOf(rooms...)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The demo page's studio view: two members of a room see each other in the
// presence list, one's job shows up on the other's page and updates live to
// its end, and a member who closes the page leaves the other's list.
func TestStudioShowsMembersAndTheirJobs(t *testing.T) {
	room := fmt.Sprintf("lab-%d", time.Now().UnixNano()%1e6)
	aliceTok := roomToken(t, "studio-alice", room)
	a := openDemoWith(t, aliceTok)
	b := openDemoWith(t, roomToken(t, "studio-bob", room))
	both := `(() => { const u = [...document.querySelectorAll("#studio-members li")].map((li) => li.dataset.user).sort().join(","); return u === "studio-alice,studio-bob"; })()`
	a.waitJS("alice to see both members", both, 20*time.Second)
	b.waitJS("bob to see both members", both, 20*time.Second)

	// Alice submits over HTTP; her page shares the job with the room.
	body := `{"kind":"image","priority":"normal","input":{"prompt":"studio","sim":{"steps":4,"duration_ms":1500}}}`
	req, _ := http.NewRequest(http.MethodPost, stack.IngestURL+"/v1/jobs", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+aliceTok)
	req.Header.Set("Content-Type", "application/json")
	resp, rb := testutil.Do(t, http.DefaultClient, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %s", resp.StatusCode, rb)
	}
	var snap struct{ ID string }
	if err := json.Unmarshal(rb, &snap); err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf(`#studio-jobs li[data-job-id=%q]`, snap.ID)
	b.waitJS("bob to see alice's job running", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.user === "studio-alice" && li.dataset.status === "running"; })()`, sel), 20*time.Second)
	b.waitJS("bob to see alice's job succeed at 100%", fmt.Sprintf(`(() => { const li = document.querySelector(%q); return !!li && li.dataset.status === "succeeded" && li.querySelector(".bar").dataset.progress === "100"; })()`, sel), 30*time.Second)
	b.screenshot("demo-studio")

	// Alice leaves (closes the page): bob's list drops her, and her jobs.
	a.run("alice leaves the room", evalVoid(`document.getElementById("studio-join").click()`))
	b.waitJS("bob to see alice leave", `(() => { const u = [...document.querySelectorAll("#studio-members li")].map((li) => li.dataset.user).join(","); return u === "studio-bob"; })()`, 20*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#studio-jobs li").length`); n != 0 {
		t.Errorf("bob still shows %d jobs of members who left", n)
	}
}

// A token whose rooms claim does not name the room is refused with a
// sentence, and the page stays usable.
func TestStudioRefusedRoomSaysWhy(t *testing.T) {
	tb := openDemoWith(t, roomToken(t, "studio-carol", "mine"))
	tb.waitJS("carol to be in her own room", `/In room mine/.test(document.getElementById("studio-status").textContent)`, 20*time.Second)
	tb.run("join another room", evalVoid(`(() => {
		document.getElementById("studio-join").click(); // leave "mine"
		document.getElementById("studio-room").value = "theirs";
		document.getElementById("studio-join").click();
	})()`))
	tb.waitJS("the refusal to be explained", `/Cannot join theirs: unauthorized \(the token's rooms claim/.test(document.getElementById("studio-status").textContent)`, 20*time.Second)
}

// evalVoid runs a JS expression for its effect.
func evalVoid(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](expr)
}
