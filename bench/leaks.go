package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// CheckLeaks records the goroutine and file descriptor counts and, at
// cleanup, waits up to five seconds for both to come back to them, failing
// tb with every goroutine's stack if they do not. Call it first in a test,
// so that its cleanup runs after the cleanups that close what the test
// opened.
func CheckLeaks(tb testing.TB) {
	tb.Helper()
	g0, f0 := runtime.NumGoroutine(), FDCount(tb)
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, f := runtime.NumGoroutine(), FDCount(tb)
			if g <= g0 && f <= f0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("leak: goroutines %d -> %d, fds %d -> %d\n%s", g0, g, f0, f, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// FDCount is the number of file descriptors the process has open.
func FDCount(tb testing.TB) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(es)
}

// CollectSplicePipes makes the collector close, before tb's leak check
// counts descriptors, the pipes splice(2) went through: Go's net package
// caches them in a sync.Pool and closes them by finalizer. Call it after
// CheckLeaks: cleanups run last registered first, so its cleanup runs
// after the test and before the check.
func CollectSplicePipes(tb testing.TB) {
	tb.Cleanup(func() {
		for i := 0; i < 3; i++ {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	})
}
