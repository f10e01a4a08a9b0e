package beamctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beamline/beamline/internal/httpx"
)

// httpClient bounds every API call; tail's stream has its own lifetime.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// maxAnswer bounds an answer read into memory.
const maxAnswer = 64 << 20

// APIError is an HTTP error answer of the API.
type APIError struct {
	Method, URL string
	Status      int
	Code        string
	Message     string
}

func (e *APIError) Error() string {
	switch {
	case e.Unsupported():
		return fmt.Sprintf("%s %s is not served by this server (HTTP %d): it needs an ingest with this API", e.Method, e.URL, e.Status)
	case e.Code != "":
		return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.URL, e.Status, e.Message)
}

// Unsupported reports whether the server has no such endpoint at all (an
// ingest older than the API beamctl calls), as opposed to a missing job.
func (e *APIError) Unsupported() bool {
	return e.Status == http.StatusMethodNotAllowed ||
		(e.Status == http.StatusNotFound && e.Code == "not_found" && e.Message == "no such route")
}

// exitCode maps an error to the exit code scripts test.
func exitCode(err error) int {
	var ae *APIError
	if !errors.As(err, &ae) {
		return ExitError
	}
	switch {
	case ae.Unsupported():
		return ExitError
	case ae.Status == http.StatusNotFound:
		return ExitNotFound
	case ae.Status == http.StatusUnauthorized, ae.Status == http.StatusForbidden:
		return ExitRefused
	case ae.Status == http.StatusConflict:
		return ExitConflict
	}
	return ExitError
}

// call sends method base+path with the token and body (JSON, when not nil)
// and returns the answer's body; a non-2xx answer is an *APIError.
func (e *env) call(ctx context.Context, method, base, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := base + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token == "" {
		return nil, usagef("no token: pass --token or set $%s (make one with `beamctl token --user U`)", EnvToken)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Method: method, URL: u, Status: resp.StatusCode}
		var eb httpx.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
			ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		} else {
			ae.Message = strings.TrimSpace(string(b))
			if len(ae.Message) > 200 {
				ae.Message = ae.Message[:200] + "…"
			}
		}
		return nil, ae
	}
	return b, nil
}

// api calls ingest (or the gateway).
func (e *env) apiCall(ctx context.Context, method, path string, body any) ([]byte, error) {
	return e.call(ctx, method, e.api, path, body)
}

// pathEscape escapes one path segment (a job id, a schedule name).
func pathEscape(s string) string { return url.PathEscape(s) }
