package bench

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// VmRSS returns this process's resident set size, in bytes, from
// /proc/self/status.
func VmRSS() (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// RSSSampler watches this process's VmRSS in the background and keeps the
// peak, for tests that bound memory growth.
type RSSSampler struct {
	before int64
	peak   atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// SampleRSS collects garbage, reads VmRSS as the baseline and samples it
// every period until Stop (also called when tb ends). It skips the test
// when VmRSS cannot be read.
func SampleRSS(tb testing.TB, period time.Duration) *RSSSampler {
	tb.Helper()
	runtime.GC()
	before, err := VmRSS()
	if err != nil {
		tb.Skipf("no VmRSS: %v", err)
	}
	s := &RSSSampler{before: before, stop: make(chan struct{})}
	s.peak.Store(before)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
				s.sample()
			}
		}
	}()
	tb.Cleanup(func() { s.Stop() })
	return s
}

func (s *RSSSampler) sample() {
	if v, err := VmRSS(); err == nil && v > s.peak.Load() {
		s.peak.Store(v)
	}
}

// Stop ends the sampling, takes one last sample and returns the baseline
// and the peak. Calling it again returns the same figures.
func (s *RSSSampler) Stop() (before, peak int64) {
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.sample()
	})
	return s.before, s.peak.Load()
}

// MiB converts bytes to mebibytes, for log lines.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }
