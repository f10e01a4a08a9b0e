package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestRoomsClaim(t *testing.T) {
	v := verifier(t)
	claim := func(rooms any) (Principal, error) {
		c := validClaims("alice")
		c["rooms"] = rooms
		return v.Verify(sign(t, jwt.SigningMethodHS256, secret, c))
	}
	p, err := claim([]string{"lab", "studio-2"})
	if err != nil || !p.Rooms.Allows("lab") || !p.Rooms.Allows("studio-2") || p.Rooms.Allows("la") || p.Rooms.Allows("") {
		t.Fatalf("list claim: %+v %v", p, err)
	}
	if p, err := claim("*"); err != nil || !p.Rooms.Allows("anything") {
		t.Fatalf(`"*" claim: %+v %v`, p, err)
	}
	if p, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, validClaims("alice"))); err != nil || p.Rooms.Allows("lab") {
		t.Fatalf("no claim allows a room: %+v %v", p, err)
	}
	for _, bad := range []any{"lab", 7, []any{"lab", 1}, []string{""}, map[string]any{"lab": true}} {
		if _, err := claim(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("rooms %v: %v, want ErrInvalidToken", bad, err)
		}
	}
	// Issued and verified again, the claim survives.
	tok, err := IssueWith(secret, Principal{User: "bob", Rooms: RoomsOf("a", "b")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err = v.Verify(tok)
	p.Expires = time.Time{} // the token's exp, checked elsewhere
	if err != nil || p != (Principal{User: "bob", Rooms: RoomsOf("a", "b")}) {
		t.Fatalf("round trip: %+v %v", p, err)
	}
}
