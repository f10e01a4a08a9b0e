package telemetry_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/beamline/beamline/internal/devstack"
	"github.com/beamline/beamline/internal/freeport"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/internal/testutil"
)

// /readyz of every binary answers 503 while NATS is gone and 200 again once
// it is back (same port, same store).
func TestReadinessFlipsWithNATS(t *testing.T) {
	var again *server.Server
	t.Cleanup(func() { // after the stack closed (cleanups run last-in first-out)
		if again != nil {
			again.Shutdown()
			again.WaitForShutdown()
		}
	})
	var dir string
	// The server comes back on its port: one outside the ephemeral range,
	// so no client's outgoing connection takes it while NATS is down.
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	st := start(t, func(c *devstack.Config) { dir, c.NATSPort = c.DataDir, port })
	urls := []string{st.IngestURL, st.ProcessorURL, st.NotifierURL}
	ready := func(u string) int {
		resp, err := http.Get(u + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, u := range urls {
		if c := ready(u); c != http.StatusOK {
			t.Fatalf("%s/readyz = %d before the outage", u, c)
		}
	}

	st.NATS.Shutdown()
	st.NATS.WaitForShutdown()
	for _, u := range urls {
		testutil.WaitFor(t, 10*time.Second, func() bool { return ready(u) == http.StatusServiceUnavailable })
	}

	again, err = natsx.RunEmbedded(natsx.EmbeddedConfig{Port: port, StoreDir: dir, ServerName: "devstack"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		testutil.WaitFor(t, 20*time.Second, func() bool { return ready(u) == http.StatusOK })
	}
}
