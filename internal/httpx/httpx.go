// Package httpx writes the JSON answers Beamline's HTTP endpoints share:
// every HTTP error, whichever binary answers it, is
// {"error":{"code":"...","message":"..."}} (api/openapi.yaml's Error).
package httpx

import (
	"encoding/json"
	"net/http"
)

// ErrorBody is the body of every HTTP error.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is what an error body says: a stable code clients switch on
// and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// internalBody answers when v cannot be encoded; only our own types are
// written, so that is a bug.
const internalBody = `{"error":{"code":"internal","message":"encoding the answer failed"}}`

// WriteJSON writes v as one line of JSON with status. Headers the caller
// set before (Retry-After, WWW-Authenticate, Allow) are kept.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(internalBody)
	}
	WriteJSONLine(w, status, append(b, '\n'))
}

// WriteJSONLine is WriteJSON for an answer already encoded: line is one
// JSON value followed by a newline, as WriteJSON writes it.
func WriteJSONLine(w http.ResponseWriter, status int, line []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(line)
}

// WriteError writes the error body {"error":{"code","message"}} with status.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}
