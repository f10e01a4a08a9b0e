package envelope

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps one of them, so
// callers classify with errors.Is.
var (
	// ErrMalformed: the bytes are not a JSON object of the expected shape.
	ErrMalformed = errors.New("envelope: malformed")
	// ErrSpecVersion: specversion is missing or not "1.0".
	ErrSpecVersion = errors.New("envelope: unsupported specversion")
	// ErrMissingAttribute: a required CloudEvents attribute or data field is absent.
	ErrMissingAttribute = errors.New("envelope: missing attribute")
	// ErrInvalidToken: an id, user, kind or priority breaks the token rules.
	ErrInvalidToken = errors.New("envelope: invalid token")
	// ErrTooLarge: the encoded envelope exceeds MaxSize.
	ErrTooLarge = errors.New("envelope: too large")
	// ErrUnknownType: the type attribute is not one Beamline defines.
	ErrUnknownType = errors.New("envelope: unknown type")
)

// FieldError says which field broke which rule. It wraps one of the sentinels.
type FieldError struct {
	Field string
	Err   error // a sentinel
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("%v: %s", e.Err, e.Field)
	}
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Msg)
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error, format string, args ...any) error {
	return &FieldError{Field: field, Err: err, Msg: fmt.Sprintf(format, args...)}
}
