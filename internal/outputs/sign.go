package outputs

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// DefaultLinkTTL is how long a signed output URL is valid.
const DefaultLinkTTL = 15 * time.Minute

// MaxLinkTTL bounds the expiry a signature may carry: a URL claiming a
// later one is refused even with a valid signature.
const MaxLinkTTL = 24 * time.Hour

// Signer signs output URLs for clients that cannot send a bearer token
// (<img src>, <video src>): ?exp=<unix seconds>&sig=<base64url HMAC-SHA256
// over "beamline-output", job, name and exp>.
type Signer struct{ key []byte }

// NewSigner derives the signing key from the auth secret (so the secret
// itself never signs anything but tokens).
func NewSigner(authSecret []byte) *Signer {
	m := hmac.New(sha256.New, authSecret)
	m.Write([]byte("beamline outputs signing key v1"))
	return &Signer{key: m.Sum(nil)}
}

// EnvKey names the key of signed output URLs, when it is not derived from
// the auth secret: ingest, which verifies them, and the processor, which
// signs its previews' URLs (docs/design.md#live-previews), share it, so
// that processors never hold the auth secret.
const EnvKey = "BEAMLINE_OUTPUTS_KEY"

// MinKeyLen is the shortest key NewSignerKey accepts.
const MinKeyLen = 16

// NewSignerKey signs with key as it is ($BEAMLINE_OUTPUTS_KEY).
func NewSignerKey(key []byte) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, wrapf(ErrInvalidConfig, "the signing key must have at least %d bytes", MinKeyLen)
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

func (s *Signer) mac(job, name string, exp int64) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("beamline-output\x00" + job + "\x00" + name + "\x00" + strconv.FormatInt(exp, 10)))
	return m.Sum(nil)
}

// URL returns the signed path of an output, valid until exp.
func (s *Signer) URL(job, name string, exp time.Time) string {
	e := exp.Unix()
	q := url.Values{}
	q.Set("exp", strconv.FormatInt(e, 10))
	q.Set("sig", base64.RawURLEncoding.EncodeToString(s.mac(job, name, e)))
	return Path(job, name) + "?" + q.Encode()
}

// Verify checks the exp and sig of a signed output URL at now. Errors wrap
// ErrBadSignature and say which rule was broken.
func (s *Signer) Verify(job, name, exp, sig string, now time.Time) error {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return wrapf(ErrBadSignature, "exp is not a unix time")
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return wrapf(ErrBadSignature, "sig is not a base64url HMAC-SHA256")
	}
	if !hmac.Equal(got, s.mac(job, name, e)) {
		return wrapf(ErrBadSignature, "signature does not match")
	}
	switch t := time.Unix(e, 0); {
	case !now.Before(t):
		return wrapf(ErrBadSignature, "expired")
	case t.Sub(now) > MaxLinkTTL:
		return wrapf(ErrBadSignature, "expiry too far ahead")
	}
	return nil
}
