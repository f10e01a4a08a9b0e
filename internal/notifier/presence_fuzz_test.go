package notifier

import (
	"encoding/json"
	"testing"
)

// FuzzPresenceInput: what other notifiers publish on beamline.presence.*
// and what clients send as presence params never panics, and whatever is
// accepted is within bounds.
func FuzzPresenceInput(f *testing.F) {
	f.Add([]byte(`{"node":"na","start":1,"seq":1,"kind":"diff","joins":[{"topic":"studio:lab","key":"alice","ref":"r1","meta":{"phx_ref":"r1"}}]}`))
	f.Add([]byte(`{"node":"na","start":1,"seq":2,"kind":"sync","first":true,"last":true}`))
	f.Add([]byte(`{"device":"laptop","presence":{"typing":true}}`))
	f.Add([]byte(`{"presence":[1,2]}`))
	f.Add([]byte(`{"node":"a.b","kind":"hello"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := decodePresMsg(data); err == nil {
			for _, e := range m.Joins {
				if len(e.Meta) > presMaxMeta || !json.Valid(e.Meta) || e.Meta[0] != '{' {
					t.Fatalf("accepted meta %q", e.Meta)
				}
			}
		}
		if !json.Valid(data) {
			return
		}
		pp, reason := parsePresenceParams(data, 256)
		if reason == "" && pp.meta != nil && (len(pp.meta) > 256 || !json.Valid(pp.meta) || pp.meta[0] != '{') {
			t.Fatalf("accepted client meta %q", pp.meta)
		}
		if len(pp.device) > 32 {
			t.Fatalf("accepted device %q", pp.device)
		}
	})
}
