package ingest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/pkg/envelope"
)

// Share tokens (docs/design.md#share-tokens): POST /v1/jobs/{id}/share
// gives the job's owner a token that lets its holder watch that one job —
// GET it, its outputs, and on the notifier its job: topic and SSE stream —
// and nothing else. Every other route authenticates with authenticate,
// which refuses share tokens.

const routeShare = "share"

// DefaultShareTTL is how long a share token lasts when the request names
// no ttl_seconds.
const DefaultShareTTL = time.Hour

type shareRequest struct {
	TTLSeconds *int64 `json:"ttl_seconds"`
}

type shareResponse struct {
	Token     string    `json:"token"`
	Job       string    `json:"job"`
	ExpiresAt time.Time `json:"expires_at"`
}

// share handles POST /v1/jobs/{id}/share: owner only (not even an admin
// shares someone else's job), body {"ttl_seconds": 1…86400} or empty.
func (s *Service) share(w http.ResponseWriter, r *http.Request) {
	p, snap, _, aerr := s.lookup(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if snap.User != p.User {
		writeError(w, newError(http.StatusForbidden, CodeForbidden, "only the job's owner may share it"))
		return
	}
	ttl := DefaultShareTTL
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<10))
	if err != nil {
		writeError(w, newError(http.StatusRequestEntityTooLarge, CodeInvalidInput, "share request body too large (1 KiB)"))
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var req shareRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || dec.More() {
			writeError(w, newError(http.StatusBadRequest, CodeInvalidJSON, `body must be {"ttl_seconds": N}`))
			return
		}
		if req.TTLSeconds != nil {
			n := *req.TTLSeconds
			if n < 1 || n > int64(auth.MaxShareTTL/time.Second) {
				writeError(w, newError(http.StatusBadRequest, CodeInvalidInput, "ttl_seconds must be 1…86400 (24 h)"))
				return
			}
			ttl = time.Duration(n) * time.Second
		}
	}
	tok, err := auth.IssueShare(s.cfg.Secret, snap.User, snap.ID, ttl)
	if err != nil {
		writeError(w, unavailable())
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, shareResponse{Token: tok, Job: snap.ID, ExpiresAt: time.Now().Add(ttl).UTC().Truncate(time.Second)})
}

// readable is lookup for the read-only routes of one job (GET, outputs):
// it also accepts a share token, for its own job only.
func (s *Service) readable(r *http.Request) (auth.Principal, envelope.Snapshot, uint64, *apiError) {
	p, aerr := s.principal(r)
	if aerr != nil {
		return p, envelope.Snapshot{}, 0, aerr
	}
	if p.Share != "" && p.Share != r.PathValue("id") {
		return p, envelope.Snapshot{}, 0, shareRefused()
	}
	return s.lookupAs(r, p)
}

func shareRefused() *apiError {
	return newError(http.StatusForbidden, CodeForbidden, "a share token only reads the job it was made for")
}
