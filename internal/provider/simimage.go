package provider

import (
	"bytes"
	"encoding/base64"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"math"
	"sync"
)

// SimImageSize is the width and height of the sim provider's images.
const SimImageSize = 256

// SimImageSeed is the seed of a job's sim image: its id and input, so that
// every attempt of a job draws the same picture.
func SimImageSeed(job string, input []byte) uint64 {
	h := fnv.New64a()
	h.Write([]byte(job))
	h.Write([]byte{0})
	h.Write(input)
	return h.Sum64()
}

// SimPNG draws the sim provider's picture of seed as it looks at progress
// percent (0..100), encoded as PNG with the standard library: a scene of
// a gradient sky, a sun and hills in colours drawn from the seed, blurred
// and covered with noise that both fade as progress grows — at 100 the
// picture is sharp and noise-free, as a diffusion model's last step. The
// same seed and progress always give the same bytes.
func SimPNG(seed uint64, percent int) []byte {
	p := float64(min(max(percent, 0), 100)) / 100
	img := simScene(seed)
	if r := int(math.Round((1 - p) * 18)); r > 0 {
		boxBlur(img, r)
	}
	if amp := (1 - p) * 110; amp > 0 {
		rng := seed ^ 0x9e3779b97f4a7c15
		for i := 0; i < len(img.Pix); i += 4 {
			rng = xorshift(rng)
			n := (float64(rng>>40)/float64(1<<24) - 0.5) * 2 * amp
			for c := 0; c < 3; c++ {
				img.Pix[i+c] = clamp8(float64(img.Pix[i+c]) + n)
			}
		}
	}
	var buf bytes.Buffer
	buf.Grow(64 << 10)
	enc := png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: pngPool{}}
	_ = enc.Encode(&buf, img) // writing to a bytes.Buffer cannot fail
	return buf.Bytes()
}

// SimPNGDataURL is SimPNG as a data:image/png;base64 URL, the way Cog
// returns a file output.
func SimPNGDataURL(seed uint64, percent int) string {
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(SimPNG(seed, percent))
}

// simScene is the sharp picture of seed.
func simScene(seed uint64) *image.RGBA {
	rng := seed | 1
	next := func() float64 { rng = xorshift(rng); return float64(rng>>11) / float64(1<<53) }
	hue := next()
	sky0 := hsv(hue, 0.55, 0.95)
	sky1 := hsv(math.Mod(hue+0.12, 1), 0.75, 0.55)
	sun := hsv(math.Mod(hue+0.5, 1), 0.6, 1)
	sunX, sunY, sunR := 0.2+0.6*next(), 0.15+0.3*next(), 0.08+0.1*next()
	type hill struct {
		base, amp, freq, phase float64
		c                      color.RGBA
	}
	hills := make([]hill, 3)
	for i := range hills {
		hills[i] = hill{
			base:  0.55 + 0.13*float64(i) + 0.05*next(),
			amp:   0.04 + 0.08*next(),
			freq:  1 + 3*next(),
			phase: 2 * math.Pi * next(),
			c:     hsv(math.Mod(hue+0.3+0.08*float64(i), 1), 0.5+0.15*float64(i), 0.55-0.13*float64(i)),
		}
	}
	const n = SimImageSize
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		fy := float64(y) / n
		for x := 0; x < n; x++ {
			fx := float64(x) / n
			c := lerp(sky0, sky1, fy)
			if d := math.Hypot(fx-sunX, fy-sunY); d < sunR {
				c = sun
			} else if d < sunR*1.6 {
				c = lerp(sun, c, (d-sunR)/(sunR*0.6))
			}
			for _, h := range hills {
				if fy > h.base+h.amp*math.Sin(h.freq*2*math.Pi*fx+h.phase) {
					c = h.c
				}
			}
			o := img.PixOffset(x, y)
			img.Pix[o], img.Pix[o+1], img.Pix[o+2], img.Pix[o+3] = c.R, c.G, c.B, 255
		}
	}
	return img
}

// boxBlur blurs img in place with a (2r+1)² box, as two separable passes
// of running sums (edges clamp).
func boxBlur(img *image.RGBA, r int) {
	n := img.Rect.Dx()
	line := make([]int, 3*n)
	pass := func(at func(i, j int) int) {
		for j := 0; j < n; j++ {
			for i := 0; i < n; i++ {
				o := at(i, j)
				line[3*i], line[3*i+1], line[3*i+2] = int(img.Pix[o]), int(img.Pix[o+1]), int(img.Pix[o+2])
			}
			var s [3]int
			for k := -r; k <= r; k++ {
				i := min(max(k, 0), n-1)
				for c := range s {
					s[c] += line[3*i+c]
				}
			}
			for i := 0; i < n; i++ {
				o := at(i, j)
				for c := range s {
					img.Pix[o+c] = uint8(s[c] / (2*r + 1))
				}
				out, in := min(max(i-r, 0), n-1), min(max(i+r+1, 0), n-1)
				for c := range s {
					s[c] += line[3*in+c] - line[3*out+c]
				}
			}
		}
	}
	pass(func(i, j int) int { return img.PixOffset(i, j) })
	pass(func(i, j int) int { return img.PixOffset(j, i) })
}

func xorshift(x uint64) uint64 {
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	return x
}

func clamp8(v float64) uint8 {
	return uint8(min(max(v, 0), 255))
}

func lerp(a, b color.RGBA, t float64) color.RGBA {
	t = min(max(t, 0), 1)
	f := func(x, y uint8) uint8 { return clamp8(float64(x) + (float64(y)-float64(x))*t) }
	return color.RGBA{f(a.R, b.R), f(a.G, b.G), f(a.B, b.B), 255}
}

// hsv converts hue, saturation and value in 0..1 to a colour.
func hsv(h, s, v float64) color.RGBA {
	i := math.Floor(h * 6)
	f := h*6 - i
	p, q, t := v*(1-s), v*(1-f*s), v*(1-(1-f)*s)
	var r, g, b float64
	switch int(i) % 6 {
	case 0:
		r, g, b = v, t, p
	case 1:
		r, g, b = q, v, p
	case 2:
		r, g, b = p, v, t
	case 3:
		r, g, b = p, q, v
	case 4:
		r, g, b = t, p, v
	default:
		r, g, b = v, p, q
	}
	return color.RGBA{clamp8(r * 255), clamp8(g * 255), clamp8(b * 255), 255}
}

// pngPool reuses the encoder's buffers across images.
type pngPool struct{}

var pngBuffers sync.Pool

func (pngPool) Get() *png.EncoderBuffer {
	b, _ := pngBuffers.Get().(*png.EncoderBuffer)
	return b
}

func (pngPool) Put(b *png.EncoderBuffer) { pngBuffers.Put(b) }
