// Package streams embeds the JetStream definitions in this folder: the JOBS,
// EVENTS and DLQ streams, the job_status KV bucket (as its backing stream
// KV_job_status) and the processor's durable consumers. The files are in the
// JSON form that the nats CLI reads, so operators can apply them by hand:
//
//	nats stream add --config streams/jobs.json
//	nats consumer add JOBS --config streams/consumers/proc-normal-image.json
//
// The binaries apply them at start through internal/jsm.
package streams

import "embed"

// FS holds every *.json definition of this folder.
//
//go:embed *.json consumers/*.json processor/*.json
var FS embed.FS

// Stream and bucket names, as written in the files.
const (
	Jobs      = "JOBS"
	Events    = "EVENTS"
	DLQ       = "DLQ"
	JobStatus = "job_status" // KV bucket; backing stream KV_job_status
	// JobIndex holds each user's jobs in acceptance order
	// (jobindex.<user>.<kind>), read newest first by GET /v1/jobs.
	JobIndex = "JOBINDEX"
	// Scheduled holds jobs not due yet (sched.<job>, JetStream message
	// schedules) and their fired copies, which JOBS sources.
	Scheduled = "SCHEDULED"
	// JobHandles is the KV bucket of the handles of remote work
	// (processor/kv_job_handles.json; backing stream KV_job_handles). Only
	// the processor applies and uses it, and only when a provider resumes
	// (provider.Resumer), so it is not among the streams every binary
	// applies.
	JobHandles = "job_handles"
	// Webhooks is the stream of webhook deliveries (webhooks.json). Only
	// ingest (which stores them) and the processor (which reads them)
	// apply it, so it is not among the streams every binary applies either.
	Webhooks = "WEBHOOKS"
)
