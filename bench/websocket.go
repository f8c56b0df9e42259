package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// WebSocket is a real WebSocket echo server: Python's websockets library
// (Debian's python3-websockets) serving on 127.0.0.1, echoing every
// message, permessage-deflate offered as by default.
type WebSocket struct {
	*server
	script string
}

// webSocketPython is Debian's interpreter, which has python3-websockets;
// another python3 first on PATH may not.
const webSocketPython = "/usr/bin/python3"

// webSocketScript serves (serve PORT) or talks to (client URL) an echo
// endpoint; the client sends a short text, a 100,000-byte text and a
// binary message, checks each echo, and prints "echoed 3".
const webSocketScript = `import asyncio, sys, websockets

async def echo(ws, path=None):
    async for m in ws:
        await ws.send(m)

async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None):
        await asyncio.Future()

async def client(url):
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        for m in ["hello", "x" * 100000, bytes(range(256)) * 40]:
            await ws.send(m)
            r = await ws.recv()
            if r != m:
                sys.exit("echo differs: %d bytes for %d" % (len(r), len(m)))
        print("echoed 3", flush=True)

if sys.argv[1] == "serve":
    asyncio.run(serve(int(sys.argv[2])))
else:
    asyncio.run(client(sys.argv[2]))
`

// webSocketAvailable reports whether Debian's python3 can import websockets.
func webSocketAvailable() bool {
	return exec.Command(webSocketPython, "-c", "import websockets").Run() == nil
}

// StartWebSocket starts the echo server and stops it when tb ends. It
// skips tb when python3-websockets is missing (fails it under CI=true,
// where scripts/test.sh installs it).
func StartWebSocket(tb testing.TB) *WebSocket {
	tb.Helper()
	bin := ""
	if webSocketAvailable() {
		bin = webSocketPython
	}
	requireBinary(tb, "python3 with websockets", bin, "python3-websockets")
	dir := tb.TempDir()
	script := filepath.Join(dir, "ws.py")
	if err := os.WriteFile(script, []byte(webSocketScript), 0o644); err != nil {
		tb.Fatal(err)
	}
	s := startOnFreePort(tb, "websocket", func(port int, addr string) (*server, error) {
		return startServer(tb, "websocket", bin, []string{script, "serve", strconv.Itoa(port)}, dir, addr, syscall.SIGTERM)
	})
	return &WebSocket{server: s, script: script}
}

// Client runs the echo client against url (ws://host:port/path) and
// returns what it printed and its error, within 20 s.
func (w *WebSocket) Client(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, webSocketPython, w.script, "client", url).CombinedOutput()
	return string(out), err
}
