package envelope

import (
	"encoding/json"
	"time"

	"github.com/beamline/beamline/internal/jsonscan"
)

// scanJob reads b when it has exactly the layout EncodeJob writes: the
// attributes and fields in EncodeJob's order, no white space, strings of
// printable ASCII without escapes, and an input object that is valid JSON.
// ok is false for anything else, and the caller decodes b with
// encoding/json instead. For every b where ok is true, the envelope and
// job are what encoding/json would have made of b (FuzzDecodeJob compares
// the two on every input, TestScanJobMatchesJSON on EncodeJob's output).
//
// Every job a processor runs was written by EncodeJob, and decoding it
// with encoding/json (the envelope, then its data again) was a fifth of
// the processor's own CPU per no-op job (Run W's profile).
func scanJob(b []byte) (e *Envelope, j Job, ok bool) {
	c := jobScanner{b: b}
	e = &Envelope{}
	c.lit(`{"specversion":`)
	e.SpecVersion = c.str()
	c.lit(`,"id":`)
	e.ID = c.str()
	c.lit(`,"source":`)
	e.Source = c.str()
	c.lit(`,"type":`)
	e.Type = Type(c.str())
	c.lit(`,"subject":`)
	e.Subject = c.str()
	c.lit(`,"time":`)
	e.Time = c.time()
	c.lit(`,"datacontenttype":`)
	e.DataContentType = c.str()
	c.lit(`,"data":`)
	dataStart := c.i
	c.lit(`{"id":`)
	j.ID = c.str()
	c.lit(`,"user":`)
	j.User = c.str()
	c.lit(`,"kind":`)
	j.Kind = c.str()
	c.lit(`,"priority":`)
	j.Priority = Priority(c.str())
	var in0, in1 int
	if c.opt(`,"input":`) {
		in0 = c.i
		c.object()
		in1 = c.i
	}
	c.lit(`,"created_at":`)
	j.CreatedAt = c.time()
	if c.opt(`,"expires_at":`) {
		t := c.time()
		j.ExpiresAt = &t
	}
	if c.opt(`,"rerun_of":`) {
		j.RerunOf = c.str()
	}
	c.lit(`}`)
	dataEnd := c.i
	c.lit(`}`)
	if c.bad || c.i != len(b) {
		return nil, Job{}, false
	}
	if in1 > in0 && !json.Valid(b[in0:in1]) {
		return nil, Job{}, false
	}
	// encoding/json copies a RawMessage out of its input; so do we, once,
	// and the job's input is the same bytes inside the envelope's data.
	e.Data = append(json.RawMessage(nil), b[dataStart:dataEnd]...)
	if in1 > in0 {
		j.Input = e.Data[in0-dataStart : in1-dataStart : in1-dataStart]
	}
	return e, j, true
}

// jobScanner walks b; once bad is set every step is a no-op.
type jobScanner struct {
	b   []byte
	i   int
	bad bool
}

// lit consumes s, or marks the scan bad.
func (c *jobScanner) lit(s string) {
	if c.bad || len(c.b)-c.i < len(s) || string(c.b[c.i:c.i+len(s)]) != s {
		c.bad = true
		return
	}
	c.i += len(s)
}

// opt consumes s if b goes on with it.
func (c *jobScanner) opt(s string) bool {
	if c.bad || len(c.b)-c.i < len(s) || string(c.b[c.i:c.i+len(s)]) != s {
		return false
	}
	c.i += len(s)
	return true
}

// quoted consumes a JSON string of printable ASCII other than the quote
// and the backslash, and returns it with its quotes: such a string means
// its bytes to encoding/json, with nothing to unescape or replace.
func (c *jobScanner) quoted() []byte {
	if c.bad || c.i >= len(c.b) || c.b[c.i] != '"' {
		c.bad = true
		return nil
	}
	for k := c.i + 1; k < len(c.b); k++ {
		switch ch := c.b[k]; {
		case ch == '"':
			q := c.b[c.i : k+1]
			c.i = k + 1
			return q
		case ch < 0x20 || ch > 0x7e || ch == '\\':
			c.bad = true
			return nil
		}
	}
	c.bad = true
	return nil
}

func (c *jobScanner) str() string {
	q := c.quoted()
	if len(q) < 2 {
		return ""
	}
	return string(q[1 : len(q)-1])
}

// time reads a string as encoding/json reads it into a time.Time: with
// time.Time's own UnmarshalJSON, on the quoted bytes.
func (c *jobScanner) time() time.Time {
	var t time.Time
	q := c.quoted()
	if c.bad {
		return t
	}
	if err := t.UnmarshalJSON(q); err != nil {
		c.bad = true
	}
	return t
}

// object consumes a JSON object (scanJob has json.Valid check what lies
// between its brackets). An object nested deeper than MaxInputDepth is
// left to encoding/json, whose depth limit counts from the envelope, not
// from the input as json.Valid's does.
func (c *jobScanner) object() {
	if c.bad {
		return
	}
	end, depth, ok := jsonscan.ObjectSpan(c.b, c.i)
	if !ok || depth > MaxInputDepth {
		c.bad = true
		return
	}
	c.i = end
}
