package ingest

import (
	"context"
	"net/http"
)

// Trace context. For now ingest forwards a valid incoming W3C traceparent as
// it is; the telemetry work replaces traceContext (and traceparentOf) with
// OpenTelemetry propagation and spans. Everything else calls only these two.

type traceKey struct{}

// traceContext returns ctx carrying the request's traceparent, if it has a
// valid one (an invalid header is ignored, as W3C Trace Context asks).
func traceContext(ctx context.Context, r *http.Request) context.Context {
	tp := r.Header.Get("traceparent")
	if !validTraceparent(tp) {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, tp)
}

// traceparentOf is the traceparent to put on messages published under ctx.
func traceparentOf(ctx context.Context) string {
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

// validTraceparent checks version-traceid-parentid-flags: lower-case hex of
// 2-32-16-2 digits, version not ff, ids not all zero. Versions after 00 may
// append fields after a '-'.
func validTraceparent(s string) bool {
	if len(s) < 55 || (len(s) > 55 && (s[:2] == "00" || s[55] != '-')) {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if !lowerHex(s[0:2]) || s[0:2] == "ff" || !lowerHex(s[3:35]) || !lowerHex(s[36:52]) || !lowerHex(s[53:55]) {
		return false
	}
	return !allZero(s[3:35]) && !allZero(s[36:52])
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
