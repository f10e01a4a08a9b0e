package providertest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/pkg/envelope"
	"github.com/beamline/beamline/pkg/flow"
)

// SimHandler serves the http provider's protocol (see provider.NewHTTP) by
// running every request through p, usually the sim provider — a remote
// provider that behaves as each job's input.sim says. Point an http provider
// at it (httptest.NewServer(SimHandler(sim))) to drive an http-backed
// pipeline per job in tests.
//
// Mapping: success → 200 application/json with the result; a terminal error
// → 400, a retryable one → 503 (both {"error":{"code","message"}}); a panic →
// the connection is dropped (the client sees a reset / EOF); a hang → no
// answer until the client gives up. Progress switches the answer to an
// application/x-ndjson stream ({"progress":N} lines, then a {"result":...}
// or {"error":"...","retryable":bool} line).
func SimHandler(p provider.Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Job struct {
				ID       string            `json:"id"`
				User     string            `json:"user"`
				Kind     string            `json:"kind"`
				Priority envelope.Priority `json:"priority"`
			} `json:"job"`
			Attempt int             `json:"attempt"`
			Input   json.RawMessage `json:"input"`
		}
		if r.Method != http.MethodPost {
			httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "POST only")
			return
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		// Read to EOF: only then does net/http watch the connection and
		// cancel r.Context() when the client goes away (a hang must end).
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		streaming := false
		flusher, _ := w.(http.Flusher)
		progress := func(pct int) {
			if !streaming {
				streaming = true
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
			}
			writeLine(w, map[string]int{"progress": pct})
			if flusher != nil {
				flusher.Flush()
			}
		}
		defer func() {
			if v := recover(); v != nil {
				// Drop the connection without an answer, like a crashed
				// worker; net/http does not log ErrAbortHandler.
				panic(http.ErrAbortHandler)
			}
		}()
		out, err := p.Call(r.Context(), provider.Request{
			Job: envelope.Job{
				ID: body.Job.ID, User: body.Job.User, Kind: body.Job.Kind,
				Priority: body.Job.Priority, Input: body.Input,
			},
			Attempt:  body.Attempt,
			Progress: progress,
		})
		switch {
		case streaming && err == nil:
			writeLine(w, map[string]json.RawMessage{"result": out})
		case streaming:
			writeLine(w, map[string]any{"error": err.Error(), "retryable": !flow.IsTerminal(err)})
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(out)
		case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
			// The client is gone; nobody reads an answer.
		case flow.IsTerminal(err):
			httpx.WriteError(w, http.StatusBadRequest, "terminal", err.Error())
		default:
			httpx.WriteError(w, http.StatusServiceUnavailable, "retryable", err.Error())
		}
	})
}

func writeLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	_, _ = w.Write(append(b, '\n'))
}
