package provider_test

import (
	"errors"
	"testing"

	"github.com/beamline/beamline/internal/provider"
)

func TestNew(t *testing.T) {
	p, err := provider.New("sim", provider.Config{})
	if err != nil || p.Name() != "sim" {
		t.Fatalf("New(sim) = %v, %v", p, err)
	}
	p, err = provider.New("http", provider.Config{HTTP: provider.HTTPConfig{URL: "http://127.0.0.1:9/run"}})
	if err != nil || p.Name() != "http" {
		t.Fatalf("New(http) = %v, %v", p, err)
	}
	if _, err := provider.New("http", provider.Config{}); !errors.Is(err, provider.ErrInvalidConfig) {
		t.Errorf("New(http) without URL: err = %v, want ErrInvalidConfig", err)
	}
	for _, name := range []string{"", "modal", "SIM"} {
		if _, err := provider.New(name, provider.Config{}); !errors.Is(err, provider.ErrUnknownProvider) {
			t.Errorf("New(%q): err = %v, want ErrUnknownProvider", name, err)
		}
	}
	for _, name := range provider.Names() {
		cfg := provider.Config{HTTP: provider.HTTPConfig{URL: "http://127.0.0.1:9/"}}
		if _, err := provider.New(name, cfg); err != nil {
			t.Errorf("New(%q) from Names(): %v", name, err)
		}
	}
}

func TestHTTPConfigFromEnv(t *testing.T) {
	env := map[string]string{provider.EnvHTTPURL: "https://gpu.example.com/run", provider.EnvHTTPToken: "tok"}
	cfg := provider.HTTPConfigFromEnv(func(k string) string { return env[k] })
	if cfg.URL != "https://gpu.example.com/run" || cfg.Header.Get("Authorization") != "Bearer tok" {
		t.Errorf("cfg = %+v", cfg)
	}
	cfg = provider.HTTPConfigFromEnv(func(string) string { return "" })
	if cfg.Header != nil {
		t.Errorf("no token: header = %v, want none", cfg.Header)
	}
}

func TestFamily(t *testing.T) {
	for name, want := range map[string]string{
		"replicate:acme/painter":          "replicate",
		"replicate:acme/painter:0123abcd": "replicate",
		"cog":                             "cog",
		"sim":                             "sim",
	} {
		if got := provider.Family(name); got != want {
			t.Errorf("Family(%q) = %q, want %q", name, got, want)
		}
	}
}
