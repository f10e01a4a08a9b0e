package beamctl

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/beamline/beamline/internal/auth"
)

// DefaultTokenTTL is how long `beamctl token` makes a token valid.
const DefaultTokenTTL = time.Hour

func tokenCmd() *command {
	var user string
	var admin bool
	var ttl time.Duration
	return &command{
		name: "token", args: "--user U [--admin] [--ttl D]",
		summary: "sign a bearer token with $" + EnvSecret,
		help: "The token is HS256 with sub = the user, signed with the secret ingest and the\n" +
			"notifier verify ($" + EnvSecret + ", at least 16 bytes), exactly as a host app\n" +
			"issues them. Use it as $" + EnvToken + " for the other commands:\n\n" +
			"  export " + EnvToken + "=$(beamctl token --user ops --admin --ttl 15m)",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&user, "user", "", "the token's user (sub): A-Z a-z 0-9 _ -; required")
			fs.BoolVar(&admin, "admin", false, "an admin token: reads and cancels any user's jobs, the DLQ, the dashboard")
			fs.DurationVar(&ttl, "ttl", DefaultTokenTTL, "how long the token is valid")
		},
		run: func(_ context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if user == "" {
				return usagef("--user is required")
			}
			if ttl <= 0 {
				return usagef("--ttl %s: must be positive", ttl)
			}
			secret := []byte(e.getenv(EnvSecret))
			if len(secret) < auth.MinSecretLen {
				return usagef("set $%s to the deployment's token secret (at least %d bytes)", EnvSecret, auth.MinSecretLen)
			}
			tok, err := auth.Issue(secret, user, admin, ttl)
			if err != nil {
				return usagef("--user %q: %v", user, err)
			}
			if e.json() {
				return writeJSON(e.stdout, map[string]any{
					"token": tok, "user": user, "admin": admin, "expires_at": time.Now().Add(ttl).UTC().Truncate(time.Second),
				})
			}
			_, err = fmt.Fprintln(e.stdout, tok)
			return err
		},
	}
}
