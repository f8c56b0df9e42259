package engine

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestConfigRejectsNonsense: values that have no meaning (a negative count
// or duration where the documentation gives negative none, a peer address
// without a port) fail New and SetGroup with an error naming the field,
// instead of silently turning into a default.
func TestConfigRejectsNonsense(t *testing.T) {
	checkLeaks(t)
	peer := func(p Peer) map[string]GroupConfig {
		if p.Addr == "" {
			p.Addr = "127.0.0.1:1"
		}
		return map[string]GroupConfig{"g": {Peers: []Peer{p}}}
	}
	health := func(h Health) map[string]GroupConfig {
		return map[string]GroupConfig{"g": {Peers: []Peer{{Addr: "127.0.0.1:1"}}, Health: h}}
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Shards: -1}, "Shards"},
		{Config{Shards: MaxShards + 1}, "MaxShards"},
		{Config{IdleTimeout: -time.Second}, "IdleTimeout"},
		{Config{ConnectTimeout: -time.Second}, "ConnectTimeout"},
		{Config{TLSHandshakeTimeout: -time.Second}, "TLSHandshakeTimeout"},
		{Config{ResponseHeaderTimeout: -time.Second}, "ResponseHeaderTimeout"},
		{Config{ExpectContinueTimeout: -time.Second}, "ExpectContinueTimeout"},
		{Config{MaxConnsPerUpstream: -1}, "MaxConnsPerUpstream"},
		{Config{MaxPending: -1}, "MaxPending"},
		{Config{PendingTimeout: -time.Second}, "PendingTimeout"},
		{Config{BodyHighWater: -1}, "BodyHighWater"},
		{Config{PinnedIdleTimeout: -time.Second}, "PinnedIdleTimeout"},
		{Config{Groups: peer(Peer{Addr: "127.0.0.1"})}, `peer 0 address "127.0.0.1"`},
		{Config{Groups: peer(Peer{Addr: "127.0.0.1:"})}, `peer 0 address "127.0.0.1:"`},
		{Config{Groups: peer(Peer{Addr: "127.0.0.1:0"})}, `peer 0 address "127.0.0.1:0"`},
		{Config{Groups: peer(Peer{Addr: "127.0.0.1:65536"})}, `peer 0 address "127.0.0.1:65536"`},
		{Config{Groups: peer(Peer{Addr: "127.0.0.1:http"})}, `peer 0 address "127.0.0.1:http"`},
		{Config{Groups: peer(Peer{Weight: -1})}, "Weight"},
		{Config{Groups: peer(Peer{Weight: MaxWeight + 1})}, "MaxWeight"},
		{Config{Groups: peer(Peer{MaxConns: -1})}, "MaxConns"},
		{Config{Groups: peer(Peer{MaxPending: -1})}, "MaxPending"},
		{Config{Groups: peer(Peer{PendingTimeout: -1})}, "PendingTimeout"},
		{Config{Groups: health(Health{Backoff: -time.Second})}, "Backoff"},
		{Config{Groups: health(Health{MaxBackoff: -time.Second})}, "MaxBackoff"},
		{Config{Groups: health(Health{CheckInterval: -time.Second})}, "CheckInterval"},
		{Config{Groups: health(Health{CheckTimeout: -time.Second})}, "CheckTimeout"},
		{Config{Groups: health(Health{CheckStatus: 42})}, "CheckStatus"},
		{Config{Groups: map[string]GroupConfig{"": {Peers: []Peer{{Addr: "127.0.0.1:1"}}}}}, "empty group name"},
	} {
		e, err := New(c.cfg)
		if err == nil {
			e.Close()
			t.Errorf("New(%+v) accepted", c.cfg)
			continue
		}
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want ErrBadConfig naming %s", c.cfg, err, c.want)
		}
	}
	// The documented negatives and the zero Config are accepted.
	for _, cfg := range []Config{{}, {MaxIdlePerUpstream: -1, MaxIdle: -1, MaxRetries: -1},
		{Groups: health(Health{MaxFails: -1})}} {
		e, err := New(cfg)
		if err != nil {
			t.Fatalf("New(%+v): %v", cfg, err)
		}
		if err := e.SetGroup("h", GroupConfig{Peers: []Peer{{Addr: "[::1]:80", Weight: -2}}}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("SetGroup with a negative weight: %v", err)
		}
		if err := e.SetGroup("", GroupConfig{Peers: []Peer{{Addr: "[::1]:80"}}}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("SetGroup with an empty name: %v", err)
		}
		e.Close()
	}
}
