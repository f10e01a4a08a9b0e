package ingest

import (
	"context"
	"net/http"
	"time"

	"github.com/beamline/beamline/internal/httpx"
	"github.com/beamline/beamline/streams"
)

// streamFigure is one stream's size and retention, as GET
// /v1/admin/streams shows it.
type streamFigure struct {
	Name     string        `json:"name"`
	Messages uint64        `json:"messages"`
	Bytes    uint64        `json:"bytes"`
	MaxAge   time.Duration `json:"max_age_ns"`
	// MaxAgeText is MaxAge for people ("24h0m0s"); "" when unlimited.
	MaxAgeText string `json:"max_age,omitempty"`
}

// adminStreams handles GET /v1/admin/streams (admin): each Beamline
// stream's messages, bytes and retention (the -events-max-age,
// -status-ttl and -dlq-max-age in force).
func (s *Service) adminStreams(w http.ResponseWriter, r *http.Request) {
	if _, aerr := s.admin(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	out := struct {
		Streams []streamFigure `json:"streams"`
	}{Streams: []streamFigure{}}
	for _, name := range []string{streams.Jobs, streams.Scheduled, streams.Events, "KV_" + streams.JobStatus, streams.JobIndex, streams.DLQ} {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			s.log.Warn("stream info failed", "stream", name, "err", err)
			writeError(w, unavailable())
			return
		}
		info := st.CachedInfo()
		f := streamFigure{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, MaxAge: info.Config.MaxAge}
		if f.MaxAge > 0 {
			f.MaxAgeText = f.MaxAge.String()
		}
		out.Streams = append(out.Streams, f)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}
