package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mongolock/mongolock"
)

func (c *cli) status(args []string) int {
	fs := c.flags("status", "[--json] NAME", "mongolock status nightly-report",
		"Shows one lock: held or free, owner, fencing token, acquired and expiry times (server time).")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := c.parseNames(fs, args, 1, 1); !ok {
		return code
	}
	return c.withLocker(func(ctx context.Context, l *mongolock.Locker) int {
		info, err := l.Status(ctx, fs.Arg(0))
		if err != nil {
			return c.fail(err)
		}
		return c.print([]mongolock.LockInfo{info}, *asJSON, true)
	})
}

func (c *cli) list(args []string) int {
	fs := c.flags("list", "[--json] [PREFIX]", "mongolock list --json jobs/",
		"Shows every lock whose name starts with PREFIX (all when none), held or free.")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := c.parseNames(fs, args, 0, 1); !ok {
		return code
	}
	return c.withLocker(func(ctx context.Context, l *mongolock.Locker) int {
		infos, err := l.List(ctx, fs.Arg(0))
		if err != nil {
			return c.fail(err)
		}
		return c.print(infos, *asJSON, false)
	})
}

func (c *cli) release(args []string) int {
	fs := c.flags("release", "--force NAME", "mongolock release --force nightly-report",
		"Frees a lock whoever holds it. Its holder learns it lost the lock at its next renewal;\n"+
			"the fencing token still grows on the next acquire.")
	force := fs.Bool("force", false, "required: release a lock held by someone else")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || !*force {
		fmt.Fprintln(c.stderr, "mongolock release: --force and one NAME are required")
		fs.Usage()
		return exitUsage
	}
	return c.withLocker(func(ctx context.Context, l *mongolock.Locker) int {
		if err := l.ForceRelease(ctx, fs.Arg(0)); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stdout, "released %s\n", fs.Arg(0))
		return 0
	})
}

func (c *cli) leader(args []string) int {
	fs := c.flags("leader", "[--watch] [--transitions] [--json] NAME", "mongolock leader --watch scheduler",
		"Prints the value of the leader of the election NAME; with --watch, each new leader until\n"+
			"interrupted; with --transitions, after a tab, how many leaderships the election has had;\n"+
			"with --json, one object per leader with its value, fencing token and transitions.\n"+
			"Exits 1 when there is no leader (without --watch).")
	watch := fs.Bool("watch", false, "follow leader changes")
	transitions := fs.Bool("transitions", false, "also print the number of leader transitions")
	asJSON := fs.Bool("json", false, "print JSON: value, token (the leadership's fencing token), transitions")
	if code, ok := c.parseNames(fs, args, 1, 1); !ok {
		return code
	}
	return c.withLocker(func(ctx context.Context, l *mongolock.Locker) int {
		s, err := l.NewSession(ctx)
		if err != nil {
			return c.fail(err)
		}
		defer s.Close()
		e := s.NewElection(fs.Arg(0))
		show := func(v string) {
			if *asJSON {
				c.printLeader(ctx, l, fs.Arg(0), v)
				return
			}
			if !*transitions {
				fmt.Fprintln(c.stdout, v)
				return
			}
			info, err := l.Status(ctx, fs.Arg(0))
			if err != nil {
				fmt.Fprintf(c.stdout, "%s\t?\n", v)
				return
			}
			fmt.Fprintf(c.stdout, "%s\t%d\n", v, info.Transitions)
		}
		if !*watch {
			v, err := e.Leader(ctx)
			if err != nil {
				return c.fail(err)
			}
			show(v)
			return 0
		}
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		for v := range e.Observe(ctx) {
			show(v)
		}
		return 0
	})
}

// leaderJSON is what `mongolock leader --json` prints for one leader.
type leaderJSON struct {
	Name        string `json:"name"`
	Value       string `json:"value"`
	Token       int64  `json:"token,omitempty"` // omitted when the leader changed again before it was read
	Transitions int64  `json:"transitions"`
}

// printLeader prints the leader value of the election name as JSON, with
// its fencing token as the lock's document shows it.
func (c *cli) printLeader(ctx context.Context, l *mongolock.Locker, name, value string) {
	out := leaderJSON{Name: name, Value: value}
	if info, err := l.Status(ctx, name); err == nil {
		out.Transitions = info.Transitions
		if info.Held && info.Value == value {
			out.Token = info.Token
		}
	}
	json.NewEncoder(c.stdout).Encode(out)
}

// withLocker connects, runs f with a bounded context, and disconnects.
func (c *cli) withLocker(f func(context.Context, *mongolock.Locker) int) int {
	ctx := context.Background()
	l := c.locker(ctx)
	if l == nil {
		return exitUsage
	}
	defer c.disconnect()
	defer l.Close()
	return f(ctx, l)
}

func (c *cli) print(infos []mongolock.LockInfo, asJSON, one bool) int {
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		var err error
		if one {
			err = enc.Encode(infos[0])
		} else {
			err = enc.Encode(infos)
		}
		if err != nil {
			return c.fail(err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tOWNER\tTOKEN\tACQUIRED\tEXPIRES\tVALUE")
	for _, i := range infos {
		state := "free"
		if i.Held {
			state = "held"
		}
		value := orDash(i.Value)
		if i.Transitions > 0 {
			value += fmt.Sprintf(" (leadership %d)", i.Transitions)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", i.Name, state, orDash(i.Owner), i.Token,
			stamp(i.AcquiredAt), stamp(i.ExpiresAt), value)
	}
	if err := tw.Flush(); err != nil && !errors.Is(err, os.ErrClosed) {
		return c.fail(err)
	}
	return 0
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
