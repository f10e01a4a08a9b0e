package flow_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// A Transient worker that crashes twice is restarted until it finishes; the
// supervisor returns once no child is left to run.
func ExampleSupervisor() {
	attempts := 0
	worker := flow.ChildSpec{
		Name:    "worker",
		Restart: flow.Transient,
		Run: func(ctx context.Context) error {
			attempts++
			if attempts < 3 {
				return fmt.Errorf("attempt %d failed", attempts)
			}
			return nil
		},
	}
	sup, err := flow.NewSupervisor(flow.SupervisorConfig{
		Name:       "jobs",
		BackoffMin: time.Millisecond,
		BackoffMax: time.Millisecond,
		OnEvent: func(ev flow.SupervisorEvent) {
			fmt.Println(ev.Kind, ev.Child, ev.Err)
		},
	}, worker)
	if err != nil {
		panic(err)
	}
	fmt.Println("Run:", sup.Run(context.Background()))
	// Output:
	// child_started worker <nil>
	// child_exited worker attempt 1 failed
	// child_restarting worker attempt 1 failed
	// child_started worker <nil>
	// child_exited worker attempt 2 failed
	// child_restarting worker attempt 2 failed
	// child_started worker <nil>
	// child_exited worker <nil>
	// Run: <nil>
}

// Supervisors nest: when the inner one gives up, the outer one sees the
// failure and applies its own restart policy.
func ExampleSupervisor_Spec() {
	leaf := flow.ChildSpec{Name: "consumer", Run: func(ctx context.Context) error {
		return errors.New("nats: connection closed")
	}}
	inner, _ := flow.NewSupervisor(flow.SupervisorConfig{Name: "pipeline", MaxRestarts: 1, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond}, leaf)
	outer, _ := flow.NewSupervisor(flow.SupervisorConfig{Name: "app", MaxRestarts: 1, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond}, inner.Spec(flow.Permanent))

	err := outer.Run(context.Background())
	fmt.Println(errors.Is(err, flow.ErrRestartIntensity))
	// Output: true
}

// The three strategies on a pipeline of three stages whose middle stage
// fails once: OneForOne restarts only it, RestForOne it and the stages
// started after it (which depend on it), OneForAll every stage.
func ExampleStrategy() {
	for _, strategy := range []flow.Strategy{flow.OneForOne, flow.RestForOne, flow.OneForAll} {
		var (
			mu     sync.Mutex
			starts = map[string]int{}
			ready  = make(chan struct{}, 6)
		)
		stage := func(name string, failFirst bool) flow.ChildSpec {
			return flow.ChildSpec{Name: name, Run: func(ctx context.Context) error {
				mu.Lock()
				starts[name]++
				n := starts[name]
				mu.Unlock()
				ready <- struct{}{}
				if failFirst && n == 1 {
					return errors.New("connection lost")
				}
				<-ctx.Done()
				return nil
			}}
		}
		sup, _ := flow.NewSupervisor(flow.SupervisorConfig{
			Name: "pipeline", Strategy: strategy,
			BackoffMin: time.Millisecond, BackoffMax: time.Millisecond,
		}, stage("source", false), stage("decode", true), stage("sink", false))

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sup.Run(ctx) }()
		restarted := map[flow.Strategy]int{flow.OneForOne: 1, flow.RestForOne: 2, flow.OneForAll: 3}[strategy]
		for range 3 + restarted {
			<-ready
		}
		cancel()
		err := <-done
		fmt.Printf("%s: source %d, decode %d, sink %d starts; Run: %v\n",
			strategy, starts["source"], starts["decode"], starts["sink"], err)
	}
	// Output:
	// one_for_one: source 1, decode 2, sink 1 starts; Run: <nil>
	// rest_for_one: source 1, decode 2, sink 2 starts; Run: <nil>
	// one_for_all: source 2, decode 2, sink 2 starts; Run: <nil>
}

func ExampleBoundary_Do() {
	b := flow.Boundary{Timeout: 10 * time.Millisecond}
	ctx := context.Background()

	err := b.Do(ctx, func(ctx context.Context) error { panic("nil map") })
	var pe *flow.PanicError
	fmt.Println(errors.As(err, &pe), pe.Value, flow.IsTerminal(err))

	err = b.Do(ctx, func(ctx context.Context) error {
		<-ctx.Done() // a slow provider call
		return ctx.Err()
	})
	var te *flow.TimeoutError
	fmt.Println(errors.As(err, &te), te.Timeout, flow.IsTerminal(err))
	// Output:
	// true nil map false
	// true 10ms false
}

