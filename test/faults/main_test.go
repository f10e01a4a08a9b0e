package faults

import (
	"net/http"
	"testing"

	"go.uber.org/goleak"

	"github.com/beamline/beamline/test/chaos/kit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kit.LeakOptions()...)
}

// closeIdle ends the keep-alive connections of the readiness polls and the
// test's HTTP client, whose goroutines would otherwise outlive the test.
func closeIdle(hc *http.Client) {
	hc.CloseIdleConnections()
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}
