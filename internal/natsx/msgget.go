package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MsgGet names one message of a stream for GetOnLeader: by sequence (Seq),
// the first at or after Seq on NextFor, or the last on LastFor. The
// subjects may hold wildcards.
type MsgGet struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// ErrMsgGet wraps every failed GetOnLeader.
var ErrMsgGet = errors.New("natsx: stream message get")

// GetOnLeader returns the message of stream that r names, nil when there is
// none. It asks $JS.API.STREAM.MSG.GET, which only the stream's leader
// answers, never DIRECT.GET: a replica joins the direct-get responders while
// still catching up, so its "nothing there" proves nothing — a job just
// accepted, an event just stored, may not have reached it yet.
func GetOnLeader(ctx context.Context, js jetstream.JetStream, stream string, r MsgGet) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMsgGet, err)
	}
	m, err := js.Conn().RequestWithContext(ctx, APISubject(js, "STREAM.MSG.GET."+stream), req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMsgGet, stream, err)
	}
	var resp struct {
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMsgGet, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("%w: %s: %d %s", ErrMsgGet, stream, resp.Error.Code, resp.Error.Description)
	case resp.Message == nil || resp.Message.Seq == 0:
		return nil, fmt.Errorf("%w: %s: an answer without a message", ErrMsgGet, stream)
	}
	out := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Seq, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMsgGet, stream, err)
		}
	}
	return out, nil
}

// APISubject is the JetStream API subject name (e.g. "STREAM.MSG.GET.EVENTS")
// under js's API prefix.
func APISubject(js jetstream.JetStream, name string) string {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return prefix + name
}
