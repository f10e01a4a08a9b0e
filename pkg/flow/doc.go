// Package flow brings the failure-handling patterns of Erlang/OTP and Elixir
// (supervisors, "let it crash", GenServer-style mailboxes, circuit breakers,
// telemetry spans) to Go as a small, dependency-light library.
//
// It has no knowledge of NATS or of any transport: the Beamline processor
// composes these pieces around JetStream consumers, but every type here works
// on plain functions of the form
//
//	func(ctx context.Context) error
//
// The pieces:
//
//   - [Supervisor] runs children (long-running Run(ctx) error functions),
//     contains their panics, restarts them per [Strategy] and [Restart] type
//     with jittered backoff, and escalates with [ErrRestartIntensity] when
//     they restart too often. A supervisor is itself a child ([Supervisor.Spec]),
//     so supervisors nest into trees. Stopping waits for each child at most
//     its [ChildSpec] Shutdown, then reports it ([ChildAbandoned]).
//   - [Boundary] is an error boundary around one unit of work: it converts
//     panics into [*PanicError] and enforces a deadline ([*TimeoutError]).
//   - [Retryable], [Terminal], [IsTerminal] and [RetryAfterHint] classify
//     failures once, at the boundary, so callers decide between "redeliver
//     later" and "dead-letter now" with errors.As instead of string matching.
//   - [Breaker] is a circuit breaker (on top of sony/gobreaker) whose
//     [Breaker.WaitAllowed] lets a consumer stop pulling work while a
//     downstream provider is down.
//   - [Limiter] and [KeyedLimiter] bound concurrency globally and per key
//     (per-user fairness).
//   - [Mailbox] serialises work per key: messages for one key run one at a
//     time and in order, different keys run in parallel.
//   - [Span] reports the duration and outcome of an operation to an
//     [Observer] (logs, metrics, traces).
//   - [Backoff] computes jittered exponential delays.
//
// Beamline's processor uses [Supervisor] (one-for-one), [Boundary], the
// failure classification, [Breaker], [KeyedLimiter] and [Backoff]. [Mailbox],
// [Limiter], [Span] and the [OneForAll] and [RestForOne] strategies are
// library API that no Beamline binary uses today; each is tested and has a
// runnable example (ExampleStrategy for the strategies).
//
// No part takes a clock: every timing (supervisor backoff and Period,
// shutdown bounds, Boundary timeouts, Mailbox idle timeouts, Breaker open
// timeouts, which gobreaker reads from the wall clock) uses package time.
// Tests fake time with testing/synctest: inside a bubble, time moves only
// when every goroutine of the test is blocked, so a test of a one-minute
// timeout takes no real time and asserts exact durations.
//
// Every goroutine started by this package has an owner that waits for it:
// [Supervisor.Run] and [Mailbox.Run] do not return before the goroutines they
// started have returned. The documented exceptions abandon (but never kill)
// a function that ignores its context: [Boundary.Do] with a Timeout, and
// [Supervisor.Run] stopping a child past its Shutdown.
package flow
