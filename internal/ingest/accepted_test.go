package ingest

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/pkg/envelope"
)

// marshalLine is what httpx.WriteJSON writes for v: its json.Marshal
// output and a newline, or nothing when v cannot be encoded.
func marshalLine(t *testing.T, v any) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	httpx.WriteJSON(rec, 202, v)
	if rec.Code != 202 {
		return nil
	}
	return rec.Body.Bytes()
}

// checkSnapshotJSON: appendSnapshotJSON writes what WriteJSON writes, or
// declines (and then leaves b as it was).
func checkSnapshotJSON(t *testing.T, snap envelope.Snapshot) (handled bool) {
	t.Helper()
	prefix := []byte("x")
	got, ok := appendSnapshotJSON(prefix, &snap)
	if !ok {
		if string(got) != "x" {
			t.Fatalf("declined but appended %q", got)
		}
		return false
	}
	want := marshalLine(t, snap)
	if string(got[1:]) != string(want) {
		t.Fatalf("snapshot %+v\n got %s\nwant %s", snap, got[1:], want)
	}
	return true
}

func TestAppendSnapshotJSON(t *testing.T) {
	created := time.Date(2026, 12, 6, 7, 1, 2, 345678900, time.UTC)
	job := envelope.Job{ID: "0123456789abcdefghijklmnopq", User: "alice", Kind: "image", Priority: envelope.PriorityHigh, CreatedAt: created}
	queued := envelope.NewSnapshot(job)
	scheduled := envelope.NewScheduledSnapshot(job, created.Add(time.Hour))
	rerun := queued
	rerun.RerunOf = "zyxwvutsrqponmlkjihgfedcba9"
	zoned := queued
	zoned.CreatedAt = created.In(time.FixedZone("x", -(3*3600 + 30*60)))
	zoned.UpdatedAt = time.Time{}
	counts := queued
	counts.Progress, counts.Attempt, counts.Seq = -3, 7, 1<<63+5
	whole := scheduled
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	whole.RunAt = &at
	for name, snap := range map[string]envelope.Snapshot{
		"queued": queued, "scheduled": scheduled, "rerun": rerun, "zoned": zoned, "counts": counts, "whole second": whole,
	} {
		if !checkSnapshotJSON(t, snap) {
			t.Errorf("%s: declined", name)
		}
	}
	// Declined: json.Marshal's work (escaping, fields a fresh job lacks,
	// a time RFC 3339 cannot hold).
	escaped := queued
	escaped.User = `a"<b>&`
	unicode := queued
	unicode.Kind = "bild\u2028"
	result := queued
	result.Result = json.RawMessage(`{"a":1}`)
	failed := queued
	failed.Error = "boom"
	provided := queued
	provided.Provider = "sim"
	far := queued
	far.UpdatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	preview := queued
	preview.Preview = &envelope.Preview{Output: "preview"}
	remote := queued
	remote.Remote = &envelope.RemoteStats{}
	for name, snap := range map[string]envelope.Snapshot{
		"escaped": escaped, "unicode": unicode, "result": result, "error": failed, "provider": provided,
		"year 10000": far, "preview": preview, "remote": remote,
	} {
		if checkSnapshotJSON(t, snap) {
			t.Errorf("%s: encoded by hand", name)
		}
	}
}

// FuzzAppendSnapshotJSON: whatever the snapshot, appendSnapshotJSON writes
// json.Marshal's bytes or declines.
func FuzzAppendSnapshotJSON(f *testing.F) {
	f.Add("0123456789abcdefghijklmnopq", "alice", "image", "normal", "queued", "", 0, 0, uint64(0), int64(1796540000), int64(5), int64(0), false, 0)
	f.Add("id", `a"b`, "k<", "high", "scheduled", "rerun", -1, 3, uint64(9), int64(-62135596800), int64(999999999), int64(253402300800), true, -3600)
	f.Fuzz(func(t *testing.T, id, user, kind, prio, status, rerunOf string, progress, attempt int, seq uint64, sec, nsec, runSec int64, hasRunAt bool, offset int) {
		zone := time.FixedZone("f", offset%(48*3600))
		snap := envelope.Snapshot{ID: id, User: user, Kind: kind, Priority: envelope.Priority(prio), Status: envelope.Status(status),
			Progress: progress, Attempt: attempt, Seq: seq, RerunOf: rerunOf,
			CreatedAt: time.Unix(sec, nsec).In(zone), UpdatedAt: time.Unix(sec/2, 0).UTC()}
		if hasRunAt {
			at := time.Unix(runSec, nsec).UTC()
			snap.RunAt = &at
		}
		checkSnapshotJSON(t, snap)
	})
}
