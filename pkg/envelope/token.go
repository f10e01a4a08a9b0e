package envelope

import (
	"fmt"
	"unicode/utf8"
)

// Priority is the queue a job waits in. Priorities are served weighted, so a
// low job is never starved.
type Priority string

// The three priorities, highest first.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Priorities lists every priority, highest first.
var Priorities = []Priority{PriorityHigh, PriorityNormal, PriorityLow}

// Valid reports whether p is one of the three priorities.
func (p Priority) Valid() bool {
	return p == PriorityHigh || p == PriorityNormal || p == PriorityLow
}

// Limits of the token rules.
const (
	MaxIDLen   = 64
	MaxKindLen = 32
)

// ValidateID checks a job or user id: [A-Za-z0-9_-]{1,64}. Anything else
// (a '.', '*', '>' or space in particular) would change which subjects a
// message reaches, so it is refused at the edge.
func ValidateID(field, s string) error {
	if len(s) == 0 {
		return fieldErr(field, ErrInvalidToken, "must not be empty")
	}
	if len(s) > MaxIDLen {
		return fieldErr(field, ErrInvalidToken, "longer than %d characters", MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i], true) {
			return fieldErr(field, ErrInvalidToken, "%s is not allowed (use A-Z a-z 0-9 _ -)", badChar(s, i))
		}
	}
	return nil
}

// ValidateKind checks a job kind: [a-z0-9_-]{1,32}.
func ValidateKind(s string) error {
	if len(s) == 0 {
		return fieldErr("kind", ErrInvalidToken, "must not be empty")
	}
	if len(s) > MaxKindLen {
		return fieldErr("kind", ErrInvalidToken, "longer than %d characters", MaxKindLen)
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i], false) {
			return fieldErr("kind", ErrInvalidToken, "%s is not allowed (use a-z 0-9 _ -)", badChar(s, i))
		}
	}
	return nil
}

// ValidatePriority checks a priority.
func ValidatePriority(p Priority) error {
	if !p.Valid() {
		return fieldErr("priority", ErrInvalidToken, "%q is not high, normal or low", string(p))
	}
	return nil
}

// badChar names the character of s that starts at byte i, quoted with %q
// (so a control or invisible character is escaped, never echoed raw) and
// counted in characters, not bytes: "ÄÖ" gives "character 'Ä' at 0", not
// the 'Ã' of its first byte. A byte that is not UTF-8 is shown as '\xff'.
func badChar(s string, i int) string {
	r, size := utf8.DecodeRuneInString(s[i:])
	at := utf8.RuneCountInString(s[:i])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte %q at %d", s[i:i+1], at)
	}
	return fmt.Sprintf("character %q at %d", r, at)
}

func tokenByte(c byte, upper bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		return true
	case c >= 'A' && c <= 'Z':
		return upper
	}
	return false
}
