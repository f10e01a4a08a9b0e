package provider_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/provider/providertest"
)

func newSim(t *testing.T, cfg provider.SimConfig) provider.Provider {
	t.Helper()
	p, err := provider.NewSim(cfg)
	if err != nil {
		t.Fatalf("NewSim: %v", err)
	}
	return p
}

func TestSimConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T, _ providertest.Behaviour) provider.Provider {
		return newSim(t, provider.SimConfig{})
	})
}

// TestHTTPConformance runs the suite against the http provider talking to a
// real local server that acts on each job's input.sim.
func TestHTTPConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T, _ providertest.Behaviour) provider.Provider {
		srv := httptest.NewServer(providertest.SimHandler(newSim(t, provider.SimConfig{})))
		t.Cleanup(srv.Close)
		p, err := provider.NewHTTP(provider.HTTPConfig{URL: srv.URL, Client: srv.Client(), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("NewHTTP: %v", err)
		}
		return p
	})
}
