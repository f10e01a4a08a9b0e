// Package jsonscan holds the bracket scan the hand-written JSON readers
// share: pkg/envelope's job scanner and ingest's plain request decoder
// both find a JSON object's end, and its depth, without decoding it.
package jsonscan

// ObjectSpan finds the JSON object that starts at b[i] by its brackets and
// strings, not checking what lies between them (json.Valid is the
// caller's): where it ends, and how deeply its objects and arrays nest
// (the object itself is level 1; when ok is false, as deep as b went).
// ok is false when no object starts at i, a ']' closes the object, or b
// ends inside it.
func ObjectSpan(b []byte, i int) (end, depth int, ok bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, 0, false
	}
	level, inStr := 0, false
	for k := i; k < len(b); k++ {
		ch := b[k]
		if inStr {
			switch ch {
			case '\\':
				k++ // the escaped byte cannot end the string
			case '"':
				inStr = false
			}
			continue
		}
		switch ch {
		case '"':
			inStr = true
		case '{', '[':
			if level++; level > depth {
				depth = level
			}
		case '}', ']':
			if level--; level == 0 {
				return k + 1, depth, ch == '}'
			}
		}
	}
	return 0, depth, false
}
