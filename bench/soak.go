package bench

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// SoakDuration skips tb unless SERVERSIDE_SOAK is set, and returns how
// long a soak test runs: SERVERSIDE_SOAK_TIME (a duration), def when it
// is unset.
func SoakDuration(tb testing.TB, def time.Duration) time.Duration {
	tb.Helper()
	if os.Getenv("SERVERSIDE_SOAK") == "" {
		tb.Skip("set SERVERSIDE_SOAK=1 to run the soak test")
	}
	v := os.Getenv("SERVERSIDE_SOAK_TIME")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		tb.Fatalf("SERVERSIDE_SOAK_TIME: %v", err)
	}
	return d
}

// SoakSeed returns a soak test's seed: SERVERSIDE_SOAK_SEED, the clock
// when it is unset.
func SoakSeed(tb testing.TB) uint64 {
	tb.Helper()
	v := os.Getenv("SERVERSIDE_SOAK_SEED")
	if v == "" {
		return uint64(time.Now().UnixNano())
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		tb.Fatalf("SERVERSIDE_SOAK_SEED: %v", err)
	}
	return n
}

// SoakCount returns the positive count in the environment variable name,
// def when it is unset.
func SoakCount(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s: %q is not a positive count", name, v)
	}
	return n
}
