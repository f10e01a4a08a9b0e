package flow_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// runMailbox runs m until the test ends, failing it if Run errs.
func runMailbox[K comparable](t *testing.T, m *flow.Mailbox[K]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := wait(t, "Mailbox.Run", done); err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestMailboxSerialPerKeyInOrder(t *testing.T) {
	m := flow.NewMailbox[string](flow.MailboxConfig{QueueSize: 100})
	stop := runMailbox(t, m)

	var (
		mu     sync.Mutex
		got    = map[string][]int{}
		active = map[string]int{}
	)
	for i := range 100 {
		for _, key := range []string{"a", "b", "c"} {
			err := m.Send(context.Background(), key, func(context.Context) {
				mu.Lock()
				active[key]++
				if active[key] > 1 {
					t.Errorf("key %s: %d messages running at once", key, active[key])
				}
				mu.Unlock()

				mu.Lock()
				defer mu.Unlock()
				active[key]--
				got[key] = append(got[key], i)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	stop()
	for key, seq := range got {
		if len(seq) != 100 || !slices.IsSorted(seq) {
			t.Errorf("key %s: got %d messages, sorted=%v", key, len(seq), slices.IsSorted(seq))
		}
	}
}

func TestMailboxKeysRunInParallel(t *testing.T) {
	m := flow.NewMailbox[int](flow.MailboxConfig{})
	runMailbox(t, m)
	bDone, aDone := make(chan struct{}), make(chan struct{})
	ctx := context.Background()
	// a waits for b: this only completes if the keys run in parallel.
	if err := m.Send(ctx, 1, func(context.Context) { <-bDone; close(aDone) }); err != nil {
		t.Fatal(err)
	}
	if err := m.Send(ctx, 2, func(context.Context) { close(bDone) }); err != nil {
		t.Fatal(err)
	}
	wait(t, "key 1", aDone)
}

func TestMailboxFull(t *testing.T) {
	m := flow.NewMailbox[string](flow.MailboxConfig{QueueSize: 2})
	runMailbox(t, m)
	ctx := context.Background()
	running, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	if err := m.Send(ctx, "k", func(context.Context) { close(running); <-release }); err != nil {
		t.Fatal(err)
	}
	wait(t, "first message", running)

	noop := func(context.Context) {}
	tests := []struct {
		key  string
		want error
	}{
		{"k", nil}, {"k", nil}, {"k", flow.ErrMailboxFull}, {"other", nil},
	}
	for i, tt := range tests {
		if err := m.Send(ctx, tt.key, noop); !errors.Is(err, tt.want) {
			t.Errorf("send %d to %s: got %v, want %v", i, tt.key, err, tt.want)
		}
	}
}

func TestMailboxPanicDoesNotKillKey(t *testing.T) {
	panics := make(chan string, 1)
	m := flow.NewMailbox[string](flow.MailboxConfig{
		OnPanic: func(key any, p *flow.PanicError) { panics <- fmt.Sprint(key, ": ", p.Value) },
	})
	runMailbox(t, m)
	ctx := context.Background()
	after := make(chan struct{})
	_ = m.Send(ctx, "k", func(context.Context) { panic("boom") })
	_ = m.Send(ctx, "k", func(context.Context) { close(after) })
	if got := wait(t, "OnPanic", panics); got != "k: boom" {
		t.Errorf("OnPanic got %q", got)
	}
	wait(t, "message after panic", after)
}

func TestMailboxIdleKeysAreRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := flow.NewMailbox[int](flow.MailboxConfig{IdleTimeout: time.Minute})
		runMailbox(t, m)
		var wg sync.WaitGroup
		for key := range 50 {
			wg.Add(1)
			if err := m.Send(context.Background(), key, func(context.Context) { wg.Done() }); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		synctest.Wait()
		if n := m.Len(); n != 50 {
			t.Fatalf("Len = %d before IdleTimeout, want 50 active keys", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := m.Len(); n != 0 {
			t.Fatalf("Len = %d after IdleTimeout, want 0", n)
		}
		// A key that went idle comes back on the next message.
		ran := make(chan struct{})
		_ = m.Send(context.Background(), 7, func(context.Context) { close(ran) })
		wait(t, "message to a revived key", ran)
	})
}

func TestMailboxLifecycle(t *testing.T) {
	m := flow.NewMailbox[string](flow.MailboxConfig{})
	ctx := context.Background()

	// Sent before Run: queued, runs once Run starts.
	ran := make(chan struct{})
	if err := m.Send(ctx, "early", func(context.Context) { close(ran) }); err != nil {
		t.Fatal(err)
	}
	if m.Len() != 1 {
		t.Fatalf("Len = %d, want 1 queued key", m.Len())
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	wait(t, "message sent before Run", ran)

	// Messages queued at shutdown still run, with the cancelled context.
	blocked, release := make(chan struct{}), make(chan struct{})
	_ = m.Send(ctx, "k", func(context.Context) { close(blocked); <-release })
	wait(t, "blocking message", blocked)
	var mu sync.Mutex
	var sawCancelled int
	for range 3 {
		if err := m.Send(ctx, "k", func(ctx context.Context) {
			mu.Lock()
			defer mu.Unlock()
			if ctx.Err() != nil {
				sawCancelled++
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Run(ctx); !errors.Is(err, flow.ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
	cancel()
	close(release)
	if err := wait(t, "Run", done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if sawCancelled != 3 {
		t.Errorf("%d queued messages ran with the cancelled context, want 3", sawCancelled)
	}

	if err := m.Send(ctx, "late", func(context.Context) {}); !errors.Is(err, flow.ErrMailboxClosed) {
		t.Errorf("Send after Run = %v, want ErrMailboxClosed", err)
	}
	if err := m.Run(ctx); !errors.Is(err, flow.ErrMailboxClosed) {
		t.Errorf("Run after Run = %v, want ErrMailboxClosed", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := flow.NewMailbox[int](flow.MailboxConfig{}).Send(cctx, 1, func(context.Context) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with done ctx = %v", err)
	}
}
