package envelope

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "job-1", true},
		{"all classes", "Az09_-", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"dot", "a.b", false},
		{"star", "a*", false},
		{"gt", ">", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"unicode", "jöb", false},
		{"unicode letter only", "日本", false},
		{"slash", "a/b", false},
		{"nul", "a\x00b", false},
		{"dollar", "$JS", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID("id", tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tt.in, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalidToken", tt.in, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "id" {
				t.Fatalf("ValidateID(%q) = %#v, want a FieldError for field id", tt.in, err)
			}
		})
	}
}

func TestValidateKind(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"image", "image", true},
		{"digits and marks", "v2_hd-x", true},
		{"32 chars", strings.Repeat("k", 32), true},
		{"33 chars", strings.Repeat("k", 33), false},
		{"upper case", "Image", false},
		{"all upper", "VIDEO", false},
		{"empty", "", false},
		{"dot", "a.b", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"space", "im age", false},
		{"unicode", "imagé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateKind(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateKind(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ValidateKind(%q) = %v, want ErrInvalidToken", tt.in, err)
			}
		})
	}
}

func TestValidatePriority(t *testing.T) {
	for _, p := range Priorities {
		if err := ValidatePriority(p); err != nil {
			t.Errorf("ValidatePriority(%q) = %v", p, err)
		}
	}
	for _, p := range []Priority{"", "HIGH", "urgent", "normal ", "*"} {
		if err := ValidatePriority(p); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("ValidatePriority(%q) = %v, want ErrInvalidToken", p, err)
		}
	}
}

// The messages name the offending character once, quoted, counted in
// characters: a non-ASCII id is never echoed as the garbled first byte of
// its UTF-8 ("character 'Ã' at 0" for "ÄÖ").
func TestValidateMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{ValidateID("id", "ÄÖ"), `envelope: invalid token: id: character 'Ä' at 0 is not allowed (use A-Z a-z 0-9 _ -)`},
		{ValidateID("id", "abÖ"), `envelope: invalid token: id: character 'Ö' at 2 is not allowed (use A-Z a-z 0-9 _ -)`},
		{ValidateID("id", "éa.b"), `envelope: invalid token: id: character 'é' at 0 is not allowed (use A-Z a-z 0-9 _ -)`},
		{ValidateID("user", "a\x00"), `envelope: invalid token: user: character '\x00' at 1 is not allowed (use A-Z a-z 0-9 _ -)`},
		{ValidateID("user", "a\xffb"), `envelope: invalid token: user: byte "\xff" at 1 is not allowed (use A-Z a-z 0-9 _ -)`},
		{ValidateID("job", ""), `envelope: invalid token: job: must not be empty`},
		{ValidateKind("Imäge"), `envelope: invalid token: kind: character 'I' at 0 is not allowed (use a-z 0-9 _ -)`},
		{ValidateKind("imäge"), `envelope: invalid token: kind: character 'ä' at 2 is not allowed (use a-z 0-9 _ -)`},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("got  %v\nwant %s", tt.err, tt.want)
		}
	}
}
