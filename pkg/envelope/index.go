package envelope

import "encoding/binary"

// A JOBINDEX entry (IndexSubject) names one job or, as a bundle, several
// jobs of one user and kind accepted together (one chunk of a batch).
//
// A single entry's body is the job's envelope and its Nats-Msg-Id the job
// id. A bundle carries HeaderIndexBundle (the number of jobs it names) and
// a body of records, oldest first, each
//
//	uvarint(len(id)) id uvarint(len(envelope)) envelope
//
// where envelope is the job's submitted envelope as JOBS stores it.
// docs/design.md#listing-a-users-jobs

// HeaderIndexBundle marks a JOBINDEX entry that is a bundle; its value is
// how many jobs the bundle names.
const HeaderIndexBundle = "Beamline-Index-Bundle"

// IndexRecord is one job of a bundle: its id and its envelope (a slice of
// the bundle's body).
type IndexRecord struct {
	ID       string
	Envelope []byte
}

// AppendIndexRecord appends the record of job id with envelope env to a
// bundle body b.
func AppendIndexRecord(b []byte, id string, env []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(env)))
	return append(b, env...)
}

// IndexRecordSize is how many bytes AppendIndexRecord adds.
func IndexRecordSize(id string, env []byte) int {
	return uvarintLen(uint64(len(id))) + len(id) + uvarintLen(uint64(len(env))) + len(env)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// DecodeIndexBundle splits a bundle body into its records, oldest first.
// Every id must be a valid id (ValidateID); the envelopes are not looked
// into. A body that is not exactly a sequence of records is ErrMalformed;
// it never panics.
func DecodeIndexBundle(b []byte) ([]IndexRecord, error) {
	var out []IndexRecord
	for len(b) > 0 {
		id, rest, err := cutField(b, "id", MaxIDLen)
		if err != nil {
			return nil, err
		}
		env, rest, err := cutField(rest, "envelope", len(rest))
		if err != nil {
			return nil, err
		}
		if err := ValidateID("id", string(id)); err != nil {
			return nil, err
		}
		out = append(out, IndexRecord{ID: string(id), Envelope: env})
		b = rest
	}
	if len(out) == 0 {
		return nil, fieldErr("bundle", ErrMalformed, "no records")
	}
	return out, nil
}

// cutField reads one uvarint-prefixed field of at most limit bytes.
func cutField(b []byte, field string, limit int) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, fieldErr(field, ErrMalformed, "bad length prefix")
	}
	b = b[k:]
	if n > uint64(len(b)) || n > uint64(limit) {
		return nil, nil, fieldErr(field, ErrMalformed, "length %d past the end of the bundle", n)
	}
	return b[:n], b[n:], nil
}
