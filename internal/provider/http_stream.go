package provider

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/beamline/beamline/pkg/flow"
)

// streamLine is one line of an application/x-ndjson answer (see NewHTTP).
// Lines with none of the known keys are ignored, so a provider may add its
// own (log lines, say) without breaking us.
type streamLine struct {
	Progress  *float64        `json:"progress"`
	Result    json.RawMessage `json:"result"`
	Error     *string         `json:"error"`
	Retryable bool            `json:"retryable"`
}

// readStream reads an ndjson answer until its final line. Every line read
// re-arms timer, so Timeout works as an idle timeout. Errors from the body
// reader are returned unclassified for the caller to classify (it knows
// whether a timeout or ctx ended the read).
func (p *httpProvider) readStream(body io.Reader, timer *time.Timer, progress func(int)) (json.RawMessage, error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 4096), int(min(p.maxResponse, int64(maxInt))))
	last := -1
	for sc.Scan() {
		timer.Reset(p.timeout)
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l streamLine
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, flow.Retryable(fmt.Errorf("%w: ndjson line is not a JSON object: %s", ErrInvalidResponse, snippet(line)), 0)
		}
		switch {
		case l.Result != nil:
			// Copy: the scanner reuses its buffer.
			return append(json.RawMessage(nil), bytes.TrimSpace(l.Result)...), nil
		case l.Error != nil:
			err := fmt.Errorf("%w: %s", ErrRemote, snippet([]byte(*l.Error)))
			if l.Retryable {
				return nil, flow.Retryable(err, 0)
			}
			return nil, flow.Terminal(err)
		case l.Progress != nil:
			pct := int(min(max(*l.Progress, 0), 100))
			if pct > last {
				last = pct
				if progress != nil {
					progress(pct)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, flow.Terminal(fmt.Errorf("%w: ndjson line over %d bytes", ErrResponseTooLarge, p.maxResponse))
		}
		return nil, err
	}
	return nil, flow.Retryable(fmt.Errorf("%w: ndjson stream ended without a result or error line", ErrInvalidResponse), 0)
}

const maxInt = int(^uint(0) >> 1)
