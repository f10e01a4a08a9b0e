package provider_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"strings"
	"testing"

	"github.com/beamline/beamline/internal/provider"
)

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if got := img.Bounds(); got.Dx() != provider.SimImageSize || got.Dy() != provider.SimImageSize {
		t.Fatalf("size %v, want %dx%d", got, provider.SimImageSize, provider.SimImageSize)
	}
	return img
}

// distance is the mean absolute difference per channel of two images.
func distance(a, b image.Image) float64 {
	var sum, n float64
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := b.At(x, y).RGBA()
			for _, d := range []int{int(r1) - int(r2), int(g1) - int(g2), int(b1) - int(b2)} {
				sum += float64(max(d, -d)) / 257
				n++
			}
		}
	}
	return sum / n
}

// SimPNG is a real PNG, the same for the same seed and progress, and it
// comes closer to the final picture as progress grows.
func TestSimPNGSharpensWithProgress(t *testing.T) {
	seed := provider.SimImageSeed("job-1", []byte(`{"prompt":"a lighthouse"}`))
	if !bytes.Equal(provider.SimPNG(seed, 40), provider.SimPNG(seed, 40)) {
		t.Fatal("SimPNG is not deterministic")
	}
	final := decodePNG(t, provider.SimPNG(seed, 100))
	prev := -1.0
	for _, pct := range []int{80, 50, 20, 0} {
		d := distance(decodePNG(t, provider.SimPNG(seed, pct)), final)
		t.Logf("progress %d%%: mean distance to the final picture %.1f", pct, d)
		if d <= prev {
			t.Fatalf("progress %d%% is not further from the final picture (%.1f) than a later one (%.1f)", pct, d, prev)
		}
		prev = d
	}
	other := decodePNG(t, provider.SimPNG(provider.SimImageSeed("job-2", nil), 100))
	if distance(other, final) < 5 {
		t.Fatal("two jobs drew (nearly) the same picture")
	}
}

// A sim job with "image": true hands a preview PNG per step but the last,
// each different, and names the final PNG in its result as a data: URL.
func TestSimImageJobPreviewsAndResult(t *testing.T) {
	p, err := provider.NewSim(provider.SimConfig{Sleep: (&sleepRecorder{}).sleep})
	if err != nil {
		t.Fatal(err)
	}
	var previews []string
	var progress []int
	req := provider.Request{
		Job:      simJob(`{"prompt":"x","sim":{"steps":4,"duration_ms":40,"image":true}}`),
		Attempt:  1,
		Progress: func(pct int) { progress = append(progress, pct) },
		Preview: func(out json.RawMessage) {
			var u string
			if err := json.Unmarshal(out, &u); err != nil {
				t.Fatalf("preview %s is not a JSON string", out)
			}
			previews = append(previews, u)
		},
	}
	res, err := p.Call(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(previews) != 3 || !equalInts(progress, []int{25, 50, 75, 100}) {
		t.Fatalf("previews %d, progress %v; want 3 previews and 25..100", len(previews), progress)
	}
	pngOf := func(u string) []byte {
		const prefix = "data:image/png;base64,"
		if !strings.HasPrefix(u, prefix) {
			t.Fatalf("not a PNG data URL: %.40s…", u)
		}
		b, err := base64.StdEncoding.DecodeString(u[len(prefix):])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var r struct {
		URL     string `json:"url"`
		Attempt int    `json:"attempt"`
	}
	if err := json.Unmarshal(res, &r); err != nil || r.Attempt != 1 {
		t.Fatalf("result %.80s: %v", res, err)
	}
	final := decodePNG(t, pngOf(r.URL))
	prev := -1.0
	for i := len(previews) - 1; i >= 0; i-- {
		d := distance(decodePNG(t, pngOf(previews[i])), final)
		if d <= prev {
			t.Fatalf("preview %d (%.1f from the final) is not blurrier than preview %d (%.1f)", i, d, i+1, prev)
		}
		prev = d
	}

	// Without a Preview hook the job still ends with its picture.
	req.Preview = nil
	res2, err := p.Call(context.Background(), req)
	if err != nil || !bytes.Equal(res, res2) {
		t.Fatalf("second call: %v, same result %v", err, bytes.Equal(res, res2))
	}
}

// A sim job that does not ask for an image draws none: no preview.
func TestSimNoImageNoPreview(t *testing.T) {
	p, _ := provider.NewSim(provider.SimConfig{Sleep: (&sleepRecorder{}).sleep})
	n := 0
	res, err := p.Call(context.Background(), provider.Request{
		Job: simJob(`{"sim":{"steps":3}}`), Attempt: 1,
		Preview: func(json.RawMessage) { n++ },
	})
	if err != nil || n != 0 || !strings.Contains(string(res), "sim://") {
		t.Fatalf("result %s, err %v, previews %d", res, err, n)
	}
}

func BenchmarkSimPNG(b *testing.B) {
	seed := provider.SimImageSeed("job", nil)
	for i := 0; i < b.N; i++ {
		provider.SimPNG(seed, i%100)
	}
}
