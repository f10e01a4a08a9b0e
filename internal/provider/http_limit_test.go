package provider_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// The default response limit keeps results within the envelope budget: a
// body that fits no final event is refused (terminal) by default, instead of
// being returned, failing to store and rerunning the job until it is dead.
func TestHTTPDefaultMaxResponseFitsTheEnvelope(t *testing.T) {
	if provider.DefaultHTTPMaxResponse >= envelope.MaxSize {
		t.Fatalf("DefaultHTTPMaxResponse %d >= envelope.MaxSize %d", provider.DefaultHTTPMaxResponse, envelope.MaxSize)
	}
	big := `"` + strings.Repeat("a", envelope.MaxSize) + `"`
	p := newHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	}, nil)
	_, err := callHTTP(t, p, nil)
	if !errors.Is(err, provider.ErrResponseTooLarge) || !flow.IsTerminal(err) {
		t.Fatalf("err = %v, want terminal ErrResponseTooLarge", err)
	}
}
