package beamctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// schedule is one repeating submission as GET /v1/schedules lists it.
type schedule struct {
	Name     string `json:"name"`
	User     string `json:"user"`
	Cron     string `json:"cron"`
	Every    string `json:"every"`
	TimeZone string `json:"time_zone"`
	Job      struct {
		Kind     string `json:"kind"`
		Priority string `json:"priority"`
	} `json:"job"`
}

func schedulesLsCmd() *command {
	return &command{name: "ls", summary: "list schedules (GET /v1/schedules)",
		help:  "A user's token lists that user's schedules; an admin's lists all.",
		needs: apiNeeds,
		run: func(ctx context.Context, e *env, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			b, err := e.apiCall(ctx, http.MethodGet, "/v1/schedules", nil)
			if err != nil {
				return err
			}
			if e.json() {
				return writeJSON(e.stdout, b)
			}
			var l struct {
				Schedules []schedule `json:"schedules"`
			}
			if err := json.Unmarshal(b, &l); err != nil {
				// A bare array is read too.
				if err2 := json.Unmarshal(b, &l.Schedules); err2 != nil {
					return fmt.Errorf("the server's answer is not a schedule list: %w", err)
				}
			}
			rows := make([][]string, 0, len(l.Schedules))
			for _, s := range l.Schedules {
				rows = append(rows, []string{s.Name, s.User, first(s.Cron, "every "+s.Every), s.TimeZone, s.Job.Kind, s.Job.Priority})
			}
			return table(e.stdout, []string{"NAME", "USER", "WHEN", "TIME ZONE", "KIND", "PRIORITY"}, rows)
		},
	}
}

func schedulesRmCmd() *command {
	return &command{name: "rm", args: "NAME", summary: "remove a schedule (DELETE /v1/schedules/{name})",
		help:  "Jobs it already submitted are not touched. Exit code 3 when there is no such schedule.",
		needs: apiNeeds,
		run: func(ctx context.Context, e *env, args []string) error {
			name, err := oneArg(args, "schedule name")
			if err != nil {
				return err
			}
			b, err := e.apiCall(ctx, http.MethodDelete, "/v1/schedules/"+pathEscape(name), nil)
			if err != nil {
				return err
			}
			if e.json() {
				if len(b) == 0 {
					b = []byte(`{"removed":` + jsonString(name) + `}`)
				}
				return writeJSON(e.stdout, b)
			}
			_, err = fmt.Fprintf(e.stdout, "removed schedule %s\n", name)
			return err
		},
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
