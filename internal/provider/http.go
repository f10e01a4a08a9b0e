package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// Defaults of HTTPConfig.
const (
	DefaultHTTPTimeout = 30 * time.Second
	// DefaultHTTPMaxResponse stays below the envelope budget: the result
	// travels in the job's final event (envelope.MaxSize, 1 MiB, with the
	// rest of the snapshot), so a larger body could never be stored. It
	// matches the processor's default MaxResult (900 KiB).
	DefaultHTTPMaxResponse = 900 << 10
)

// errSnippetLen bounds how much of an error response body goes into errors.
const errSnippetLen = 512

// HTTPConfig configures the http provider. Zero values are the documented
// defaults; URL is required.
type HTTPConfig struct {
	// URL receives one POST per attempt. Required; http or https.
	URL string
	// Client sends the requests. Default: a client on a clone of
	// http.DefaultTransport. Its own Timeout, if any, also applies.
	Client *http.Client
	// Timeout bounds how long the provider waits for the remote side: for a
	// plain JSON answer, the whole exchange; for an ndjson stream, the wait
	// for the headers and then for each next line (an idle timeout, so a
	// long job that keeps reporting progress is not cut off). Hitting it is
	// a retryable error wrapping ErrTimeout. Default DefaultHTTPTimeout.
	Timeout time.Duration
	// MaxResponse bounds a successful body (and each ndjson line), in bytes.
	// A larger one is a terminal error wrapping ErrResponseTooLarge: the
	// result could not be stored anyway, and the same input would produce it
	// again. Default DefaultHTTPMaxResponse.
	MaxResponse int64
	// Header is added to every request, e.g. Authorization read from the
	// environment. It is never logged nor put into errors.
	Header http.Header
	// Name is what Name() returns (one circuit breaker per name). Default "http".
	Name string
	// Now is the clock used to turn a Retry-After HTTP-date into a duration.
	// Default time.Now.
	Now func() time.Time
}

// NewHTTP returns the http provider. Each Call POSTs, with Content-Type
// application/json,
//
//	{"job":{"id":..,"user":..,"kind":..,"priority":..},"attempt":N,"input":{...}}
//
// to URL and classifies the answer:
//
//   - 2xx with a JSON body: the body is the job's result. A body that is not
//     valid JSON is a retryable error wrapping ErrInvalidResponse (a provider
//     glitch); a body over MaxResponse is terminal (ErrResponseTooLarge).
//   - 429, 408, 425 and 5xx (and any other non-2xx, non-4xx status):
//     retryable *StatusError, with flow.RetryAfterHint taken from the
//     Retry-After header (delay in seconds or an HTTP-date).
//   - other 4xx: terminal *StatusError carrying a snippet of the body.
//   - no answer (timeout, connection refused or reset, EOF): retryable.
//   - ctx done: ctx.Err(), wrapped retryable.
//
// Progress (optional): a 2xx answer with Content-Type application/x-ndjson is
// read as a stream of JSON lines. Lines {"progress":N} report progress
// (clamped to 0..100; a value below the last one is ignored, so progress
// never goes backwards); the last line ends the call and is either
// {"result":<any JSON>} (success) or {"error":"message","retryable":bool}
// (failure wrapping ErrRemote, terminal unless retryable is true). Empty
// lines are skipped. A stream that ends without such a line, or a line that
// is not valid JSON, is a retryable error wrapping ErrInvalidResponse.
func NewHTTP(cfg HTTPConfig) (Provider, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: http provider URL must be an absolute http(s) URL", ErrInvalidConfig)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: http provider timeout must not be negative", ErrInvalidConfig)
	}
	if cfg.MaxResponse < 0 {
		return nil, fmt.Errorf("%w: http provider max response must not be negative", ErrInvalidConfig)
	}
	p := &httpProvider{
		url:         u.String(),
		client:      cfg.Client,
		timeout:     cfg.Timeout,
		maxResponse: cfg.MaxResponse,
		header:      cfg.Header.Clone(),
		name:        cfg.Name,
		now:         cfg.Now,
	}
	if p.client == nil {
		p.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if p.timeout == 0 {
		p.timeout = DefaultHTTPTimeout
	}
	if p.maxResponse == 0 {
		p.maxResponse = DefaultHTTPMaxResponse
	}
	if p.name == "" {
		p.name = "http"
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

type httpProvider struct {
	url         string
	client      *http.Client
	timeout     time.Duration
	maxResponse int64
	header      http.Header
	name        string
	now         func() time.Time
}

var _ Provider = (*httpProvider)(nil)

func (p *httpProvider) Name() string { return p.name }

// httpRequestBody is what the remote side receives.
type httpRequestBody struct {
	Job     httpJob         `json:"job"`
	Attempt int             `json:"attempt"`
	Input   json.RawMessage `json:"input"`
}

type httpJob struct {
	ID       string            `json:"id"`
	User     string            `json:"user"`
	Kind     string            `json:"kind"`
	Priority envelope.Priority `json:"priority"`
}

// errProviderTimeout is the cancellation cause when Timeout fires.
var errProviderTimeout = errors.New("timeout")

func (p *httpProvider) Call(ctx context.Context, req Request) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, flow.Retryable(fmt.Errorf("http provider: %w", err), 0)
	}
	input := req.Job.Input
	if len(bytes.TrimSpace(input)) == 0 {
		input = json.RawMessage(`{}`)
	}
	body, err := json.Marshal(httpRequestBody{
		Job:     httpJob{ID: req.Job.ID, User: req.Job.User, Kind: req.Job.Kind, Priority: req.Job.Priority},
		Attempt: req.Attempt,
		Input:   input,
	})
	if err != nil {
		// Only an input that is not valid JSON gets here.
		return nil, flow.Terminal(fmt.Errorf("http provider: encode request: %w", err))
	}

	// The timer cancels the call with errProviderTimeout; the ndjson reader
	// resets it on every line.
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(p.timeout, func() { cancel(errProviderTimeout) })
	defer timer.Stop()

	hreq, err := http.NewRequestWithContext(cctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, flow.Terminal(fmt.Errorf("http provider: build request: %w", err))
	}
	for k, vs := range p.header {
		hreq.Header[k] = vs
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json, application/x-ndjson")

	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, p.transportError(ctx, cctx, err)
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, p.statusError(resp)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/x-ndjson" {
		out, err := p.readStream(resp.Body, timer, req.Progress)
		if err != nil && !isClassified(err) {
			err = p.transportError(ctx, cctx, err)
		}
		return out, err
	}
	return p.readResult(ctx, cctx, resp)
}

