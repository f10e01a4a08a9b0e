package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Result is one measured figure, printed as one JSON line. Baseline is the
// same quantity measured on raw NATS (or on polling) in the same run, and
// Ratio is Value/Baseline; both are null when a figure has no baseline.
type Result struct {
	Scenario string         `json:"scenario"`
	Figure   string         `json:"figure"`
	Value    float64        `json:"value"`
	Unit     string         `json:"unit"`
	Baseline *float64       `json:"baseline"`
	Ratio    *float64       `json:"ratio"`
	Params   map[string]any `json:"params"`
}

// reporter prints results as they come and keeps them for the table.
type reporter struct {
	mu      sync.Mutex
	w       io.Writer
	results []Result
}

// add records a figure without a baseline.
func (r *reporter) add(scenario, figure string, value float64, unit string, params map[string]any) {
	r.emit(Result{Scenario: scenario, Figure: figure, Value: round(value), Unit: unit, Params: params})
}

// addVs records a figure with its baseline and their ratio.
func (r *reporter) addVs(scenario, figure string, value float64, unit string, baseline float64, params map[string]any) {
	b := round(baseline)
	res := Result{Scenario: scenario, Figure: figure, Value: round(value), Unit: unit, Baseline: &b, Params: params}
	if baseline != 0 {
		ratio := round(value / baseline)
		res.Ratio = &ratio
	}
	r.emit(res)
}

func (r *reporter) emit(res Result) {
	if res.Params == nil {
		res.Params = map[string]any{}
	}
	b, _ := json.Marshal(res)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
	fmt.Fprintf(r.w, "%s\n", b)
}

// count is how many figures a scenario produced.
func (r *reporter) count(scenario string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, res := range r.results {
		if res.Scenario == scenario {
			n++
		}
	}
	return n
}

// table writes every figure as a Markdown table.
func (r *reporter) table(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(w, "| scenario | figure | value | unit | baseline | ratio | params |")
	fmt.Fprintln(w, "|---|---|---:|---|---:|---:|---|")
	for _, res := range r.results {
		base, ratio := "–", "–"
		if res.Baseline != nil {
			base = num(*res.Baseline)
		}
		if res.Ratio != nil {
			ratio = num(*res.Ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n",
			res.Scenario, res.Figure, num(res.Value), res.Unit, base, ratio, params(res.Params))
	}
}

func params(p map[string]any) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, p[k]))
	}
	return strings.Join(parts, " ")
}

func num(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.4g", v)
	}
}

// round keeps four significant decimals so JSON lines stay readable.
func round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1e4) / 1e4
}

// latencies collects durations; it is safe for concurrent use and bounded.
type latencies struct {
	mu  sync.Mutex
	d   []time.Duration
	max int
}

func newLatencies(max int) *latencies { return &latencies{max: max} }

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	if len(l.d) < l.max {
		l.d = append(l.d, d)
	}
	l.mu.Unlock()
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// quantile returns the q-quantile (0..1) in milliseconds, 0 when empty.
func (l *latencies) quantile(q float64) float64 {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	return quantileMS(d, q)
}

func (l *latencies) mean() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l.d {
		sum += d
	}
	return ms(sum / time.Duration(len(l.d)))
}

func quantileMS(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	i = max(0, min(i, len(d)-1))
	return ms(d[i])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
