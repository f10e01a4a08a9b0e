package natsx

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	Host     string // default 127.0.0.1
	Port     int    // 0 → DefaultPort; -1 → a random free port
	StoreDir string // JetStream file storage; required
	// HTTPPort, when not 0, serves the monitoring endpoints (-1 → random).
	HTTPPort int
	// ServerName names the server in logs and monitoring data.
	ServerName string
}

// ErrEmbedded is wrapped by every error of RunEmbedded.
var ErrEmbedded = errors.New("natsx: embedded server")

// RunEmbedded starts a nats-server in this process and waits until it takes
// connections. The caller owns it: Shutdown and WaitForShutdown when done.
func RunEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, fmt.Errorf("%w: StoreDir is required", ErrEmbedded)
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		HTTPHost:   cfg.Host,
		HTTPPort:   cfg.HTTPPort,
		// Jobs may carry up to 1 MiB of input; leave room for the envelope.
		MaxPayload: 2 << 20,
	}
	if cfg.HTTPPort == 0 {
		opts.HTTPHost = ""
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEmbedded, err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("%w: not ready within 10s on %s:%d", ErrEmbedded, cfg.Host, cfg.Port)
	}
	return s, nil
}
