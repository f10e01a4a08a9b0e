package envelope

import "strings"

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
			return fieldErr(field, ErrInvalidToken, "character %q at %d is not allowed (use A-Z a-z 0-9 _ -)", rune(s[i]), i)
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
			return fieldErr("kind", ErrInvalidToken, "character %q at %d is not allowed (use a-z 0-9 _ -)", rune(s[i]), i)
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

func tokenByte(c byte, upper bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		return true
	case c >= 'A' && c <= 'Z':
		return upper
	}
	return false
}

// JobSubject is the queue of a priority and kind: jobs.<priority>.<kind>.
// The processor's consumer for them takes this subject and the job subjects
// under it (JobMsgSubject). A job published here is accepted and processed
// like any other, but it cannot be read before a processor picks it up.
func JobSubject(p Priority, kind string) string { return "jobs." + string(p) + "." + kind }

// JobMsgSubject is the subject a job is published to:
// jobs.<priority>.<kind>.<job>. The job id in the subject is what lets a
// queued job be read straight from JOBS (JobLookupSubject) before any
// processor has written its snapshot.
func JobMsgSubject(p Priority, kind, job string) string {
	return "jobs." + string(p) + "." + kind + "." + job
}

// JobLookupSubject matches the message of one job in JOBS whatever its
// priority and kind: jobs.*.*.<job>.
func JobLookupSubject(job string) string { return "jobs.*.*." + job }

// EventSubject is the subject of a job's events: events.<user>.<job>.
func EventSubject(user, job string) string { return "events." + user + "." + job }

// DLQSubject is the dead-letter subject of a kind: dlq.<kind>.
func DLQSubject(kind string) string { return "dlq." + kind }

// ParseJobSubject splits jobs.<priority>.<kind>[.<job>], validating every
// token; job is empty for a job published to its queue's subject.
func ParseJobSubject(subject string) (p Priority, kind, job string, err error) {
	parts := strings.Split(subject, ".")
	if (len(parts) != 3 && len(parts) != 4) || parts[0] != "jobs" {
		return "", "", "", fieldErr("subject", ErrInvalidToken, "%q is not jobs.<priority>.<kind>[.<job>]", subject)
	}
	p, kind = Priority(parts[1]), parts[2]
	if err := ValidatePriority(p); err != nil {
		return "", "", "", err
	}
	if err := ValidateKind(kind); err != nil {
		return "", "", "", err
	}
	if len(parts) == 4 {
		job = parts[3]
		if err := ValidateID("job", job); err != nil {
			return "", "", "", err
		}
	}
	return p, kind, job, nil
}
