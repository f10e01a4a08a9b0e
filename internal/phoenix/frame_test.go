package phoenix

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in    string
		err         error
		addressable bool
	}{
		{"join", `["3","3","job:1","phx_join",{"last_seq":7}]`, nil, true},
		{"heartbeat", `[null,"5","phoenix","heartbeat",{}]`, nil, true},
		{"extra elements ignored", `[null,"5","phoenix","heartbeat",{},1,2]`, nil, true},
		{"not json", `[`, ErrMalformed, false},
		{"object", `{"topic":"x"}`, ErrMalformed, false},
		{"short", `["1","1","t","e"]`, ErrMalformed, false},
		{"numeric ref", `["1",6,"t","e",{}]`, ErrMalformed, false},
		{"numeric join_ref", `[1,"6","t","e",{}]`, ErrMalformed, false},
		{"numeric topic", `["1","6",5,"e",{}]`, ErrMalformed, false},
		{"empty topic", `["1","6","","e",{}]`, ErrMalformed, false},
		{"numeric event", `["1","6","t",5,{}]`, ErrMalformed, true},
		{"null payload", `["1","6","t","e",null]`, ErrPayload, true},
		{"array payload", `["1","6","t","e",[1]]`, ErrPayload, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if f.Addressable() != tc.addressable {
				t.Fatalf("addressable = %v, want %v", f.Addressable(), tc.addressable)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	b := AppendFrame(nil, StrRef("3"), Ref{}, "job:\"x\"", "job", []byte(`{"a":1}`))
	f, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.JoinRef != StrRef("3") || f.Ref.Valid || f.Topic != `job:"x"` || f.Event != "job" || string(f.Payload) != `{"a":1}` {
		t.Fatalf("round trip: %+v", f)
	}
	r := Reply(StrRef("1"), StrRef("2"), "t", "error", ErrorReason("unmatched topic"))
	var v []any
	if err := json.Unmarshal(r, &v); err != nil {
		t.Fatal(err)
	}
	if string(r) != `["1","2","t","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]` {
		t.Fatalf("reply: %s", r)
	}
}

func TestBinary(t *testing.T) {
	in := []byte{0, 1, 1, 5, 3}
	in = append(in, "12job:1bin"...)
	in = append(in, 0xff, 0)
	f, err := DecodeBinary(in)
	if err != nil {
		t.Fatal(err)
	}
	if f.JoinRef.S != "1" || f.Ref.S != "2" || f.Topic != "job:1" || f.Event != "bin" || string(f.Payload) != "\xff\x00" {
		t.Fatalf("%+v", f)
	}
	if _, err := DecodeBinary([]byte{0, 9, 9, 9, 9}); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	r := BinaryReply(StrRef("1"), StrRef("2"), "t", "ok", []byte{7})
	if string(r) != "\x01\x01\x01\x01\x0212tok\x07" {
		t.Fatalf("%q", r)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`["3","3","job:1","phx_join",{"last_seq":7}]`,
		`[null,"5","phoenix","heartbeat",{}]`,
		`[null,null,"t","e",{}]`, `[`, `{}`, `[1,2,3,4,5]`, `["1","1","t","e",null]`,
		`["1","1","t","e",[]]`, `["\u0000","1","t","e",{}]`, "\x00\x01\x01\x01\x01abcd",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err == nil {
			// A decoded frame re-encodes to something that decodes the same.
			again, err := DecodeFrame(AppendFrame(nil, fr.JoinRef, fr.Ref, fr.Topic, fr.Event, fr.Payload))
			if err != nil || again.Topic != fr.Topic || again.Event != fr.Event || again.JoinRef != fr.JoinRef || again.Ref != fr.Ref {
				t.Fatalf("re-encode of %q: %+v, %v", b, again, err)
			}
		}
		_, _ = DecodeBinary(b)
	})
}

func TestTextOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"reply", BinaryReply(StrRef("1"), StrRef("2"), "t", "ok", []byte{0xde, 0xad}), `["1","2","t","phx_reply",{"status":"ok","response":{"binary":"3q0="}}]`},
		{"broadcast", BinaryBroadcast("t", "e", []byte{1}), `[null,null,"t","e",{"binary":"AQ=="}]`},
		{"push", append([]byte{KindPush, 1, 1, 1}, "3te\x07"...), `["3",null,"t","e",{"binary":"Bw=="}]`},
		{"short", []byte{KindReply, 1}, ""},
		{"header past the end", []byte{KindReply, 9, 9, 9, 9, 'x'}, ""},
		{"unknown kind", []byte{7, 0, 0, 0}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TextOf(tc.in); string(got) != tc.want {
				t.Fatalf("TextOf(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzTextOf(f *testing.F) {
	f.Add(BinaryReply(StrRef("1"), StrRef("2"), "t", "ok", []byte{7}))
	f.Add(BinaryBroadcast("t", "e", []byte{1}))
	f.Add(append([]byte{KindPush, 1, 1, 1}, "3te\x07"...))
	f.Add([]byte{KindReply, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		out := TextOf(b)
		if out == nil {
			return
		}
		// What it makes is a V2 JSON frame: five elements, the payload
		// an object.
		var parts []json.RawMessage
		if err := json.Unmarshal(out, &parts); err != nil || len(parts) != 5 || parts[4][0] != '{' {
			t.Fatalf("TextOf(%q) = %s: %v", b, out, err)
		}
	})
}
