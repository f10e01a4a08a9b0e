// Package envelope is the wire format of Beamline: job and event envelopes in
// CloudEvents 1.0 structured JSON, the token rules for subjects, and the NATS
// headers that travel with every message.
//
// Services that submit jobs without going through ingest's HTTP API publish a
// job envelope to jobs.<priority>.<kind>.<job> built by [NewJobMsg];
// the processor treats such a job exactly like one submitted over HTTP, and
// GET /v1/jobs/{id} reads it (queued) as soon as the PubAck came.
//
// Decoding is strict: unknown spec versions, missing attributes, wrong types
// and oversize payloads are errors (wrapping the sentinels in errors.go),
// never panics. The decoders are fuzzed (see the testdata/fuzz corpus).
package envelope
