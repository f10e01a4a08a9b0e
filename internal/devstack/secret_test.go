package devstack

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The dev secret is made once, readable by its owner only, and read back
// on every later start on the same data (issue 16, item 3).
func TestDevSecretKeptInDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := devSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", SecretFile, fi.Mode().Perm())
	}
	again, err := devSecret(dir)
	if err != nil || !bytes.Equal(first, again) || len(first) != 64 {
		t.Fatalf("second read = %q, %v; first %q", again, err, first)
	}
	if other, _ := devSecret(t.TempDir()); bytes.Equal(other, first) {
		t.Fatal("two data folders share a secret")
	}
	if err := os.WriteFile(filepath.Join(dir, SecretFile), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devSecret(dir); err == nil {
		t.Fatal("a secret shorter than 16 bytes was taken")
	}
}
