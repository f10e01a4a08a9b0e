package ingest

import (
	"errors"
	"net/http"
	"strings"

	"github.com/beamline/beamline/internal/auth"
)

// authenticate checks the request's bearer token and refuses share tokens
// (they read one job: readable). The token is never logged nor echoed; the
// error says only which rule it broke.
func (s *Service) authenticate(r *http.Request) (auth.Principal, *apiError) {
	p, aerr := s.principal(r)
	if aerr == nil && p.Share != "" {
		return auth.Principal{}, shareRefused()
	}
	return p, aerr
}

// principal checks the request's bearer token, share tokens included.
func (s *Service) principal(r *http.Request) (auth.Principal, *apiError) {
	token, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok || token == "" {
		e := newError(http.StatusUnauthorized, CodeUnauthorized, "missing bearer token (Authorization: Bearer <jwt>)")
		e.Challenge = `Bearer realm="beamline"`
		return auth.Principal{}, e
	}
	if p, ok := s.tokens.get(token); ok {
		return p, nil
	}
	p, err := s.verifier.Verify(token)
	if err != nil {
		msg := "invalid token"
		if errors.Is(err, auth.ErrExpired) {
			msg = "token expired"
		} else if reason, ok := strings.CutPrefix(err.Error(), auth.ErrInvalidToken.Error()+": "); ok {
			msg = "invalid token: " + reason
		}
		e := newError(http.StatusUnauthorized, CodeUnauthorized, msg)
		e.Challenge = `Bearer realm="beamline", error="invalid_token"`
		return auth.Principal{}, e
	}
	s.tokens.put(token, p)
	return p, nil
}
