package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

const specPath = "../../api/openapi.yaml"

var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// loadSpec loads and validates api/openapi.yaml once.
func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	spec.once.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			spec.err = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			spec.err = err
			return
		}
		// The documented server is devstack's address; tests listen on a
		// random port, so match on paths only.
		doc.Servers = nil
		spec.doc = doc
		spec.router, spec.err = legacy.NewRouter(doc)
	})
	if spec.err != nil {
		t.Fatalf("api/openapi.yaml: %v", spec.err)
	}
	return spec.doc, spec.router
}

func TestOpenAPISpecLoads(t *testing.T) {
	doc, _ := loadSpec(t)
	for _, p := range []string{"/v1/jobs", "/v1/jobs/{id}", "/healthz", "/readyz", "/metrics"} {
		if doc.Paths.Find(p) == nil {
			t.Errorf("spec lacks %s", p)
		}
	}
}

// validatingTransport checks every live answer (status, headers, body)
// against api/openapi.yaml. Answers to routes the spec does not describe
// (the catch-all 404, a 405) must still be the JSON error shape.
type validatingTransport struct {
	t    *testing.T
	next http.RoundTripper
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, nil // a cut-off answer; the test sees the error itself
	}
	v.validate(req, resp, body)
	return resp, nil
}

func (v *validatingTransport) validate(req *http.Request, resp *http.Response, body []byte) {
	doc, router := loadSpec(v.t)
	route, params, err := router.FindRoute(req)
	if err != nil {
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			v.t.Errorf("openapi: %s %s answered %d but the spec has no such route: %v", req.Method, req.URL.Path, resp.StatusCode, err)
			return
		}
		var val any
		if err := json.Unmarshal(body, &val); err != nil {
			v.t.Errorf("openapi: %s %s: %d body is not JSON: %s", req.Method, req.URL.Path, resp.StatusCode, body)
			return
		}
		if err := doc.Components.Schemas["Error"].Value.VisitJSON(val); err != nil {
			v.t.Errorf("openapi: %s %s: %d body is not an Error: %v", req.Method, req.URL.Path, resp.StatusCode, err)
		}
		return
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		v.t.Errorf("openapi: %s %s → %d does not match the spec: %v\nbody: %.300s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
}
