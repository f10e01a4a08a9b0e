package envelope_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/beamline/beamline/internal/jsm"
	"github.com/beamline/beamline/internal/natsx"
	"github.com/beamline/beamline/pkg/envelope"
)

// A service submits a job without going through ingest's HTTP API: it builds
// a Job, turns it into a NATS message with NewJobMsg and publishes it to
// JetStream. The PubAck means the job is stored in the JOBS stream; the
// processor picks it up like any job submitted over HTTP, and its status is
// readable at GET /v1/jobs/{id}.
func ExampleNewJobMsg() {
	// Only for this example: an in-process NATS server with the Beamline
	// streams. A real service connects to the cluster instead.
	dir, _ := os.MkdirTemp("", "beamline-example-")
	defer os.RemoveAll(dir)
	srv, err := natsx.RunEmbedded(natsx.EmbeddedConfig{Port: -1, StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := jsm.ApplyStreams(ctx, js, jsm.Options{}); err != nil {
		fmt.Println(err)
		return
	}

	// The part a service writes.
	job := envelope.Job{
		ID:        "render-0001", // unique; also the Nats-Msg-Id, so a retry is de-duplicated
		User:      "alice",
		Kind:      "image",
		Priority:  envelope.PriorityNormal,
		Input:     json.RawMessage(`{"prompt":"a lighthouse at dusk"}`),
		CreatedAt: time.Now().UTC(),
	}
	msg, err := envelope.NewJobMsg(job, "/billing-service", "")
	if err != nil {
		fmt.Println("invalid job:", err)
		return
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		fmt.Println("not stored:", err)
		return
	}
	fmt.Println("subject:", msg.Subject)
	fmt.Println("stored in:", ack.Stream)

	// Publishing the same job again (say, after a timeout) creates no second job.
	msg, _ = envelope.NewJobMsg(job, "/billing-service", "")
	ack, _ = js.PublishMsg(ctx, msg)
	fmt.Println("duplicate:", ack.Duplicate)

	// Output:
	// subject: jobs.normal.image.render-0001
	// stored in: JOBS
	// duplicate: true
}

// A consumer of events.<user>.<job> decodes each message into the job's
// snapshot after the change; the Beamline-Seq header tells the order without
// decoding.
func ExampleDecodeEvent() {
	// What the processor publishes when job render-0001 reaches 50%.
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	snap := envelope.Snapshot{
		ID: "render-0001", User: "alice", Kind: "image", Priority: envelope.PriorityNormal,
		Status: envelope.StatusRunning, Progress: 50, Attempt: 1, Seq: 3,
		CreatedAt: created, UpdatedAt: created.Add(2 * time.Second),
	}
	msg, err := envelope.NewEventMsg(envelope.TypeProgress, snap, "/beamline/processor", "")
	if err != nil {
		fmt.Println(err)
		return
	}

	// What a subscriber does with msg.
	seq, _ := envelope.SeqOf(msg.Header)
	e, s, err := envelope.DecodeEvent(msg.Data)
	if err != nil {
		fmt.Println("bad event:", err)
		return
	}
	fmt.Println(msg.Subject, seq)
	fmt.Println(e.ID, e.Type.Short())
	fmt.Println(s.Status, s.Progress, s.Status.Terminal())

	// Output:
	// events.alice.render-0001 3
	// render-0001:3 progress
	// running 50 false
}

// Strict decoding: errors wrap sentinels, so callers classify with errors.Is.
func ExampleDecode() {
	_, err := envelope.Decode([]byte(`{"specversion":"0.3","id":"x"}`))
	fmt.Println(err)
	// Output:
	// envelope: unsupported specversion: specversion: "0.3", want "1.0"
}

// The subjects of one job across the pipeline. A notifier watching a user's
// jobs subscribes to the live copy of the user's event subjects, and tells a
// job topic from a user topic with IsJobEventSubject.
func ExampleEventSubject() {
	job := envelope.JobMsgSubject(envelope.PriorityHigh, "image", "render-0001")
	fmt.Println(job)
	p, kind, id, _ := envelope.ParseJobSubject(job)
	fmt.Println(p, kind, id)

	ev := envelope.EventSubject("alice", "render-0001")
	fmt.Println(ev, envelope.IsJobEventSubject(ev))
	user := envelope.UserEventsSubject("alice")
	fmt.Println(user, envelope.IsJobEventSubject(user))
	fmt.Println(envelope.LiveSubject(user))
	stored, _ := envelope.EventSubjectOfLive(envelope.LiveSubject(ev))
	fmt.Println(stored)

	fmt.Println(envelope.CancelSubject("alice", "render-0001"))
	fmt.Println(envelope.DLQSubject("image"), envelope.DLQMarkerKey("render-0001"))
	// Output:
	// jobs.high.image.render-0001
	// high image render-0001
	// events.alice.render-0001 true
	// events.alice.* false
	// live.events.alice.*
	// events.alice.render-0001
	// cancel.alice.render-0001
	// dlq.image dlq.render-0001
}