// readResult reads a plain JSON answer.
func (p *httpProvider) readResult(ctx, cctx context.Context, resp *http.Response) (json.RawMessage, error) {
	if resp.ContentLength > p.maxResponse {
		return nil, flow.Terminal(fmt.Errorf("%w: %d bytes, limit %d", ErrResponseTooLarge, resp.ContentLength, p.maxResponse))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, p.maxResponse+1))
	if err != nil {
		return nil, p.transportError(ctx, cctx, err)
	}
	if int64(len(b)) > p.maxResponse {
		return nil, flow.Terminal(fmt.Errorf("%w: over %d bytes", ErrResponseTooLarge, p.maxResponse))
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, flow.Retryable(fmt.Errorf("%w: http status %d with a body that is not JSON: %s",
			ErrInvalidResponse, resp.StatusCode, snippet(b)), 0)
	}
	return json.RawMessage(b), nil
}

// transportError classifies a failure to get (or finish reading) an answer.
// Everything is retryable; the message says whether the caller's ctx ended,
// the provider's own timeout fired, or the connection failed.
func (p *httpProvider) transportError(ctx, cctx context.Context, err error) error {
	if ctx.Err() != nil {
		return flow.Retryable(fmt.Errorf("http provider: %w", ctx.Err()), 0)
	}
	if errors.Is(context.Cause(cctx), errProviderTimeout) {
		return flow.Retryable(fmt.Errorf("%w: no answer from the http provider within %s", ErrTimeout, p.timeout), 0)
	}
	return flow.Retryable(fmt.Errorf("http provider: %w", err), 0)
}

// statusError classifies a non-2xx answer.
func (p *httpProvider) statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, errSnippetLen+1))
	se := &StatusError{StatusCode: resp.StatusCode, Body: snippet(b)}
	switch c := resp.StatusCode; {
	case c == http.StatusTooManyRequests, c == http.StatusRequestTimeout, c == http.StatusTooEarly,
		c < 400, c > 499:
		return flow.Retryable(se, parseRetryAfter(resp.Header.Get("Retry-After"), p.now()))
	default:
		return flow.Terminal(se)
	}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
// Unparsable, negative or past values give 0 (no hint).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 || secs > int64(365*24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

// snippet makes an error body safe and short to put into an error message.
func snippet(b []byte) string {
	truncated := len(b) > errSnippetLen
	if truncated {
		b = b[:errSnippetLen]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if truncated {
		s += "…"
	}
	return s
}

func isClassified(err error) bool {
	var r *flow.RetryableError
	var t *flow.TerminalError
	return errors.As(err, &r) || errors.As(err, &t)
}
