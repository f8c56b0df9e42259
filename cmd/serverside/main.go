// Command serverside is the demo forward proxy built on the serverside
// engine.
//
// The proxy itself is not built yet. When it is, it will be a forward HTTP
// proxy listening on 127.0.0.1:3128 that connects straight to origin servers,
// with flags to pin an origin (-origin), chain to a parent proxy (-parent),
// pick a load-balancing policy (-lb), set the number of engine shards
// (-shards), serve an admin endpoint (-admin) and read a config file
// (-config). Today it parses its flags, says what it will be, and exits 0.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
)

func main() {
	fs := flag.NewFlagSet("serverside", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:3128", "address the demo forward proxy will listen on")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: serverside [flags]\n\n")
		fmt.Fprintf(out, "Demo forward HTTP proxy on the serverside engine (not built yet).\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(out, "\nPlanned flags: -origin, -parent, -lb, -shards, -admin, -config.\n")
	}
	// ExitOnError: -h and -help print the usage and exit 0; bad flags exit 2.
	_ = fs.Parse(os.Args[1:])

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	logger.Info("serverside demo forward proxy is not built yet; exiting",
		"listen", *listen)
	logger.Info("planned: forward HTTP proxy that connects straight to origins",
		"default_listen", "127.0.0.1:3128",
		"planned_flags", "-origin -parent -lb -shards -admin -config")
}
