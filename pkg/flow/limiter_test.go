package flow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/beamline/beamline/pkg/flow"
)

func TestLimiter(t *testing.T) {
	l := flow.NewLimiter(2)
	if !l.TryAcquire() || !l.TryAcquire() || l.TryAcquire() {
		t.Fatal("TryAcquire must succeed exactly twice")
	}
	if l.InUse() != 2 || l.Cap() != 2 {
		t.Fatalf("InUse = %d, Cap = %d", l.InUse(), l.Cap())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire on full limiter with done ctx = %v", err)
	}

	acquired := make(chan error)
	go func() { acquired <- l.Acquire(context.Background()) }()
	l.Release()
	if err := wait(t, "Acquire", acquired); err != nil {
		t.Fatal(err)
	}
	l.Release()
	l.Release()
	if l.InUse() != 0 {
		t.Fatalf("InUse = %d after releasing all", l.InUse())
	}
}

func TestLimiterMisuse(t *testing.T) {
	tests := []struct {
		name string
		fn   func()
	}{
		{"NewLimiter(0)", func() { flow.NewLimiter(0) }},
		{"NewKeyedLimiter(0)", func() { flow.NewKeyedLimiter(0) }},
		{"Release without Acquire", func() { flow.NewLimiter(1).Release() }},
		{"keyed Release without Acquire", func() { flow.NewKeyedLimiter(1).Release("k") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("want panic")
				}
			}()
			tt.fn()
		})
	}
}

func TestKeyedLimiter(t *testing.T) {
	k := flow.NewKeyedLimiter(1)
	if !k.TryAcquire("alice") || k.TryAcquire("alice") || !k.TryAcquire("bob") {
		t.Fatal("per-key bound not enforced independently")
	}
	if k.InUse("alice") != 1 || k.InUse("carol") != 0 || k.Keys() != 2 {
		t.Fatalf("InUse(alice) = %d, Keys = %d", k.InUse("alice"), k.Keys())
	}

	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error)
	go func() { waiting <- k.Acquire(ctx, "alice") }()
	cancel()
	if err := wait(t, "Acquire", waiting); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire = %v, want context.Canceled", err)
	}

	k.Release("alice")
	k.Release("bob")
	if k.Keys() != 0 {
		t.Fatalf("Keys = %d after all released, want 0 (idle keys removed)", k.Keys())
	}
	if k.TryAcquire("x"); k.Keys() != 1 {
		t.Fatal("key not tracked")
	}
	k.Release("x")
}

// Many goroutines on few keys: the per-key bound holds and nothing is left
// behind.
func TestKeyedLimiterConcurrent(t *testing.T) {
	const perKey = 2
	k := flow.NewKeyedLimiter(perKey)
	var inUse [4]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				n := (g + i) % len(inUse)
				key := fmt.Sprint("user-", n)
				if err := k.Acquire(context.Background(), key); err != nil {
					errs <- err
					return
				}
				if v := inUse[n].Add(1); v > perKey {
					errs <- fmt.Errorf("%s: %d holders", key, v)
				}
				inUse[n].Add(-1)
				k.Release(key)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if k.Keys() != 0 {
		t.Errorf("Keys = %d, want 0", k.Keys())
	}
}
