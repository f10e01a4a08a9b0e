package kit

import (
	"testing"

	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/processor"
	"github.com/beamline/beamline/internal/provider"
)

// SimProcessorConfig fills in what the in-process test processors share:
// a listener on 127.0.0.1 for /metrics, the one kind "image", and the sim
// provider as the default. The rest of cfg (concurrency, backoff, ...) is
// the test's own.
func SimProcessorConfig(t testing.TB, cfg processor.Config) processor.Config {
	t.Helper()
	sim, err := provider.New("sim", provider.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = Listen(t)
	cfg.Kinds = []config.Kind{{Name: "image"}}
	cfg.Providers = map[string]provider.Provider{sim.Name(): sim}
	cfg.DefaultProvider = sim.Name()
	return cfg
}
