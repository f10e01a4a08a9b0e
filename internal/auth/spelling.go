package auth

import "strings"

// b64url is the base64url alphabet, in value order.
const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// OtherSpellings returns token with its last character replaced by each
// other character that differs from it only in the bits base64url leaves
// unused at the end of an unpadded part (2 bits for an HS256 signature):
// a lenient decoder reads them all as the same token, a strict one refuses
// them. Tests of every service that verifies tokens use it.
func OtherSpellings(token string) []string {
	if token == "" {
		return nil
	}
	last := strings.IndexByte(b64url, token[len(token)-1])
	if last < 0 {
		return nil
	}
	// An unpadded part of n characters ends with n%4 of a 4-character
	// group: 2 characters hold 1 byte (4 unused bits), 3 hold 2 (2 bits).
	sig := token[strings.LastIndexByte(token, '.')+1:]
	var unused int
	switch len(sig) % 4 {
	case 2:
		unused = 4
	case 3:
		unused = 2
	default:
		return nil
	}
	var out []string
	for low := range 1 << unused {
		v := last&^(1<<unused-1) | low
		if v != last {
			out = append(out, token[:len(token)-1]+string(b64url[v]))
		}
	}
	return out
}
