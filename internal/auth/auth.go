// Package auth verifies and issues the HS256 JSON Web Tokens that users
// present to ingest (Authorization: Bearer) and to the notifier (the token
// connect param or the Phoenix subprotocol bearer). It wraps
// github.com/golang-jwt/jwt/v5, which gets the subtle parts right: the
// algorithm is pinned to HS256 (no "none", no RS256-with-the-HMAC-key
// confusion), exp is required and checked with a little leeway.
package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/beamline/beamline/pkg/envelope"
)

// EnvSecret is the environment variable every binary reads the secret from.
// Secrets never come from flags, which show in ps.
const EnvSecret = "BEAMLINE_AUTH_SECRET"

// MinSecretLen is the shortest secret accepted.
const MinSecretLen = 16

// Sentinel errors.
var (
	ErrNoSecret     = errors.New("auth: secret missing or shorter than 16 bytes")
	ErrInvalidToken = errors.New("auth: invalid token")
	ErrExpired      = errors.New("auth: token expired")
)

// Principal is who a verified token speaks for, and until when.
type Principal struct {
	User  string
	Admin bool
	// Expires is the token's exp: a session opened with the token ends
	// then (the notifier closes it, docs/phoenix-protocol.md#12-token-expiry).
	Expires time.Time
}

type claims struct {
	Admin bool `json:"admin,omitempty"`
	jwt.RegisteredClaims
}

// Verifier checks tokens against one secret.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for secret.
func NewVerifier(secret []byte) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrNoSecret
	}
	return &Verifier{
		secret: append([]byte(nil), secret...),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(5*time.Second),
			// One spelling per token: the base64url of the last character
			// of each part must leave its unused low bits zero, so a token
			// with its last character changed from w to x is refused, not
			// accepted as the same token under another text (the token
			// cache and any revocation list remember tokens by their text).
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// Verify parses and checks a token. The error wraps ErrExpired for an
// expired token and ErrInvalidToken for anything else; it never contains
// the token itself.
func (v *Verifier) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	var c claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, ErrExpired
	case err != nil:
		return Principal{}, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
	if err := envelope.ValidateID("sub", c.Subject); err != nil {
		return Principal{}, fmt.Errorf("%w: %s", ErrInvalidToken, fieldRule(err))
	}
	return Principal{User: c.Subject, Admin: c.Admin, Expires: c.ExpiresAt.Time}, nil
}

// fieldRule renders an envelope.FieldError as "<field> <rule>", without the
// envelope's own sentinel text: "sub must not be empty", never
// "sub: envelope: invalid token: sub: must not be empty".
func fieldRule(err error) string {
	var fe *envelope.FieldError
	if errors.As(err, &fe) && fe.Msg != "" {
		return fe.Field + ": " + fe.Msg
	}
	return err.Error()
}

// reason names the class of a jwt error without echoing token content.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable (algorithm not allowed)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "required claim missing"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	}
	return "rejected"
}

// Issue signs a token for user, valid for ttl. devstack and tests use it;
// in production the host application issues tokens with the same secret.
func Issue(secret []byte, user string, admin bool, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretLen {
		return "", ErrNoSecret
	}
	if err := envelope.ValidateID("user", user); err != nil {
		return "", err
	}
	now := time.Now()
	c := claims{
		Admin: admin,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// BearerToken reads the value of an Authorization header: "Bearer <token>",
// the scheme in any case. isBearer reports whether the header uses the
// Bearer scheme; token is trimmed and may then still be empty.
func BearerToken(header string) (token string, isBearer bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}
