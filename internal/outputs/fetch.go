package outputs

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// DefaultFetchTimeout bounds one download.
const DefaultFetchTimeout = 2 * time.Minute

// maxRedirects followed by one download.
const maxRedirects = 5

// FetchConfig configures a Fetcher. Zero values are the defaults.
type FetchConfig struct {
	// Timeout bounds one download, from dial to last byte. Default
	// DefaultFetchTimeout.
	Timeout time.Duration
	// MaxBytes caps one output. Default DefaultMaxBytes (100 MiB).
	MaxBytes int64
	// AllowPrivate (development and tests only) allows http and loopback,
	// private, link-local and unspecified addresses.
	AllowPrivate bool
}

// Fetcher downloads outputs.
type Fetcher struct {
	cfg    FetchConfig
	client *http.Client
	// allowDial, set by tests only, lets one address past the guard (a
	// test server stands in for a public host).
	allowDial func(netip.AddrPort) bool
}

// NewFetcher builds a Fetcher whose every connection goes through the
// address guard: it is checked on the IP actually dialled (net.Dialer
// Control), after DNS, on every redirect, so neither DNS rebinding nor a
// redirect to 127.0.0.1 gets past it. No proxy is used (a proxy would dial
// for us, unchecked).
func NewFetcher(cfg FetchConfig) (*Fetcher, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultFetchTimeout
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Timeout < 0 || cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: fetch timeout and max bytes must not be negative", ErrInvalidConfig)
	}
	f := &Fetcher{cfg: cfg}
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: f.control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	f.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return flowTerminal(wrapf(ErrGone, "more than %d redirects", maxRedirects))
			}
			return f.checkScheme(req.URL)
		},
	}
	return f, nil
}

// Close drops idle connections.
func (f *Fetcher) Close() { f.client.CloseIdleConnections() }

// control runs on every dial with the resolved address.
func (f *Fetcher) control(_, address string, _ syscall.RawConn) error {
	if f.cfg.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return flowTerminal(wrapf(ErrForbiddenAddress, "cannot parse dialled address %q", address))
	}
	if f.allowDial != nil && f.allowDial(ap) {
		return nil
	}
	if reason := forbiddenAddr(ap.Addr()); reason != "" {
		return flowTerminal(wrapf(ErrForbiddenAddress, "%s is %s", ap.Addr(), reason))
	}
	return nil
}

var forbiddenPrefixes = []struct {
	p      netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified (this network)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 (may reach IPv4 private space)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (may reach IPv4 private space)"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated private space)"},
	{netip.MustParsePrefix("2002::/16"), "6to4 (may embed an IPv4 private address)"},
}

// forbiddenAddr says why ip may not be dialled, "" if it may.
func forbiddenAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, fp := range forbiddenPrefixes {
		if fp.p.Contains(ip) {
			return fp.reason
		}
	}
	return ""
}

func (f *Fetcher) checkScheme(u *url.URL) error {
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && f.cfg.AllowPrivate:
		return nil
	}
	return flowTerminal(wrapf(ErrForbiddenAddress, "scheme %q not allowed (https only)", u.Scheme))
}

// allowedType reports whether a media type (lower case, no parameters) may
// be stored.
func allowedType(mt string) bool {
	switch {
	case strings.HasPrefix(mt, "image/"), strings.HasPrefix(mt, "video/"), strings.HasPrefix(mt, "audio/"):
		return true
	case mt == "application/json", mt == "text/plain":
		return true
	}
	return false
}

// checkType parses a Content-Type and checks it against the allowlist. It
// returns the value to store.
func checkType(ct string) (string, error) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", flowTerminal(wrapf(ErrForbiddenType, "unparsable content type %q", ct))
	}
	if !allowedType(mt) {
		return "", flowTerminal(wrapf(ErrForbiddenType, "%s (allowed: image/*, video/*, audio/*, application/json, text/plain)", mt))
	}
	if cs, ok := params["charset"]; ok && (mt == "text/plain" || mt == "application/json") {
		return mime.FormatMediaType(mt, map[string]string{"charset": cs}), nil
	}
	return mt, nil
}

// Download is one output being fetched. Close it when done.
type Download struct {
	// ContentType is the output's media type (allowlisted).
	ContentType string
	// Body is the output's bytes; reading past the cap fails with
	// ErrTooLarge, a stalled or cut download with ErrUnavailable.
	Body io.ReadCloser
}

