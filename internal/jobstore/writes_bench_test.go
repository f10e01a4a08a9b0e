package jobstore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/streams"
)

// BenchmarkJobWrites runs a no-op job's three writes (claim, outcome,
// event) from 64 goroutines, through nats.go's KeyValue and PublishMsg
// ("natsgo") and through the store's own path ("natsx": natsx.Publish,
// PubAcks read by hand), against an in-process server. It measures the
// client's share of the pipeline's cost per job (BENCHMARKS.md, run O).
func BenchmarkJobWrites(b *testing.B) {
	for _, mode := range []string{"natsgo", "natsx"} {
		b.Run(mode, func(b *testing.B) {
			_, _, js := natstest.StartWithStreams(b)
			ctx := context.Background()
			kv, err := js.KeyValue(ctx, streams.JobStatus)
			if err != nil {
				b.Fatal(err)
			}
			s := New(js, kv, Config{})
			var wg sync.WaitGroup
			per := b.N/64 + 1
			b.ResetTimer()
			for g := range 64 {
				wg.Go(func() {
					for i := range per {
						key := fmt.Sprintf("k%d-%d", g, i)
						ev := &nats.Msg{Subject: "events.u.", Header: nats.Header{}, Data: []byte(`{"a":2}`)}
						ev.Subject += key
						ev.Header.Set(jetstream.MsgIDHeader, key+":1")
						var err error
						if mode == "natsgo" {
							var rev uint64
							if rev, err = kv.Create(ctx, key, []byte(`{"a":1}`)); err == nil {
								if _, err = kv.Update(ctx, key, []byte(`{"a":2}`), rev); err == nil {
									_, err = js.PublishMsg(ctx, ev)
								}
							}
						} else {
							var rev uint64
							if rev, err = s.put(ctx, key, []byte(`{"a":1}`), 0); err == nil {
								if _, err = s.put(ctx, key, []byte(`{"a":2}`), rev); err == nil {
									_, err = natsx.Publish(ctx, js.Conn(), ev)
								}
							}
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
