// Package telemetry holds Beamline's logging, metrics and tracing set-up.
package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// NewLogger returns the logger of a binary: format "text" uses tint
// (coloured when w is a terminal), "json" the slog JSON handler.
func NewLogger(format string, w io.Writer, level slog.Level) (*slog.Logger, error) {
	switch format {
	case "", "text":
		noColor := true
		if f, ok := w.(*os.File); ok {
			noColor = !term.IsTerminal(int(f.Fd()))
		}
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, NoColor: noColor, TimeFormat: "15:04:05.000"})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, fmt.Errorf("telemetry: unknown log format %q (want text or json)", format)
}
