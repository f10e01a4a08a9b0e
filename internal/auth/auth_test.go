package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef-test-secret")

func verifier(t *testing.T) *Verifier {
	t.Helper()
	v, err := NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
}

func TestRoundTrip(t *testing.T) {
	v := verifier(t)
	for _, admin := range []bool{false, true} {
		tok, err := Issue(secret, "alice_01", admin, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		p, err := v.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if p.User != "alice_01" || p.Admin != admin {
			t.Fatalf("Verify = %+v, want alice_01 admin=%v", p, admin)
		}
	}
	// A token from elsewhere with the admin claim and extra claims.
	p, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"sub": "ops", "admin": true, "exp": time.Now().Add(time.Minute).Unix(), "iss": "host-app", "aud": "beamline",
	}))
	if err != nil || p.User != "ops" || !p.Admin {
		t.Fatalf("Verify(admin) = %+v, %v", p, err)
	}
}

func TestRejected(t *testing.T) {
	v := verifier(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, secret, validClaims("alice"))
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString

	unsafeNone := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims("alice"))

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrInvalidToken},
		{"garbage", "not-a-jwt", ErrInvalidToken},
		{"two parts", parts[0] + "." + parts[1], ErrInvalidToken},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-16+"), validClaims("alice")), ErrInvalidToken},
		{"alg none", unsafeNone, ErrInvalidToken},
		{"alg none, signature kept", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"alg none, empty signature", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".", ErrInvalidToken},
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, validClaims("alice")), ErrInvalidToken},
		{"ES256", sign(t, jwt.SigningMethodES256, ecKey, validClaims("alice")), ErrInvalidToken},
		{"HS384 with the secret", sign(t, jwt.SigningMethodHS384, secret, validClaims("alice")), ErrInvalidToken},
		{"HS512 with the secret", sign(t, jwt.SigningMethodHS512, secret, validClaims("alice")), ErrInvalidToken},
		// RS256 header, HMAC-SHA256 signature with the secret: the classic
		// key-confusion forgery.
		{"alg RS256 header on HS256 signature", resign(t, `{"alg":"RS256","typ":"JWT"}`, parts[1]), ErrInvalidToken},
		{"alg header altered to HS512", b64([]byte(`{"alg":"HS512","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"alg header lower case", resign(t, `{"alg":"hs256","typ":"JWT"}`, parts[1]), ErrInvalidToken},
		{"payload altered", parts[0] + "." + b64([]byte(`{"sub":"mallory","exp":9999999999}`)) + "." + parts[2], ErrInvalidToken},
		{"signature truncated", good[:len(good)-4], ErrInvalidToken},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), ErrExpired},
		{"missing exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}), ErrInvalidToken},
		{"exp a string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": "tomorrow"}), ErrInvalidToken},
		{"not valid yet", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Add(time.Minute).Unix()}), ErrInvalidToken},
		{"sub with dot", sign(t, jwt.SigningMethodHS256, secret, validClaims("a.b")), ErrInvalidToken},
		{"sub with wildcard", sign(t, jwt.SigningMethodHS256, secret, validClaims("*")), ErrInvalidToken},
		{"sub missing", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}), ErrInvalidToken},
		{"sub 65 chars", sign(t, jwt.SigningMethodHS256, secret, validClaims(strings.Repeat("a", 65))), ErrInvalidToken},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": 42, "exp": time.Now().Add(time.Hour).Unix()}), ErrInvalidToken},
		{"admin not a bool", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "admin": "yes", "exp": time.Now().Add(time.Hour).Unix()}), ErrInvalidToken},
		// An expired token with a forged signature is a forgery, not an
		// expired token.
		{"expired and forged", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-16+"), jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}), ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %+v, %v; want %v", p, err, tt.want)
			}
			if tt.want == ErrInvalidToken && errors.Is(err, ErrExpired) {
				t.Fatalf("Verify = %v: both invalid and expired", err)
			}
			if p != (Principal{}) {
				t.Fatalf("rejected token returned principal %+v", p)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), string(secret)) {
				t.Fatalf("error leaks the token or secret: %v", err)
			}
		})
	}
}

// resign builds header.payload and signs it with HMAC-SHA256 and the secret,
// whatever alg the header claims.
func resign(t *testing.T, header, payload string) string {
	t.Helper()
	signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + payload
	sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestLeeway(t *testing.T) {
	v := verifier(t)
	// Expired two seconds ago: within the 5s leeway for clock skew.
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-2 * time.Second).Unix()})
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify within leeway = %v", err)
	}
}

func TestSecretLength(t *testing.T) {
	for _, s := range [][]byte{nil, {}, []byte("short"), []byte("fifteen-bytes!!")} {
		if _, err := NewVerifier(s); !errors.Is(err, ErrNoSecret) {
			t.Errorf("NewVerifier(%d bytes) = %v, want ErrNoSecret", len(s), err)
		}
		if _, err := Issue(s, "alice", false, time.Hour); !errors.Is(err, ErrNoSecret) {
			t.Errorf("Issue(%d bytes) = %v, want ErrNoSecret", len(s), err)
		}
	}
	if _, err := NewVerifier([]byte("sixteen-bytes!!!")); err != nil {
		t.Errorf("NewVerifier(16 bytes) = %v", err)
	}
}

func TestVerifierCopiesSecret(t *testing.T) {
	s := append([]byte(nil), secret...)
	v, err := NewVerifier(s)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s[0] ^= 0xff // the caller reuses its buffer
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify after the caller changed its secret buffer = %v", err)
	}
}

func TestIssueRejectsBadUser(t *testing.T) {
	for _, u := range []string{"", "a.b", "a b", ">", strings.Repeat("u", 65)} {
		if _, err := Issue(secret, u, false, time.Hour); err == nil {
			t.Errorf("Issue(%q) = nil error", u)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		header, token string
		isBearer      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer  abc ", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer ", "", true},
		{"Bearer", "", false},
		{"Basic abc", "", false},
		{"Bearerabc", "", false},
		{"", "", false},
	} {
		token, isBearer := BearerToken(tc.header)
		if token != tc.token || isBearer != tc.isBearer {
			t.Errorf("BearerToken(%q) = %q %v, want %q %v", tc.header, token, isBearer, tc.token, tc.isBearer)
		}
	}
}

// A token has one spelling: changing its last character within its
// base64 group (only the unused low bits) is refused, not read as the same
// token (issue 16, item 8).
func TestStrictDecoding(t *testing.T) {
	v := verifier(t)
	tok, err := Issue(secret, "alice", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("the token itself: %v", err)
	}
	for _, alt := range OtherSpellings(tok) {
		if _, err := v.Verify(alt); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Verify(%q, last character changed) = %v, want ErrInvalidToken", alt[len(alt)-3:], err)
		}
	}
	if len(OtherSpellings(tok)) == 0 {
		t.Fatal("no other spelling of an HS256 signature: the test proves nothing")
	}
}

// A verified principal carries the token's expiry (sessions end then).
func TestPrincipalExpires(t *testing.T) {
	exp := time.Now().Add(90 * time.Second).Truncate(time.Second)
	p, err := verifier(t).Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp.Unix()}))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Expires.Equal(exp) {
		t.Fatalf("Expires = %v, want %v", p.Expires, exp)
	}
}

// Error texts read once: no repeated prefixes, the offending value quoted.
func TestErrorMessages(t *testing.T) {
	v := verifier(t)
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"sub missing", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp}), "auth: invalid token: sub: must not be empty"},
		{"sub non-ASCII", sign(t, jwt.SigningMethodHS256, secret, validClaims("ÄÖ")), "auth: invalid token: sub: character 'Ä' at 0 is not allowed (use A-Z a-z 0-9 _ -)"},
		{"sub with a dot", sign(t, jwt.SigningMethodHS256, secret, validClaims("ab.c")), "auth: invalid token: sub: character '.' at 2 is not allowed (use A-Z a-z 0-9 _ -)"},
		{"sub with a newline", sign(t, jwt.SigningMethodHS256, secret, validClaims("a\nb")), `auth: invalid token: sub: character '\n' at 1 is not allowed (use A-Z a-z 0-9 _ -)`},
		{"sub with right-to-left override", sign(t, jwt.SigningMethodHS256, secret, validClaims("ab\u202ec")), `auth: invalid token: sub: character '\u202e' at 2 is not allowed (use A-Z a-z 0-9 _ -)`},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-16+"), validClaims("alice")), "auth: invalid token: bad signature"},
		{"empty", "", "auth: invalid token: empty"},
		{"garbage", "not-a-jwt", "auth: invalid token: malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.token)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Verify error = %v\nwant            %s", err, tt.want)
			}
		})
	}
}
