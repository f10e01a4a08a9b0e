package provider

import (
	"fmt"
	"net/http"
	"strings"
)

// Environment variables read by HTTPConfigFromEnv.
const (
	// EnvHTTPURL is the URL the http provider POSTs to.
	EnvHTTPURL = "BEAMLINE_PROVIDER_URL"
	// EnvHTTPToken, when set, is sent as "Authorization: Bearer <token>".
	// It is a secret: it comes from the environment, never from a flag, and
	// is never logged.
	EnvHTTPToken = "BEAMLINE_PROVIDER_TOKEN"
)

// Config configures whichever provider New builds; only the part for the
// named provider is used.
type Config struct {
	Sim  SimConfig
	HTTP HTTPConfig
	Cog  CogConfig
	// Replicate is the config of every "replicate:<model>" provider; the
	// model comes from the name.
	Replicate ReplicateConfig
}

// Names lists the provider names New accepts.
// A replicate provider is named with its model, "replicate:<model>", so it
// is not among them.
func Names() []string { return []string{"cog", "http", "sim"} }

// Family is the provider name without its model: "replicate" for
// "replicate:owner/name", name itself otherwise. Settings that name
// providers (-outputs-providers) name families.
func Family(name string) string {
	base, _, _ := strings.Cut(name, ":")
	return base
}

// New builds the provider called name: "sim", "http", "cog", or
// "replicate:<model>" (<model> is ReplicateConfig.Model: owner/name, a
// version id or owner/name:version). An unknown name is an error wrapping
// ErrUnknownProvider; an invalid config one wrapping ErrInvalidConfig.
func New(name string, cfg Config) (Provider, error) {
	if base, model, ok := strings.Cut(name, ":"); ok && base == "replicate" {
		rc := cfg.Replicate
		rc.Model = model
		return NewReplicate(rc)
	}
	switch name {
	case "replicate":
		return nil, fmt.Errorf("%w: replicate needs a model: replicate:owner/name or replicate:<version id>", ErrInvalidConfig)
	case "sim":
		return NewSim(cfg.Sim)
	case "http":
		return NewHTTP(cfg.HTTP)
	case "cog":
		return NewCog(cfg.Cog)
	default:
		return nil, fmt.Errorf("%w: %q (want one of %s)", ErrUnknownProvider, name, strings.Join(Names(), ", "))
	}
}

// HTTPConfigFromEnv returns an HTTPConfig with URL from EnvHTTPURL and, when
// EnvHTTPToken is set, an Authorization bearer header. getenv is usually
// os.Getenv.
func HTTPConfigFromEnv(getenv func(string) string) HTTPConfig {
	cfg := HTTPConfig{URL: getenv(EnvHTTPURL)}
	if tok := getenv(EnvHTTPToken); tok != "" {
		cfg.Header = http.Header{"Authorization": []string{"Bearer " + tok}}
	}
	return cfg
}
