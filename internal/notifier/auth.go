package notifier

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"github.com/beamline/beamline/internal/auth"
)

// bearerPrefix marks the Phoenix 1.8 authToken subprotocol value.
const bearerPrefix = "base64url.bearer.phx."

// tokenFromRequest finds the token of a WebSocket upgrade: the token query
// param (the last one, as the long-poll transport appends its own), else the
// subprotocol bearer. hadProtocol says whether the request offered
// subprotocols at all.
func tokenFromRequest(r *http.Request) (token string, hadProtocol bool) {
	protos := r.Header.Values("Sec-Websocket-Protocol")
	hadProtocol = len(protos) > 0
	if ts := r.URL.Query()["token"]; len(ts) > 0 && ts[len(ts)-1] != "" {
		return ts[len(ts)-1], hadProtocol
	}
	for _, h := range protos {
		for _, p := range strings.Split(h, ",") {
			p = strings.TrimSpace(p)
			if !strings.HasPrefix(p, bearerPrefix) {
				continue
			}
			enc := strings.TrimRight(p[len(bearerPrefix):], "=")
			if b, err := base64.RawStdEncoding.DecodeString(enc); err == nil {
				return string(b), hadProtocol
			}
			if b, err := base64.RawURLEncoding.DecodeString(enc); err == nil {
				return string(b), hadProtocol
			}
		}
	}
	return "", hadProtocol
}

// bearerToken reads Authorization: Bearer, else ?token= (SSE clients such as
// EventSource cannot set headers).
func bearerToken(r *http.Request) string {
	if token, ok := auth.BearerToken(r.Header.Get("Authorization")); ok {
		return token
	}
	return r.URL.Query().Get("token")
}

func (s *Service) authenticate(token string) (auth.Principal, error) {
	return s.verifier.Verify(token)
}

// originAllowed applies Config.AllowedOrigins: no Origin header (a
// non-browser client) is allowed; an empty list means same origin as Host.
func (s *Service) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}