// Fetch starts copying one output: a data: URL is decoded, an http(s) URL
// downloaded within the timeout. Errors wrap the sentinels of errors.go and
// are classified terminal or retryable.
func (f *Fetcher) Fetch(ctx context.Context, raw string) (*Download, error) {
	if strings.HasPrefix(raw, "data:") {
		ct, b, err := decodeDataURL(raw, f.cfg.MaxBytes)
		if err != nil {
			return nil, err
		}
		return &Download{ContentType: ct, Body: io.NopCloser(bytes.NewReader(b))}, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, flowTerminal(wrapf(ErrBadURL, "cannot parse %q", redact(raw)))
	}
	if err := f.checkScheme(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, flowTerminal(wrapf(ErrBadURL, "%v", err))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		cancel()
		return nil, f.classify(ctx, u, err)
	}
	fail := func(err error) (*Download, error) {
		_ = resp.Body.Close()
		cancel()
		return nil, err
	}
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc < 300:
	case sc == http.StatusRequestTimeout || sc == http.StatusTooManyRequests || sc >= 500:
		return fail(flowRetryable(wrapf(ErrUnavailable, "%s answered %d", redactURL(u), sc)))
	default:
		return fail(flowTerminal(wrapf(ErrGone, "%s answered %d", redactURL(u), sc)))
	}
	ct, err := checkType(resp.Header.Get("Content-Type"))
	if err != nil {
		return fail(err)
	}
	if resp.ContentLength > f.cfg.MaxBytes {
		return fail(flowTerminal(wrapf(ErrTooLarge, "%d bytes, cap %d", resp.ContentLength, f.cfg.MaxBytes)))
	}
	return &Download{ContentType: ct, Body: &body{rc: resp.Body, cancel: cancel, ctx: ctx, f: f, u: u, left: f.cfg.MaxBytes}}, nil
}

// classify turns a failed request into a classified error: our own guard
// (the dial Control, CheckRedirect) keeps its terminal class; a timeout or
// any other transport failure is retryable.
func (f *Fetcher) classify(ctx context.Context, u *url.URL, err error) error {
	var te *flow.TerminalError
	switch {
	case errors.As(err, &te):
		return flowTerminal(fmt.Errorf("%s: %w", redactURL(u), te.Err))
	case ctx.Err() != nil:
		return flowRetryable(wrapf(ErrUnavailable, "%s: timed out after %v", redactURL(u), f.cfg.Timeout))
	}
	return flowRetryable(wrapf(ErrUnavailable, "%s: %v", redactURL(u), rootCause(err)))
}

// rootCause is the innermost error's message (no URL with its query).
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// body caps and times out a download.
type body struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
	ctx    context.Context
	f      *Fetcher
	u      *url.URL
	left   int64
}

func (b *body) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, flowTerminal(wrapf(ErrTooLarge, "more than %d bytes", b.f.cfg.MaxBytes))
	}
	if err != nil && err != io.EOF {
		if b.ctx.Err() != nil {
			return n, flowRetryable(wrapf(ErrUnavailable, "%s: timed out after %v", redactURL(b.u), b.f.cfg.Timeout))
		}
		return n, flowRetryable(wrapf(ErrUnavailable, "%s: %v", redactURL(b.u), err))
	}
	return n, err
}

func (b *body) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// redactURL drops the query (signed URLs carry their credentials there).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.Fragment, c.User = "", "", nil
	return c.String()
}

func redact(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// decodeDataURL decodes an RFC 2397 data: URL: data:[<mediatype>][;base64],<data>.
func decodeDataURL(raw string, max int64) (string, []byte, error) {
	rest := strings.TrimPrefix(raw, "data:")
	meta, data, ok := strings.Cut(rest, ",")
	if !ok {
		return "", nil, flowTerminal(wrapf(ErrBadURL, "data: URL without a comma"))
	}
	b64 := false
	if m, ok := strings.CutSuffix(meta, ";base64"); ok {
		meta, b64 = m, true
	}
	if meta == "" || strings.HasPrefix(meta, ";") {
		meta = "text/plain" + meta
	}
	ct, err := checkType(meta)
	if err != nil {
		return "", nil, err
	}
	if b64 {
		if int64(base64.StdEncoding.DecodedLen(len(data))) > max+3 {
			return "", nil, flowTerminal(wrapf(ErrTooLarge, "data: URL of about %d bytes, cap %d", base64.StdEncoding.DecodedLen(len(data)), max))
		}
		b, err := decodeBase64(data)
		if err != nil {
			return "", nil, flowTerminal(wrapf(ErrBadURL, "data: URL: %v", err))
		}
		if int64(len(b)) > max {
			return "", nil, flowTerminal(wrapf(ErrTooLarge, "%d bytes, cap %d", len(b), max))
		}
		return ct, b, nil
	}
	if int64(len(data)) > 3*max {
		return "", nil, flowTerminal(wrapf(ErrTooLarge, "data: URL too long, cap %d bytes", max))
	}
	s, err := url.PathUnescape(data)
	if err != nil {
		return "", nil, flowTerminal(wrapf(ErrBadURL, "data: URL: %v", err))
	}
	if int64(len(s)) > max {
		return "", nil, flowTerminal(wrapf(ErrTooLarge, "%d bytes, cap %d", len(s), max))
	}
	return ct, []byte(s), nil
}

// decodeBase64 takes standard or URL-safe base64, padded or not (Cog writes
// standard padded base64; being lenient costs nothing).
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
