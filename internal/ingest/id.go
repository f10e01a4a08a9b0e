package ingest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"net/http"
	"strings"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 128

// idLen is the length of generated job ids: 26 base32 characters carry 130
// bits, so random ids never collide and derived ids are unguessable.
const idLen = 26

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newJobID returns a random job id: a token of [a-z2-7].
func newJobID() string {
	var b [20]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return idEncoding.EncodeToString(b[:])[:idLen]
}

// keyedJobID is the job id of an idempotent submission: derived from the
// user and the key only, so a retried POST (even to another ingest instance)
// yields the same id, and JetStream's de-duplication by Nats-Msg-Id makes it
// one job. Two users with the same key get different ids.
func keyedJobID(user, key string) string {
	h := sha256.New()
	h.Write([]byte("beamline-idempotency-v1\x00"))
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return idEncoding.EncodeToString(h.Sum(nil))[:idLen]
}

// idempotencyKey reads the optional Idempotency-Key header: at most 128
// printable ASCII characters, sent once.
func idempotencyKey(r *http.Request) (string, *apiError) {
	vals := r.Header.Values("Idempotency-Key")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", newError(http.StatusBadRequest, CodeInvalidIdempotencyKey, "Idempotency-Key must be sent once")
	}
	k := strings.TrimSpace(vals[0])
	if e := checkIdempotencyKey(k); e != nil {
		return "", e
	}
	return k, nil
}

// checkIdempotencyKey is the rule of every idempotency key, the header's
// and a batch item's: 1 to 128 printable ASCII characters.
func checkIdempotencyKey(k string) *apiError {
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return newError(http.StatusBadRequest, CodeInvalidIdempotencyKey, "idempotency key must be 1 to 128 printable ASCII characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return newError(http.StatusBadRequest, CodeInvalidIdempotencyKey, "idempotency key must be 1 to 128 printable ASCII characters")
		}
	}
	return nil
}
