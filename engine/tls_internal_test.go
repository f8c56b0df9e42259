package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestProfileCacheBounded: a caller making a new *TLS per request does
// not grow the engine's cache without end, and is told so once.
func TestProfileCacheBounded(t *testing.T) {
	var logs lockedBuf
	e := newEngine(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := 0; i < 2*maxProfiles+10; i++ {
		if p := e.profile(&TLS{}); p.err != nil || p.id != "v=sys" {
			t.Fatalf("profile %d: %+v", i, p)
		}
	}
	n := 0
	e.tls.profiles.Range(func(any, any) bool { n++; return true })
	if n > maxProfiles {
		t.Fatalf("%d cached profiles, want at most %d", n, maxProfiles)
	}
	if c := strings.Count(logs.b.String(), "distinct *engine.TLS"); c != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", c, logs.b.String())
	}
}
