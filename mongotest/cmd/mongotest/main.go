// Command mongotest starts the embedded test server, runs a command with
// MONGODB_URI set to it, stops the server and exits with the command's
// exit status.
//
//	go run ./cmd/mongotest [-addr HOST:PORT] [-data DIR] -- CMD ARGS...
//
// When MONGODB_URI is already set, the command runs against that server and
// no embedded server is started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/mongolock/mongolock/mongotest"
)

func main() {
	os.Exit(run())
}

func run() int {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mongotest [-addr HOST:PORT] [-data DIR] [-change-streams=false] [-election-id=false] -- CMD ARGS...\n\n"+
			"Starts the embedded server, runs CMD with MONGODB_URI set, and exits with CMD's status.\n"+
			"If MONGODB_URI is already set, CMD runs against it and no server is started.\n\n")
		flag.PrintDefaults()
	}
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	data := flag.String("data", "", "data folder kept after exit (default: a temporary folder)")
	streams := flag.Bool("change-streams", true, "serve change streams on FerretDB's oplog (false: as a standalone server, without)")
	election := flag.Bool("election-id", true, "hello reports an electionId and topologyVersion, as a replica set's primary (false: as a standalone)")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		flag.Usage()
		return 2
	}
	if os.Getenv("MONGODB_URI") == "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		opts := []mongotest.Option{mongotest.WithAddr(*addr), mongotest.WithChangeStreams(*streams), mongotest.WithElectionID(*election)}
		if *data != "" {
			opts = append(opts, mongotest.WithDataDir(*data))
		}
		srv, err := mongotest.Start(ctx, opts...)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer srv.Close()
		os.Setenv("MONGODB_URI", srv.URI())
		os.Setenv("MONGOTEST_DIRECT_URI", srv.DirectURI()) // FerretDB behind no proxy: for measurements only
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "mongotest:", err)
		return 127
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case err := <-waited:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if code := exit.ExitCode(); code >= 0 {
					return code
				}
				return 1 // killed by a signal
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "mongotest:", err)
				return 1
			}
			return 0
		}
	}
}
