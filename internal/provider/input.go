package provider

import (
	"bytes"
	"encoding/json"
	"errors"
)

// modelInput is a job's input as a model's input: a JSON object without
// the keys in drop (Beamline's own, such as "sim"). An absent or null
// input is {}; any other non-object is an error.
func modelInput(in json.RawMessage, drop []string) (json.RawMessage, error) {
	in = bytes.TrimSpace(in)
	if len(in) == 0 || bytes.Equal(in, []byte("null")) {
		return json.RawMessage(`{}`), nil
	}
	var m map[string]json.RawMessage
	if in[0] != '{' || json.Unmarshal(in, &m) != nil {
		return nil, errors.New("the job's input must be a JSON object (the model's inputs)")
	}
	for _, k := range drop {
		delete(m, k)
	}
	return json.Marshal(m)
}
