package main

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/serverside-go/serverside/engine"
)

// healthFlags are the health checks of the peer group (origins or
// parents): passive, from real requests, and optional active HTTP checks.
// They apply to every peer of the group.
type healthFlags struct {
	path     string
	host     string
	interval time.Duration
	timeout  time.Duration
	status   int
	maxFails int
}

func (h *healthFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.path, "health-check", "", "`path` of active HTTP health checks sent to every origin or parent; off when empty,\ne.g. -health-check /healthz")
	fs.StringVar(&h.host, "health-host", "", "Host of the health checks, default the peer's address (for parents, name an origin behind them),\ne.g. -health-host example.com")
	fs.DurationVar(&h.interval, "health-interval", 5*time.Second, "time between active health checks, e.g. -health-interval 2s")
	fs.DurationVar(&h.timeout, "health-timeout", 2*time.Second, "bound on one active health check, e.g. -health-timeout 1s")
	fs.IntVar(&h.status, "health-status", 0, "status a healthy peer answers a check with; 0 accepts any 2xx or 3xx, e.g. -health-status 204")
	fs.IntVar(&h.maxFails, "max-fails", 3, "consecutive connect failures, protocol errors or response-header timeouts that mark a peer down\n(passive checks; then one probe request decides), -1 turns them off, e.g. -max-fails 5")
}

// check refuses the values that the config file's "health" object
// refuses, naming the flag; fs is the flag set health registered on.
func (h *healthFlags) check(fs *flag.FlagSet) error {
	if h.path == "" {
		// The active checks' settings, without the checks, would be
		// ignored; -max-fails is the passive ones'.
		var err error
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "health-host", "health-interval", "health-timeout", "health-status":
				if err == nil {
					err = fmt.Errorf("-%s: only with -health-check (active checks)", f.Name)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	field, err := checkHealth(h.path, h.host, h.status, h.maxFails)
	if err == nil {
		return nil
	}
	name := map[string]string{"path": "health-check", "host": "health-host", "status": "health-status", "max_fails": "max-fails"}[field]
	return fmt.Errorf("-%s: %w", name, err)
}

// apply sets the group's health configuration, when there is a group.
func (h *healthFlags) apply(cfg *engine.Config) {
	g, ok := cfg.Groups[peerGroup]
	if !ok {
		return
	}
	g.Health = engine.Health{
		MaxFails:      h.maxFails,
		CheckPath:     h.path,
		CheckHost:     h.host,
		CheckInterval: h.interval,
		CheckTimeout:  h.timeout,
		CheckStatus:   h.status,
	}
	cfg.Groups[peerGroup] = g
}

// healthSpec is the -config file's "health" object.
type healthSpec struct {
	Path     string    `json:"path"`
	Host     string    `json:"host"`
	Interval *duration `json:"interval"`
	Timeout  *duration `json:"timeout"`
	Status   int       `json:"status"`
	MaxFails *int      `json:"max_fails"`
}

// flagValues lists the flags the file's health object sets, with their
// field names for errors.
func (s *healthSpec) flagValues() []struct{ flag, field, value string } {
	var v []struct{ flag, field, value string }
	add := func(flag, field, value string) {
		v = append(v, struct{ flag, field, value string }{flag, field, value})
	}
	if s.Path != "" {
		add("health-check", "health.path", s.Path)
	}
	if s.Host != "" {
		add("health-host", "health.host", s.Host)
	}
	if s.Interval != nil {
		add("health-interval", "health.interval", time.Duration(*s.Interval).String())
	}
	if s.Timeout != nil {
		add("health-timeout", "health.timeout", time.Duration(*s.Timeout).String())
	}
	if s.Status != 0 {
		add("health-status", "health.status", strconv.Itoa(s.Status))
	}
	if s.MaxFails != nil {
		add("max-fails", "health.max_fails", strconv.Itoa(*s.MaxFails))
	}
	return v
}
