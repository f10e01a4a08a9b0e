package beamctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/beamline/beamline/pkg/envelope"
)

var apiNeeds = []string{"api"}

func decodeSnapshot(b []byte) (envelope.Snapshot, error) {
	var s envelope.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("the server's answer is not a job: %w", err)
	}
	return s, nil
}

// oneJob runs method on /v1/jobs/{id}[suffix] and prints the job answered.
func oneJob(method, suffix string) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		id, err := oneArg(args, "job id")
		if err != nil {
			return err
		}
		b, err := e.apiCall(ctx, method, "/v1/jobs/"+pathEscape(id)+suffix, nil)
		if err != nil {
			return err
		}
		if e.json() {
			return writeJSON(e.stdout, b)
		}
		s, err := decodeSnapshot(b)
		if err != nil {
			return err
		}
		return snapshotDetail(e.stdout, s)
	}
}

func jobsGetCmd() *command {
	return &command{name: "get", args: "ID", summary: "show a job's snapshot (GET /v1/jobs/{id})",
		needs: apiNeeds, run: oneJob(http.MethodGet, "")}
}

func jobsCancelCmd() *command {
	return &command{name: "cancel", args: "ID", summary: "cancel a job that has not ended (DELETE /v1/jobs/{id})",
		help:  "Exit code 5 when the job already ended, 3 when there is no such job.",
		needs: apiNeeds, run: oneJob(http.MethodDelete, "")}
}

func jobsRerunCmd() *command {
	return &command{name: "rerun", args: "ID", summary: "run an ended job again as a new job (POST /v1/jobs/{id}/rerun)",
		help:  "The job must have ended failed, dead, cancelled or expired; the new job has\nthe same kind, priority and input, and rerun_of set to ID.",
		needs: apiNeeds, run: oneJob(http.MethodPost, "/rerun")}
}

// jobList is the answer of GET /v1/jobs.
type jobList struct {
	Jobs       []envelope.Snapshot `json:"jobs"`
	NextCursor string              `json:"next_cursor"`
}

func jobsLsCmd() *command {
	var status, kind, user, cursor string
	var limit int
	return &command{name: "ls", summary: "list jobs, newest first (GET /v1/jobs)",
		help: "A user's token lists that user's jobs; an admin's may pick another with --user.\n" +
			"When more jobs follow, the table ends with the --cursor that lists them\n" +
			"(-o json: the answer's next_cursor).",
		needs: apiNeeds,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&status, "status", "", "only jobs in this status (queued, running, succeeded, failed, dead, cancelled, …)")
			fs.StringVar(&kind, "kind", "", "only jobs of this kind")
			fs.StringVar(&user, "user", "", "another user's jobs (admin token)")
			fs.IntVar(&limit, "limit", 0, "at most this many jobs (default: the server's)")
			fs.StringVar(&cursor, "cursor", "", "continue after the page that returned this cursor")
		},
		run: func(ctx context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "kind": kind, "user": user, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit < 0 {
				return usagef("--limit %d: must be positive", limit)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			path := "/v1/jobs"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			b, err := e.apiCall(ctx, http.MethodGet, path, nil)
			if err != nil {
				return err
			}
			if e.json() {
				return writeJSON(e.stdout, b)
			}
			var l jobList
			if err := json.Unmarshal(b, &l); err != nil {
				return fmt.Errorf("the server's answer is not a job list: %w", err)
			}
			rows := make([][]string, 0, len(l.Jobs))
			for _, s := range l.Jobs {
				rows = append(rows, snapshotRow(s))
			}
			if err := table(e.stdout, snapshotHeader, rows); err != nil {
				return err
			}
			if l.NextCursor != "" {
				fmt.Fprintf(e.stdout, "more: --cursor %s\n", l.NextCursor)
			}
			return nil
		},
	}
}
