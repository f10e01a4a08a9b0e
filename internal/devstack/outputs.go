package devstack

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/outputs"
	"github.com/beamline/beamline/internal/processor"
)

// keepOutputs makes the processor keep every provider's outputs (the sim's
// PNGs included) and live previews in the outputs bucket, as cmd/processor
// does for Cog and Replicate. Downloads may reach loopback and private
// addresses: devstack's providers are local (a Cog container, the fakes).
// Previews are signed with the stack's secret, which ingest verifies.
func (s *Stack) keepOutputs(js jetstream.JetStream, cfg *processor.Config) error {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	st, err := outputs.CreateStore(ctx, js, outputs.StoreConfig{})
	if err != nil {
		return err
	}
	f, err := outputs.NewFetcher(outputs.FetchConfig{AllowPrivate: true})
	if err != nil {
		return err
	}
	cfg.Outputs = &outputs.Keeper{Store: st, Fetcher: f}
	cfg.Previews = &outputs.Previewer{Store: st, Fetcher: f, Signer: outputs.NewSigner(s.cfg.Secret)}
	return nil
}
