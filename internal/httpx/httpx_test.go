package httpx

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Retry-After", "2")
	WriteError(rec, http.StatusTooManyRequests, "queue_full", "try <later>")
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("status = %d", rec.Code)
	}
	h := rec.Header()
	if h.Get("Content-Type") != "application/json" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Retry-After") != "2" {
		t.Errorf("headers = %v", h)
	}
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error.Code != "queue_full" || body.Error.Message != "try <later>" {
		t.Errorf("body = %+v", body)
	}
	if b := rec.Body.Bytes(); b[len(b)-1] != '\n' {
		t.Errorf("body %q does not end in a newline", b)
	}
}

func TestWriteJSONUnencodable(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, math.Inf(1))
	if rec.Code != http.StatusInternalServerError || rec.Body.String() != internalBody+"\n" {
		t.Errorf("got %d %q", rec.Code, rec.Body.String())
	}
}
