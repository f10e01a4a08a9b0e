package ingest

import (
	"container/list"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/beamline/beamline/internal/auth"
)

// Bounds of the verified-token cache.
const (
	tokenCacheSize = 4096
	tokenCacheTTL  = 30 * time.Second
)

// tokenCache remembers tokens that verified, for a short time, so that a
// client sending many requests with one token pays the HMAC and the JSON
// parsing of its claims once, not per request. It is keyed by the whole
// token string (signature included), so a different or altered token is a
// miss and gets verified; an entry never outlives the token's exp, nor
// tokenCacheTTL; it holds at most tokenCacheSize tokens (least recently used
// evicted). Refused tokens are never cached.
type tokenCache struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	now func() time.Time
	m   map[string]*list.Element
	lru list.List // of *tokenEntry, most recent first
}

type tokenEntry struct {
	token string
	p     auth.Principal
	until time.Time
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{max: max, ttl: ttl, now: time.Now, m: make(map[string]*list.Element, max)}
}

// get returns the principal of a token verified before and still fresh.
func (c *tokenCache) get(token string) (auth.Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[token]
	if !ok {
		return auth.Principal{}, false
	}
	e := el.Value.(*tokenEntry)
	if !c.now().Before(e.until) {
		c.lru.Remove(el)
		delete(c.m, token)
		return auth.Principal{}, false
	}
	c.lru.MoveToFront(el)
	return e.p, true
}

// put remembers a token that just verified as p, until the earlier of its
// exp and now+ttl. A token whose exp cannot be read is not remembered.
func (c *tokenCache) put(token string, p auth.Principal) {
	exp, ok := tokenExp(token)
	if !ok {
		return
	}
	now := c.now()
	until := now.Add(c.ttl)
	if exp.Before(until) {
		until = exp
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[token]; ok {
		el.Value.(*tokenEntry).until = until
		c.lru.MoveToFront(el)
		return
	}
	c.m[token] = c.lru.PushFront(&tokenEntry{token: token, p: p, until: until})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*tokenEntry).token)
	}
}

// tokenExp reads the exp claim of a token that has already been verified.
func tokenExp(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp *jwt.NumericDate `json:"exp"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Exp == nil {
		return time.Time{}, false
	}
	return c.Exp.Time, true
}
