package config

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/beamline/beamline/pkg/envelope"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseKinds(t *testing.T) {
	tests := []struct {
		in   string
		want []Kind
	}{
		{"image,video", []Kind{{"image", ""}, {"video", ""}}},
		{"image,video=http", []Kind{{"image", ""}, {"video", "http"}}},
		{"image=sim,video=http", []Kind{{"image", "sim"}, {"video", "http"}}},
		{" image , video = http ", []Kind{{"image", ""}, {"video", "http"}}},
		{"audio", []Kind{{"audio", ""}}},
		{"image,,video,", []Kind{{"image", ""}, {"video", ""}}},
		{"my_kind-2=my-gpus", []Kind{{"my_kind-2", "my-gpus"}}},
		{"image=replicate:black-forest-labs/flux-schnell,video=cog", []Kind{{"image", "replicate:black-forest-labs/flux-schnell"}, {"video", "cog"}}},
		{"image=replicate:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa", []Kind{{"image", "replicate:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"}}},
	}
	for _, tt := range tests {
		got, err := ParseKinds(tt.in)
		if err != nil {
			t.Errorf("ParseKinds(%q) = %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseKinds(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseKindsErrors(t *testing.T) {
	tests := []struct {
		in       string
		tokenErr bool // also wraps envelope.ErrInvalidToken
		name     string
	}{
		{"", false, "empty"},
		{" , ,", false, "only commas"},
		{"image,image", false, "duplicate"},
		{"image,video=http,image=sim", false, "duplicate with provider"},
		{"a.b", true, "dot"},
		{"Image", true, "upper case"},
		{"im age", true, "space inside"},
		{"*", true, "wildcard"},
		{">", true, "gt"},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true, "33 chars"},
		{"=http", true, "no name"},
		{"video=", false, "empty provider"},
		{"video=http=x", false, "two equals"},
		{"video=HTTP", false, "upper-case provider"},
		{"video=a.b", false, "provider with dot"},
		{"image=replicate:", false, "empty provider target"},
		{"image=replicate:Owner/Name", false, "upper-case provider target"},
		{"image=replicate:a b", false, "space in provider target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKinds(tt.in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseKinds(%q) = %+v, %v; want ErrInvalid", tt.in, got, err)
			}
			if tt.tokenErr && !errors.Is(err, envelope.ErrInvalidToken) {
				t.Fatalf("ParseKinds(%q) = %v; want it to wrap envelope.ErrInvalidToken too", tt.in, err)
			}
		})
	}
}

func TestKindNames(t *testing.T) {
	if got := KindNames([]Kind{{"image", ""}, {"video", "http"}}); !reflect.DeepEqual(got, []string{"image", "video"}) {
		t.Errorf("KindNames = %v", got)
	}
	if got := KindNames(nil); len(got) != 0 {
		t.Errorf("KindNames(nil) = %v", got)
	}
}

func TestRegisterDefaultsAndFlags(t *testing.T) {
	t.Setenv("NATS_URL", "nats://u:p@example:4222")
	t.Setenv(EnvKinds, "")
	var c Common
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.Register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://u:p@example:4222" || c.LogFormat != "text" || c.LogLevel != "info" || c.Replicas != 1 || c.Kinds != DefaultKinds {
		t.Fatalf("defaults = %+v", c)
	}
	if c.EventsMaxAge != 24*time.Hour || c.StatusTTL != 7*24*time.Hour || c.DLQMaxAge != 30*24*time.Hour {
		t.Fatalf("default retentions = %+v (streams/ says 24h, 7 days, 30 days)", c)
	}
	ks, err := c.ParsedKinds()
	if err != nil || len(ks) != 2 {
		t.Fatalf("ParsedKinds = %v %v", ks, err)
	}

	t.Setenv(EnvKinds, "audio=http")
	c = Common{}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	c.Register(fs)
	if err := fs.Parse([]string{"-replicas", "3", "-log-format", "json", "-log-level", "debug", "-events-max-age", "2h", "-status-ttl", "36h", "-dlq-max-age", "240h"}); err != nil {
		t.Fatal(err)
	}
	if c.Kinds != "audio=http" || c.Replicas != 3 || c.LogFormat != "json" {
		t.Fatalf("parsed = %+v", c)
	}
	if o := c.StreamOptions(); o.Replicas != 3 || o.EventsMaxAge != 2*time.Hour || o.StatusTTL != 36*time.Hour || o.DLQMaxAge != 240*time.Hour {
		t.Fatalf("stream options = %+v", o)
	}
	if _, err := c.Logger(io.Discard); err != nil {
		t.Fatalf("Logger = %v", err)
	}
	c.LogLevel = "loud"
	if _, err := c.Logger(io.Discard); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Logger(loud) = %v, want ErrInvalid", err)
	}
}

func TestSecret(t *testing.T) {
	t.Setenv("BEAMLINE_TEST_SECRET", "")
	if _, err := Secret("BEAMLINE_TEST_SECRET"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Secret(unset) = %v, want ErrInvalid", err)
	}
	t.Setenv("BEAMLINE_TEST_SECRET", "s3cr3t-value-0123456")
	b, err := Secret("BEAMLINE_TEST_SECRET")
	if err != nil || string(b) != "s3cr3t-value-0123456" {
		t.Fatalf("Secret = %q, %v", b, err)
	}
}