// Classify once at the boundary, decide once at the consumer.
func ExampleIsTerminal() {
	errBadPrompt := errors.New("prompt rejected by provider")
	for _, err := range []error{
		flow.Terminal(errBadPrompt),
		flow.Retryable(errors.New("429 too many requests"), 30*time.Second),
		errors.New("connection reset"),
	} {
		if flow.IsTerminal(err) {
			fmt.Println("dead-letter:", err)
			continue
		}
		delay, ok := flow.RetryAfterHint(err)
		if !ok {
			delay = flow.Backoff(1, time.Second, time.Minute, 0, nil)
		}
		fmt.Println("redeliver in", delay, "after:", err)
	}
	// Output:
	// dead-letter: prompt rejected by provider
	// redeliver in 30s after: 429 too many requests
	// redeliver in 1s after: connection reset
}

func ExampleBreaker() {
	b := flow.NewBreaker(flow.BreakerConfig{
		Name: "modal",
		// Open when at least half of at least 2 calls within the last
		// 10s (the default window) failed.
		MinRequests:  2,
		FailureRatio: 0.5,
		OpenTimeout:  time.Minute,
		OnStateChange: func(name string, from, to flow.BreakerState) {
			fmt.Printf("%s: %v -> %v\n", name, from, to)
		},
	})
	ctx := context.Background()
	down := func(ctx context.Context) error { return errors.New("503 service unavailable") }
	for range 3 {
		err := b.Do(ctx, down)
		fmt.Println(err, errors.Is(err, flow.ErrBreakerOpen))
	}
	// Output:
	// 503 service unavailable false
	// modal: closed -> open
	// 503 service unavailable false
	// flow: circuit breaker is open: modal true
}

// A consumer pauses pulling while the provider's breaker is open.
func ExampleBreaker_WaitAllowed() {
	b := flow.NewBreaker(flow.BreakerConfig{Name: "replicate", ConsecutiveFailures: 1, OpenTimeout: 20 * time.Millisecond})
	ctx := context.Background()
	_ = b.Do(ctx, func(context.Context) error { return errors.New("timeout") })
	fmt.Println(b.State())

	if err := b.WaitAllowed(ctx); err != nil { // returns after ~20ms
		return
	}
	fmt.Println(b.State())
	// Output:
	// open
	// half-open
}

// Per-user fairness: one user cannot take every worker.
func ExampleKeyedLimiter() {
	perUser := flow.NewKeyedLimiter(2)
	for i := range 3 {
		fmt.Println("alice job", i, perUser.TryAcquire("alice"))
	}
	fmt.Println("bob job 0", perUser.TryAcquire("bob"))
	// Output:
	// alice job 0 true
	// alice job 1 true
	// alice job 2 false
	// bob job 0 true
}

func ExampleLimiter() {
	workers := flow.NewLimiter(4)
	ctx := context.Background()
	if err := workers.Acquire(ctx); err != nil {
		return // ctx done while waiting for a slot
	}
	defer workers.Release()
	fmt.Println(workers.InUse(), "of", workers.Cap())
	// Output: 1 of 4
}

// Messages for one user run one at a time and in order; users run in
// parallel.
func ExampleMailbox() {
	mb := flow.NewMailbox[string](flow.MailboxConfig{QueueSize: 8})
	var (
		mu  sync.Mutex
		log = map[string][]int{}
	)
	for i := range 3 {
		for _, user := range []string{"alice", "bob"} {
			_ = mb.Send(context.Background(), user, func(ctx context.Context) {
				mu.Lock()
				defer mu.Unlock()
				log[user] = append(log[user], i)
			})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()        // shut down at once: queued messages still run
	_ = mb.Run(ctx) // returns when every message has run

	users := make([]string, 0, len(log))
	for u := range log {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		fmt.Println(u, log[u])
	}
	// Output:
	// alice [0 1 2]
	// bob [0 1 2]
}

func ExampleSpan() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration" {
				return slog.Attr{} // keep the example's output stable
			}
			return a
		},
	}))
	logSpan := func(ctx context.Context, name string, d time.Duration, err error) {
		logger.InfoContext(ctx, "span", "name", name, "duration", d, "err", err)
	}
	_ = flow.Span(context.Background(), "provider.call", logSpan, func(ctx context.Context) error {
		return errors.New("rate limited")
	})
	// Output:
	// level=INFO msg=span name=provider.call err="rate limited"
}

func ExampleBackoff() {
	for attempt := 1; attempt <= 6; attempt++ {
		fmt.Print(flow.Backoff(attempt, 100*time.Millisecond, 2*time.Second, 0, nil), " ")
	}
	fmt.Println()
	// Output: 100ms 200ms 400ms 800ms 1.6s 2s
}
