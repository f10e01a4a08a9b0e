package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/beamline/beamline/internal/auth"
	"github.com/beamline/beamline/internal/config"
	"github.com/beamline/beamline/internal/freeport"
	"github.com/beamline/beamline/internal/natstest"
	"github.com/beamline/beamline/internal/provider"
	"github.com/beamline/beamline/internal/testutil"
)

func TestMain(m *testing.M) {
	// JOBS sources SCHEDULED; the server may leave its source setup waiting
	// for a consumer reply up to 30 s after a shutdown (nats-server stream.go).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if code := config.ExitCode(run(context.Background(), []string{"--help"}, io.Discard, &out)); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"-addr", "-nats", "-log-format", "-replicas", "-kinds", "-max-body", "-max-inflight", "-cors-origins", auth.EnvSecret} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %s:\n%s", want, out.String())
		}
	}
}

func TestRefusesToStartWithoutSecret(t *testing.T) {
	t.Setenv(auth.EnvSecret, "")
	var out bytes.Buffer
	err := run(context.Background(), []string{"-nats", "nats://127.0.0.1:1"}, io.Discard, &out)
	if code := config.ExitCode(err); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(err.Error(), auth.EnvSecret) {
		t.Fatalf("error does not name the variable: %v", err)
	}
	t.Setenv(auth.EnvSecret, "short")
	err = run(context.Background(), nil, io.Discard, &out)
	if code := config.ExitCode(err); code != 2 || !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("short secret: exit %d: %v", code, err)
	}
}

func TestBadFlag(t *testing.T) {
	t.Setenv(auth.EnvSecret, "0123456789abcdef0123")
	var out bytes.Buffer
	err := run(context.Background(), []string{"-kinds", "a.b"}, io.Discard, &out)
	if code := config.ExitCode(err); code != 2 {
		t.Fatalf("exit %d: %v", code, err)
	}
}

// TestRuns starts the binary's run on a real nats-server, submits a job and
// stops it as SIGTERM would.
func TestRuns(t *testing.T) {
	secret := "0123456789abcdef0123"
	t.Setenv(auth.EnvSecret, secret)
	srv := natstest.Start(t)
	addr, err := freeport.Addr() // for run to take
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.Buffer
	done := make(chan int, 1)
	go func() {
		err := run(ctx, []string{"-nats", srv.ClientURL(), "-addr", addr, "-log-format", "json", "-kinds", "image"}, io.Discard, &out)
		if err != nil {
			fmt.Fprintln(&out, "ingest:", err)
		}
		done <- config.ExitCode(err)
	}()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("not ready: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := auth.Issue([]byte(secret), "alice", false, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/jobs", strings.NewReader(`{"kind":"image"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop")
	}
	logs := out.String()
	if !strings.Contains(logs, "job accepted") {
		t.Errorf("the accepted job was not logged:\n%s", logs)
	}
	if strings.Contains(logs, secret) || strings.Contains(logs, tok) {
		t.Fatal("a secret or token was logged")
	}
}

// TestBadReplicateWebhookSecret: a secret that is not whsec_<base64> is
// refused at start (exit 2), naming the variable.
func TestBadReplicateWebhookSecret(t *testing.T) {
	t.Setenv(auth.EnvSecret, "0123456789abcdef0123")
	t.Setenv(provider.EnvReplicateWebhookSecret, "not-a-secret")
	err := run(context.Background(), nil, io.Discard, io.Discard)
	if code := config.ExitCode(err); code != 2 || !strings.Contains(err.Error(), provider.EnvReplicateWebhookSecret) {
		t.Fatalf("exit %d: %v", code, err)
	}
}

func TestBadCORSOrigin(t *testing.T) {
	t.Setenv(auth.EnvSecret, "0123456789abcdef0123")
	err := run(context.Background(), []string{"-cors-origins", "https://ok.example,*"}, io.Discard, io.Discard)
	if code := config.ExitCode(err); code != 2 || !strings.Contains(err.Error(), "-cors-origins") {
		t.Fatalf("exit %d: %v", code, err)
	}
}
