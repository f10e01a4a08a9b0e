# syntax=docker/dockerfile:1.7
#
# One image with every Beamline binary; compose.yaml picks the binary per
# service with `entrypoint`. Static binaries (CGO_ENABLED=0) on distroless,
# running as the distroless non-root user (65532).
#
#   docker build -t beamline .
#   docker run --rm beamline --help                  # ingest's help
#   docker run --rm --entrypoint /usr/local/bin/processor beamline --help

FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/ ./cmd/...

# healthcheck: distroless has no shell, curl or wget, so compose health
# checks call this 15-line probe: exit 0 when the URL answers 2xx.
COPY <<'GO' /probe/main.go
package main

import (
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: healthcheck URL\n")
		os.Exit(2)
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(os.Args[1])
	if err != nil || resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}
GO
RUN cd /probe && go mod init probe && go build -ldflags="-s -w" -o /out/healthcheck .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/ingest"]
