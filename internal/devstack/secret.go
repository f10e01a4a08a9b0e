package devstack

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/beamline/beamline/internal/auth"
)

// SecretFile is the file in the data folder that keeps devstack's dev
// secret when none is given, so that tokens (an open demo tab, the
// README's $TOKEN) survive a restart on the same data.
const SecretFile = "dev-secret"

// devSecret reads the dev secret kept in dataDir, or creates it: 32
// random bytes, hex, in a file only its owner may read (0600).
func devSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, SecretFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		b = bytes.TrimSpace(b)
		if len(b) < auth.MinSecretLen {
			return nil, fmt.Errorf("devstack: %s holds %d bytes, want at least %d (delete it to make a new one; tokens signed with it stop working)",
				path, len(b), auth.MinSecretLen)
		}
		return b, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("devstack: read the dev secret: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: data folder: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	b = []byte(hex.EncodeToString(raw))
	// O_EXCL: of two devstacks started at once on one folder, one writes
	// the secret and the other reads it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return devSecret(dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("devstack: keep the dev secret: %w", err)
	}
	_, werr := f.Write(append(b, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("devstack: keep the dev secret: %w", werr)
	}
	return b, nil
}
