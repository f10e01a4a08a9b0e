package provider

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Bounds of CogWebhooks.
const (
	// cogWebhookMaxBody bounds one delivery (a prediction object; a file
	// output inline as a data: URL makes it large).
	cogWebhookMaxBody = 16 << 20
	// cogWebhookRecent is how many terminal deliveries nobody waited for are
	// kept, so a call that re-attaches after the prediction ended still
	// finds its outcome.
	cogWebhookRecent = 1024
)

// CogWebhooks receives the webhooks a Cog server sends about predictions
// and hands them to the calls waiting for them. Cog does not sign its
// webhooks, so the URL given to Cog for a prediction carries a token, an
// HMAC of the prediction id; a delivery with a wrong token is refused with
// 403 and never reaches a call.
//
// It is the in-process stand-in for webhooks received by ingest and stored
// in JetStream (issue 13): a delivery reaches only a call in the process
// that serves it, and the terminal deliveries nobody waited for are kept
// (the last 1024) for a call that re-attaches later.
type CogWebhooks struct {
	base string
	key  []byte

	mu     sync.Mutex
	subs   map[string]map[*cogSub]struct{}
	recent map[string]cogPrediction
	order  []string
}

type cogSub struct {
	c chan cogPrediction
}

// NewCogWebhooks returns a receiver whose handler is reachable by the Cog
// servers at baseURL (e.g. http://10.0.0.5:9400/cog); key signs the
// per-prediction tokens and must not be empty.
func NewCogWebhooks(baseURL string, key []byte) (*CogWebhooks, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: cog webhook base URL must be an absolute http(s) URL", ErrInvalidConfig)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: cog webhook key must not be empty", ErrInvalidConfig)
	}
	return &CogWebhooks{
		base:   strings.TrimSuffix(u.String(), "/"),
		key:    append([]byte(nil), key...),
		subs:   map[string]map[*cogSub]struct{}{},
		recent: map[string]cogPrediction{},
	}, nil
}

func (h *CogWebhooks) token(id string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("cog-webhook\x00" + id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// URL is the webhook URL to give Cog for prediction id.
func (h *CogWebhooks) URL(id string) string {
	return h.base + "/" + url.PathEscape(id) + "?token=" + h.token(id)
}

// ServeHTTP accepts POST <base path>/<prediction id>?token=... with the
// prediction object as its body: 200 once handed over, 403 for a wrong
// token, 400 for a body that is not a prediction object of that id.
func (h *CogWebhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeCogHookError(w, http.StatusMethodNotAllowed, "method_not_allowed", "POST only")
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	id, err := url.PathUnescape(path[strings.LastIndexByte(path, '/')+1:])
	if err != nil || id == "" {
		writeCogHookError(w, http.StatusNotFound, "not_found", "no prediction id in the path")
		return
	}
	if !hmac.Equal([]byte(r.URL.Query().Get("token")), []byte(h.token(id))) {
		writeCogHookError(w, http.StatusForbidden, "forbidden", "wrong webhook token")
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, cogWebhookMaxBody+1))
	if err != nil {
		writeCogHookError(w, http.StatusBadRequest, "bad_request", "reading the body failed")
		return
	}
	if len(b) > cogWebhookMaxBody {
		writeCogHookError(w, http.StatusRequestEntityTooLarge, "too_large", "delivery too large")
		return
	}
	pred, err := decodeCogPrediction(b)
	if err != nil || (pred.ID != "" && pred.ID != id) {
		writeCogHookError(w, http.StatusBadRequest, "bad_request", "body is not a prediction object of this id")
		return
	}
	pred.ID = id
	h.deliver(pred)
	w.WriteHeader(http.StatusOK)
}

func writeCogHookError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	_, _ = w.Write(b)
}

// deliver hands pred to every waiting call. A subscriber whose buffer is
// full misses a non-terminal update (a later one supersedes it); a
// terminal one is also kept in recent, where subscribe finds it.
func (h *CogWebhooks) deliver(pred cogPrediction) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if pred.terminal() {
		if _, ok := h.recent[pred.ID]; !ok {
			h.order = append(h.order, pred.ID)
		}
		h.recent[pred.ID] = pred
		for len(h.order) > cogWebhookRecent {
			delete(h.recent, h.order[0])
			h.order = h.order[1:]
		}
	}
	for s := range h.subs[pred.ID] {
		select {
		case s.c <- pred:
		default:
		}
	}
}

// subscribe returns the deliveries for id from now on, starting with its
// terminal delivery if one already arrived; stop ends the subscription.
func (h *CogWebhooks) subscribe(id string) (c <-chan cogPrediction, stop func()) {
	s := &cogSub{c: make(chan cogPrediction, 16)}
	h.mu.Lock()
	if h.subs[id] == nil {
		h.subs[id] = map[*cogSub]struct{}{}
	}
	h.subs[id][s] = struct{}{}
	if pred, ok := h.recent[id]; ok {
		s.c <- pred
	}
	h.mu.Unlock()
	return s.c, func() {
		h.mu.Lock()
		delete(h.subs[id], s)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}
}

// forget drops a terminal delivery once a call consumed it, so a later
// prediction with the same id (Cog keeps no history: a PUT after the end
// starts anew) is not answered with a stale outcome.
func (h *CogWebhooks) forget(id string) {
	h.mu.Lock()
	delete(h.recent, id)
	h.mu.Unlock()
}
