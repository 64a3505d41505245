// Command mongolock runs a command under a distributed lock stored in
// MongoDB, like flock(1) across hosts, and shows and clears locks.
//
//	mongolock run [--ttl D] [--wait D] [--hold-at-least D] [--hold-at-most D] [--limit N] NAME -- CMD ARGS...
//	mongolock status [--json] NAME
//	mongolock list [--json] [PREFIX]
//	mongolock release --force NAME
//	mongolock leader [--watch] NAME
//
// The server is given by --uri or MONGODB_URI; locks live in the
// collection --db/--collection (default mongolock/locks).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// Exit statuses besides the command's own.
const (
	exitUsage   = 2   // bad flags, bad URI, unreachable server
	exitTimeout = 75  // the lock stayed held for --wait (EX_TEMPFAIL, as flock -w)
	exitLost    = 76  // run: the lock was lost while CMD ran (or before it started): CMD was terminated
	exitCapped  = 124 // run: CMD ran past --hold-at-most and was terminated (as timeout(1))
)

const usage = `mongolock: a distributed lock in MongoDB, for commands and operators.

Usage:
  mongolock run [--ttl D] [--wait D] [--hold-at-least D] [--hold-at-most D] [--limit N] NAME -- CMD ARGS...
                                                           run CMD while holding NAME
  mongolock status [--json] NAME                           show one lock
  mongolock list [--json] [PREFIX]                         show every lock (whose name starts with PREFIX)
  mongolock release --force NAME                           free a lock whoever holds it
  mongolock leader [--watch] NAME                          print the leader of an election

Every subcommand takes --uri (default $MONGODB_URI, else mongodb://localhost:27017),
--db (default mongolock) and --collection (default locks); --help shows its own flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	if args[0] == guardCommand {
		return guard(args[1:])
	}
	cmds := map[string]func(*cli, []string) int{
		"run": (*cli).run, "status": (*cli).status, "list": (*cli).list,
		"release": (*cli).release, "leader": (*cli).leader,
	}
	f, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "mongolock: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	c := &cli{stdout: stdout, stderr: stderr}
	return f(c, args[1:])
}

// cli holds what every subcommand shares: its output and the connection.
type cli struct {
	stdout, stderr io.Writer
	uri, db, coll  string
	connectTimeout time.Duration
	client         *mongo.Client
	locks          *mongolock.Locker // run's, for saying who holds a lock
	quiet          bool              // run --quiet
}

// flags returns a flag set for a subcommand with the connection flags.
func (c *cli) flags(name, args, example, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	def := os.Getenv("MONGODB_URI")
	if def == "" {
		def = "mongodb://localhost:27017"
	}
	fs.StringVar(&c.uri, "uri", def, "MongoDB connection string (default $MONGODB_URI)")
	fs.StringVar(&c.db, "db", "mongolock", "database of the lock collection")
	fs.StringVar(&c.coll, "collection", "locks", "collection that holds the locks")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "how long to wait for the server")
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: mongolock %s %s\n\n%s\n\nExample:\n  %s\n\nFlags:\n", name, args, about, example)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; it returns an exit status and false when the caller
// should stop (help asked for, or bad flags).
func (c *cli) parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return exitUsage, false
	}
	return 0, true
}

// parseNames parses args, which must leave between lo and hi names.
func (c *cli) parseNames(fs *flag.FlagSet, args []string, lo, hi int) (int, bool) {
	if code, ok := c.parse(fs, args); !ok {
		return code, false
	}
	if fs.NArg() < lo || fs.NArg() > hi {
		fs.Usage()
		return exitUsage, false
	}
	return 0, true
}

// locker connects and returns a Locker on the lock collection, or prints
// why it could not and returns nil. The server must answer within the
// connect timeout.
func (c *cli) locker(ctx context.Context) *mongolock.Locker {
	client, err := mongo.Connect(options.Client().ApplyURI(c.uri).
		SetServerSelectionTimeout(c.connectTimeout).SetConnectTimeout(c.connectTimeout))
	if err != nil {
		fmt.Fprintf(c.stderr, "mongolock: bad --uri: %v\n", err)
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	if err := client.Database(c.db).RunCommand(pctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		fmt.Fprintf(c.stderr, "mongolock: cannot reach the server within %v: %v\n", c.connectTimeout, err)
		client.Disconnect(context.Background())
		return nil
	}
	c.client = client
	l, err := mongolock.New(client.Database(c.db).Collection(c.coll))
	if err != nil {
		fmt.Fprintln(c.stderr, "mongolock:", err)
		return nil
	}
	c.locks = l
	return l
}

func (c *cli) disconnect() {
	if c.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.client.Disconnect(ctx)
	}
}

// fail prints err and returns the exit status for it.
func (c *cli) fail(err error) int {
	fmt.Fprintln(c.stderr, "mongolock:", err)
	if errors.Is(err, mongolock.ErrInvalidName) || errors.Is(err, mongolock.ErrInvalidTTL) || errors.Is(err, mongolock.ErrLimitMismatch) {
		return exitUsage
	}
	return 1
}
