// Package readmetest keeps README.md true: its tests run every shell block
// marked <!-- run --> against an in-process devstack, as a user would paste
// them, fail on a shell block marked neither run nor <!-- not run: why -->,
// and check that the flag table of "Run it in production" lists every flag
// and environment variable of ingest, the processor and the notifier
// (generated from their --help: go test ./internal/readmetest -run
// TestREADMEFlagTable -update). The package has no code of its own.
package readmetest
