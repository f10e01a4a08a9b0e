package outputs

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"testing"
	"time"
)

// Each preview replaces the job's one preview object; its reference names
// it, and its signed URL verifies and changes with the bytes.
func TestPreviewReplacesAndSigns(t *testing.T) {
	k := newKeeper(t, FetchConfig{})
	signer, err := NewSignerKey([]byte("0123456789abcdef-outputs"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	p := &Previewer{Store: k.Store, Fetcher: k.Fetcher, Signer: signer, Now: func() time.Time { return now }}
	var urls []string
	for i, body := range [][]byte{pattern(1000), pattern(2000)} {
		pv, err := p.Preview(ctxT(t), "job1", "data:image/png;base64,"+base64.StdEncoding.EncodeToString(body))
		if err != nil {
			t.Fatal(err)
		}
		if pv.Output != PreviewName || pv.URL != "/v1/jobs/job1/outputs/preview" || pv.ContentType != "image/png" || pv.Size != int64(len(body)) {
			t.Fatalf("preview %d: %+v", i, pv)
		}
		if got := readAll(t, k.Store, Key("job1", PreviewName)); !bytes.Equal(got, body) {
			t.Fatalf("preview %d: stored %d bytes, want the newest %d", i, len(got), len(body))
		}
		u, err := url.Parse(pv.SignedURL)
		if err != nil || u.Path != pv.URL || pv.ExpiresAt == nil || !pv.ExpiresAt.Equal(now.Add(DefaultPreviewLinkTTL)) {
			t.Fatalf("preview %d: signed URL %q, expires %v", i, pv.SignedURL, pv.ExpiresAt)
		}
		q := u.Query()
		if err := signer.Verify("job1", PreviewName, q.Get("exp"), q.Get("sig"), now); err != nil {
			t.Fatalf("preview %d: %v", i, err)
		}
		urls = append(urls, pv.SignedURL)
	}
	if urls[0] == urls[1] {
		t.Fatal("two previews signed within the same second got the same URL: a browser would keep the first")
	}
	if !ValidName(PreviewName) {
		t.Fatal("the preview's name is not a valid output name")
	}
}

func TestSignerKeyTooShort(t *testing.T) {
	if _, err := NewSignerKey([]byte("short")); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
}

func TestLatestURL(t *testing.T) {
	for in, want := range map[string]string{
		`["https://a/0.png","https://a/1.png"]`: "https://a/1.png",
		`"data:,x"`:                             "data:,x",
		`{"text":"none"}`:                       "",
		`null`:                                  "",
		`"h\u0074tps://a/2.png"`:                "https://a/2.png",
	} {
		if got := LatestURL([]byte(in)); got != want {
			t.Errorf("LatestURL(%s) = %q, want %q", in, got, want)
		}
	}
}
