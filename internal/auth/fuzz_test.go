package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/beamline/beamline/pkg/envelope"
)

// fuzzSecret signs the valid tokens of testdata/fuzz/FuzzVerify (they expire
// in 2100).
const fuzzSecret = "fuzz-secret-0123456789abcdef"

func FuzzVerify(f *testing.F) {
	v, err := NewVerifier([]byte(fuzzSecret))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		p, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrExpired) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			if p != (Principal{}) {
				t.Fatalf("rejected token returned %+v", p)
			}
			if len(token) > 40 && strings.Contains(err.Error(), token) {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		if envelope.ValidateID("sub", p.User) != nil {
			t.Fatalf("accepted a token for user %q", p.User)
		}
	})
}
