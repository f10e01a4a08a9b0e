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
}

// Names lists the provider names New accepts.
func Names() []string { return []string{"cog", "http", "sim"} }

// New builds the provider called name ("sim", "http" or "cog"). An unknown name is
// an error wrapping ErrUnknownProvider; an invalid config one wrapping
// ErrInvalidConfig.
func New(name string, cfg Config) (Provider, error) {
	switch name {
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
