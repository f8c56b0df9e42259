package bench

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// UnansweredAddr returns a loopback address whose connects hang: a
// listener with a full accept queue that never accepts, so the kernel
// drops further SYNs. Connect timeouts are tested against it.
func UnansweredAddr(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		if i == 8 {
			tb.Fatalf("%s still takes connections", addr)
		}
		tb.Cleanup(func() { c.Close() })
	}
}
