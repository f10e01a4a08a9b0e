// Package auth verifies and issues the HS256 JSON Web Tokens that users
// present to ingest (Authorization: Bearer) and to the notifier (the token
// connect param or the Phoenix subprotocol bearer). It wraps
// github.com/golang-jwt/jwt/v5, which gets the subtle parts right: the
// algorithm is pinned to HS256 (no "none", no RS256-with-the-HMAC-key
// confusion), exp is required and checked with a little leeway.
package auth

import (
	"encoding/json"
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
	// Rooms is the token's "rooms" claim: the studio rooms it may join.
	Rooms Rooms
	// Share, when set, is the one job a share token lets its holder watch
	// (IssueShare); such a principal has no User, no Admin, no Rooms, so
	// every check of a user's rights refuses it.
	Share string
}

// MaxShareTTL is the longest a share token may be valid.
const MaxShareTTL = 24 * time.Hour

type claims struct {
	Admin bool   `json:"admin,omitempty"`
	Rooms Rooms  `json:"rooms,omitzero"`
	Share string `json:"share,omitempty"`
	jwt.RegisteredClaims
}

// Rooms is the "rooms" claim: a list of room names, or "*" for every room.
// It is comparable (Principal values are compared); the zero value allows
// no room.
type Rooms struct {
	all  bool
	list string // the names, each followed by a NUL
}

// RoomsOf builds a claim from names; "*" among them allows every room.
func RoomsOf(names ...string) Rooms {
	var r Rooms
	for _, n := range names {
		if n == "*" {
			return Rooms{all: true}
		}
		r.list += n + "\x00"
	}
	return r
}

// Allows reports whether room is among the claim's rooms.
func (r Rooms) Allows(room string) bool {
	return room != "" && (r.all || strings.Contains("\x00"+r.list, "\x00"+room+"\x00"))
}

// IsZero reports whether the claim allows no room (omitted when issuing).
func (r Rooms) IsZero() bool { return !r.all && r.list == "" }

// UnmarshalJSON reads "*" or a list of names; anything else (another
// string, a name with a NUL, a non-string element) fails the token.
func (r *Rooms) UnmarshalJSON(b []byte) error {
	var all string
	if json.Unmarshal(b, &all) == nil {
		if all != "*" {
			return errors.New(`rooms: a string must be "*"`)
		}
		*r = Rooms{all: true}
		return nil
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return errors.New(`rooms: want "*" or a list of names`)
	}
	for _, n := range names {
		if n == "" || strings.IndexByte(n, 0) >= 0 {
			return errors.New("rooms: empty name or NUL")
		}
	}
	*r = RoomsOf(names...)
	return nil
}

// MarshalJSON writes "*" or the list.
func (r Rooms) MarshalJSON() ([]byte, error) {
	if r.all {
		return []byte(`"*"`), nil
	}
	names := []string{}
	if r.list != "" {
		names = strings.Split(strings.TrimSuffix(r.list, "\x00"), "\x00")
	}
	return json.Marshal(names)
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
	if c.Share != "" {
		if err := envelope.ValidateID("share", c.Share); err != nil {
			return Principal{}, fmt.Errorf("%w: %s", ErrInvalidToken, fieldRule(err))
		}
		if time.Until(c.ExpiresAt.Time) > MaxShareTTL+time.Minute {
			return Principal{}, fmt.Errorf("%w: share token valid beyond 24 h", ErrInvalidToken)
		}
		return Principal{Share: c.Share, Expires: c.ExpiresAt.Time}, nil
	}
	return Principal{User: c.Subject, Admin: c.Admin, Rooms: c.Rooms, Expires: c.ExpiresAt.Time}, nil
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
	return IssueWith(secret, Principal{User: user, Admin: admin}, ttl)
}

// IssueWith signs a token for p (its user, admin flag and rooms), valid for ttl.
func IssueWith(secret []byte, p Principal, ttl time.Duration) (string, error) {
	user, admin := p.User, p.Admin
	if len(secret) < MinSecretLen {
		return "", ErrNoSecret
	}
	if err := envelope.ValidateID("user", user); err != nil {
		return "", err
	}
	now := time.Now()
	c := claims{
		Admin: admin,
		Rooms: p.Rooms,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// IssueShare signs a share token for job, owned by owner, valid for ttl
// (at most MaxShareTTL): its holder may watch that job and nothing else.
func IssueShare(secret []byte, owner, job string, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretLen {
		return "", ErrNoSecret
	}
	if ttl <= 0 || ttl > MaxShareTTL {
		return "", fmt.Errorf("auth: share ttl %v not in (0, %v]", ttl, MaxShareTTL)
	}
	if err := envelope.ValidateID("user", owner); err != nil {
		return "", err
	}
	if err := envelope.ValidateID("job", job); err != nil {
		return "", err
	}
	now := time.Now()
	c := claims{
		Share: job,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   owner,
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
