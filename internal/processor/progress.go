package processor

import (
	"sync"
)

// progress turns a provider's Progress calls into progress events without
// slowing the provider down: a call only records the value; one goroutine
// per job at a time stores it, and a burst of calls while it is busy
// collapses into the last value (last one wins, never more than one write in
// flight per job). The goroutine only exists while there is something to
// store.
type progress struct {
	store func(pct int)

	mu      sync.Mutex
	latest  int
	sent    int
	busy    bool
	closed  bool
	flushed sync.WaitGroup
}

func newProgress(store func(int)) *progress { return &progress{store: store, sent: -1} }

// report is the provider's Progress callback.
func (p *progress) report(pct int) {
	pct = min(max(pct, 0), 100)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.latest = pct
	if p.busy || pct == p.sent {
		return
	}
	p.busy = true
	p.flushed.Add(1)
	go p.loop()
}

func (p *progress) loop() {
	defer p.flushed.Done()
	for {
		p.mu.Lock()
		v := p.latest
		if v == p.sent {
			p.busy = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.store(v)
		p.mu.Lock()
		p.sent = v
		p.mu.Unlock()
	}
}

// close ignores later reports (an abandoned provider call may still make
// them) and waits until the last reported value is stored, so that the
// job's final event comes after its last progress event.
func (p *progress) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.flushed.Wait()
}
