package beamctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/beamline/beamline/pkg/envelope"
)

// table writes rows under a header, aligned in columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			r[i] = cell(r[i])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// cell keeps a value on one line and short enough for a table.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > 60 {
		return string(r[:59]) + "…"
	}
	return s
}

// writeJSON writes v (or raw JSON as it came) as one indented document.
func writeJSON(w io.Writer, v any) error {
	var b []byte
	var err error
	if raw, ok := v.([]byte); ok {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("the server's answer is not JSON: %w", err)
		}
		b = buf.Bytes()
	} else if b, err = json.MarshalIndent(v, "", "  "); err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// snapshotRows is the jobs table.
var snapshotHeader = []string{"ID", "USER", "KIND", "PRIORITY", "STATUS", "PROGRESS", "ATTEMPT", "UPDATED", "ERROR"}

func snapshotRow(s envelope.Snapshot) []string {
	return []string{s.ID, s.User, s.Kind, string(s.Priority), string(s.Status), strconv.Itoa(s.Progress) + "%",
		strconv.Itoa(s.Attempt), when(s.UpdatedAt), s.Error}
}

// snapshotDetail is one job, a field a line.
func snapshotDetail(w io.Writer, s envelope.Snapshot) error {
	rows := [][]string{
		{"id", s.ID}, {"user", s.User}, {"kind", s.Kind}, {"priority", string(s.Priority)},
		{"status", string(s.Status)}, {"progress", strconv.Itoa(s.Progress) + "%"}, {"attempt", strconv.Itoa(s.Attempt)},
		{"seq", strconv.FormatUint(s.Seq, 10)}, {"created", when(s.CreatedAt)}, {"updated", when(s.UpdatedAt)},
	}
	if s.Error != "" {
		rows = append(rows, []string{"error", s.Error})
	}
	if len(s.Result) > 0 {
		rows = append(rows, []string{"result", string(s.Result)})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// keyValues prints a JSON object's fields, one "key: value" a line, in the
// server's order.
func keyValues(e *env, b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return writeJSON(e.stdout, b)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		s := string(v)
		var str string
		if json.Unmarshal(v, &str) == nil {
			s = str
		}
		fmt.Fprintf(tw, "%v:\t%s\n", k, cell(s))
	}
	return tw.Flush()
}
