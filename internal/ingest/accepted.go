package ingest

import (
	"strconv"

	"github.com/beamline/beamline/pkg/envelope"
)

// appendSnapshotJSON appends the JSON of snap, followed by a newline,
// byte for byte what httpx.WriteJSON writes for it (json.Marshal), for the
// snapshots a submission answers with: a job just queued or scheduled,
// which has no result, error, preview, remote telemetry nor provider, and
// whose strings need no escaping (ids, users, kinds, priorities and
// statuses are validated tokens). It returns false, having appended
// nothing, for any other snapshot: that one goes through json.Marshal.
// TestAppendSnapshotJSON and FuzzAppendSnapshotJSON hold it to
// json.Marshal's output.
func appendSnapshotJSON(b []byte, snap *envelope.Snapshot) ([]byte, bool) {
	if snap.Result != nil || snap.Error != "" || snap.Preview != nil || snap.Remote != nil || snap.Provider != "" ||
		!plainJSON(snap.ID) || !plainJSON(snap.User) || !plainJSON(snap.Kind) || !plainJSON(string(snap.Priority)) ||
		!plainJSON(string(snap.Status)) || !plainJSON(snap.RerunOf) {
		return b, false
	}
	// time.Time's MarshalJSON is AppendText within quotes; it refuses
	// what RFC 3339 cannot hold, and so does this (json.Marshal fails).
	var tb [3][48]byte
	created, err := snap.CreatedAt.AppendText(tb[0][:0])
	if err != nil {
		return b, false
	}
	updated, err := snap.UpdatedAt.AppendText(tb[1][:0])
	if err != nil {
		return b, false
	}
	var runAt []byte
	if snap.RunAt != nil {
		if runAt, err = snap.RunAt.AppendText(tb[2][:0]); err != nil {
			return b, false
		}
	}
	b = append(b, `{"id":"`...)
	b = append(b, snap.ID...)
	b = append(b, `","user":"`...)
	b = append(b, snap.User...)
	b = append(b, `","kind":"`...)
	b = append(b, snap.Kind...)
	b = append(b, `","priority":"`...)
	b = append(b, snap.Priority...)
	b = append(b, `","status":"`...)
	b = append(b, snap.Status...)
	b = append(b, `","progress":`...)
	b = strconv.AppendInt(b, int64(snap.Progress), 10)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(snap.Attempt), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, snap.Seq, 10)
	b = append(b, `,"created_at":"`...)
	b = append(b, created...)
	b = append(b, `","updated_at":"`...)
	b = append(b, updated...)
	b = append(b, '"')
	if runAt != nil {
		b = append(b, `,"run_at":"`...)
		b = append(b, runAt...)
		b = append(b, '"')
	}
	if snap.RerunOf != "" {
		b = append(b, `,"rerun_of":"`...)
		b = append(b, snap.RerunOf...)
		b = append(b, '"')
	}
	return append(b, "}\n"...), true
}

// plainJSON reports whether s is written as it is inside a JSON string by
// encoding/json: printable ASCII other than the quote, the backslash and
// the characters it escapes for HTML (<, >, &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x80, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// snapshotJSONSize is enough for a fresh snapshot's JSON with the longest
// tokens Beamline makes.
const snapshotJSONSize = 320
