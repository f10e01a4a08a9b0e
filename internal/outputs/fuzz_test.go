package outputs

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzOutputURLs: any bytes are either no result to rewrite or a JSON value
// whose output URLs are found, in order, and a rewrite with a fixed
// replacement keeps it valid JSON with none left.
func FuzzOutputURLs(f *testing.F) {
	for _, s := range []string{`"https://x/y.png"`, `["data:,a",{"b":"http://h/"}]`, `{"a":1}`, `nul`, `"data:`, `[[["https://a b"]]]`, `"\u0064ata:,x"`, `["h\u0074tp://a/", "https://b/"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		urls := OutputURLs(b)
		// The guard that spares Keep and LatestURL the decode never hides
		// an output URL, and LatestURL is the last one.
		if len(urls) > 0 && !mayHoldURL(b) {
			t.Fatalf("mayHoldURL(%q) = false, but it holds %q", b, urls)
		}
		if latest := LatestURL(b); (len(urls) == 0 && latest != "") || (len(urls) > 0 && latest != urls[len(urls)-1]) {
			t.Fatalf("LatestURL = %q, URLs %q", latest, urls)
		}
		v, ok := decode(b)
		if !ok {
			if urls != nil {
				t.Fatalf("URLs from a non-JSON result: %q", urls)
			}
			return
		}
		n := 0
		v = walk(v, func(s string) any {
			if !IsOutputURL(s) || s != urls[n] {
				t.Fatalf("walk %d: %q vs %q", n, s, urls[n])
			}
			n++
			return Output{Output: "0"}
		})
		if n != len(urls) {
			t.Fatalf("%d URLs walked, %d found", n, len(urls))
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if left := OutputURLs(out); len(left) != 0 && !bytes.Equal(out, b) {
			t.Fatalf("URLs left after a rewrite: %q", left)
		}
	})
}

// FuzzDataURL: decoding never panics, respects the cap, and an accepted
// type is on the allowlist.
func FuzzDataURL(f *testing.F) {
	for _, s := range []string{"data:,hi", "data:image/png;base64,iVBORw0KGgo=", "data:;base64,", "data:text/html,x", "data:image/png;base64,-_-_", "data:text/plain;charset=utf-8,%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ct, b, err := decodeDataURL("data:"+s, 64)
		if err != nil {
			return
		}
		if len(b) > 64 {
			t.Fatalf("%d bytes past the cap", len(b))
		}
		if _, err := checkType(ct); err != nil {
			t.Fatalf("stored type %q not allowed: %v", ct, err)
		}
	})
}
