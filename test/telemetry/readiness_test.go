package telemetry_test

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/beamline/beamline/internal/devstack"
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
	st := start(t, func(c *devstack.Config) { dir = c.DataDir })
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

	_, portS, _ := net.SplitHostPort(st.NATS.Addr().String())
	port, _ := strconv.Atoi(portS)
	st.NATS.Shutdown()
	st.NATS.WaitForShutdown()
	for _, u := range urls {
		testutil.WaitFor(t, 10*time.Second, func() bool { return ready(u) == http.StatusServiceUnavailable })
	}

	var err error
	again, err = natsx.RunEmbedded(natsx.EmbeddedConfig{Port: port, StoreDir: dir, ServerName: "devstack"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		testutil.WaitFor(t, 20*time.Second, func() bool { return ready(u) == http.StatusOK })
	}
}
