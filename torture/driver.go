package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/mongotest"
)

type config struct {
	duration   time.Duration
	workers    int
	goroutines int
	names      int
	ttl        time.Duration
	poll       time.Duration
	streams    bool
	faultEvery time.Duration
	dir        string
	memberSkew time.Duration // the workers' WithMemberClockSkew; failovers shift the clock within it
}

// drive runs the whole torture and returns the exit status of the check.
func drive(args []string, out io.Writer) (int, error) {
	var c config
	fs := flag.NewFlagSet("torture", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 10*time.Minute, "how long the workers run")
	fs.IntVar(&c.workers, "workers", 4, "worker processes")
	fs.IntVar(&c.goroutines, "goroutines", 3, "goroutines per worker")
	fs.IntVar(&c.names, "names", 3, "lock names")
	fs.DurationVar(&c.ttl, "ttl", 2*time.Second, "session TTL")
	fs.DurationVar(&c.poll, "poll", 200*time.Millisecond, "poll interval of the workers")
	fs.BoolVar(&c.streams, "change-streams", true, "the server serves change streams (false: the workers poll)")
	fs.DurationVar(&c.faultEvery, "fault-every", 4*time.Second, "pause between two faults")
	fs.DurationVar(&c.memberSkew, "member-skew", time.Second, "the bound of members' clock difference the workers assume (failovers shift the server's clock within it)")
	fs.StringVar(&c.dir, "dir", "", "folder for the server's data and the histories (default: temporary)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "torture-")
		if err != nil {
			return 2, err
		}
		defer os.RemoveAll(dir)
		c.dir = dir
	}
	ctx := context.Background()
	srv, err := mongotest.Start(ctx, mongotest.WithDataDir(filepath.Join(c.dir, "data")),
		mongotest.WithChangeStreams(c.streams))
	if err != nil {
		return 2, err
	}
	defer srv.Close()
	if err := setup(ctx, srv.URI(), c.names); err != nil {
		return 2, err
	}
	self, err := os.Executable()
	if err != nil {
		return 2, err
	}
	faults, err := openJournal(filepath.Join(c.dir, "faults.jsonl"))
	if err != nil {
		return 2, err
	}
	d := &driver{c: c, srv: srv, self: self, faults: faults, procs: make([]*proc, c.workers)}
	for i := range c.workers {
		if err := d.start(i); err != nil {
			return 2, err
		}
	}
	start := time.Now()
	d.inject(ctx, start.Add(c.duration))
	d.stopAll()
	faults.close()
	final := finalCheck(ctx, srv.URI(), c)
	return check(c, filepath.Join(c.dir, "faults.jsonl"), d.histories(), time.Since(start), final, out)
}

// setup creates the fenced resources, one per lock name.
func setup(ctx context.Context, uri string, names int) error {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return err
	}
	defer client.Disconnect(ctx)
	db := client.Database("torture")
	db.Drop(ctx)
	var resources []string
	for i := range names {
		resources = append(resources, fmt.Sprint("lock-", i))
	}
	for i := range semLimit {
		resources = append(resources, fmt.Sprint(semName, "/", i))
	}
	resources = append(resources, rwName+"/w")
	for _, id := range resources {
		if _, err := db.Collection("resources").InsertOne(ctx,
			bson.D{{Key: "_id", Value: id}, {Key: "token", Value: int64(0)}, {Key: "seq", Value: int64(0)}}); err != nil {
			return err
		}
	}
	return nil
}

type driver struct {
	c      config
	srv    *mongotest.Server
	self   string
	faults *journal

	mu    sync.Mutex
	procs []*proc
}

// proc is one worker process; done closes when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// skews gives some workers a clock a minute fast or slow.
var skews = []time.Duration{time.Minute, -time.Minute, 30 * time.Second}

func (d *driver) start(i int) error {
	skew := time.Duration(0)
	if i < len(skews) && i < d.c.workers-1 { // keep at least one honest worker
		skew = skews[i]
	}
	cmd := exec.Command(d.self, "worker", "-uri", d.srv.URI(), "-id", fmt.Sprint(i),
		"-names", fmt.Sprint(d.c.names), "-goroutines", fmt.Sprint(d.c.goroutines),
		"-ttl", d.c.ttl.String(), "-poll", d.c.poll.String(), "-skew", skew.String(), "-member-skew", d.c.memberSkew.String(),
		"-history", d.history(i))
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	d.mu.Lock()
	d.procs[i] = p
	d.mu.Unlock()
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return nil
}

func (d *driver) history(i int) string {
	return filepath.Join(d.c.dir, fmt.Sprintf("worker-%d.jsonl", i))
}

func (d *driver) histories() []string {
	var out []string
	for i := range d.c.workers {
		out = append(out, d.history(i))
	}
	return out
}

// inject runs faults in turn until the deadline.
func (d *driver) inject(ctx context.Context, deadline time.Time) {
	kinds := []string{"kill", "pause", "restart", "cut", "delay", "step", "failover"}
	for n := 0; ; n++ {
		if !sleepUntil(time.Now().Add(d.c.faultEvery), deadline) {
			return
		}
		kind := kinds[n%len(kinds)]
		w := rand.N(d.c.workers)
		f := fault{Kind: kind, Worker: -1, At: now()}
		switch kind {
		case "kill": // SIGKILL of a holder, then a new process in its place
			w, f.Name = d.holder()
			f.Worker, f.At = w, now()
			d.signal(w, syscall.SIGKILL)
			time.Sleep(50 * time.Millisecond)
			d.start(w)
		case "pause": // SIGSTOP for longer than the TTL
			f.Worker = w
			d.signal(w, syscall.SIGSTOP)
			time.Sleep(d.c.ttl * 3 / 2)
			d.signal(w, syscall.SIGCONT)
		case "restart":
			if err := d.srv.Restart(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "torture: restart:", err)
			}
		case "cut": // unreachable for longer than the TTL
			d.srv.Cut(true)
			time.Sleep(d.c.ttl * 6 / 5)
			d.srv.Cut(false)
		case "delay": // slow replies, a quarter of the TTL each
			d.srv.Delay(d.c.ttl / 4)
			time.Sleep(2 * d.c.ttl)
			d.srv.Delay(0)
		case "failover": // a new primary, whose clock differs within the bound, after a stepdown's errors
			// Within ±0.45 x the bound of the host's clock: any two
			// primaries' clocks (a worker may still be on an older one's)
			// differ by less than the bound.
			f.Offset = time.Duration(rand.Int64N(int64(d.c.memberSkew*9/10))) - d.c.memberSkew*9/20
			d.srv.FailWrites(2, 11602, "RetryableWriteError")
			d.srv.Failover(f.Offset)
		case "step": // the wall clock a worker gives the library jumps by +15s or -15s
			f.Worker = w
			sig := syscall.SIGUSR1
			if rand.N(2) == 0 {
				sig = syscall.SIGUSR2
			}
			d.signal(w, sig)
		}
		f.Until = now()
		d.faults.add(f)
	}
}

// holder finds a worker that holds a lock now, by its history: a hold
// begun and not ended. It falls back to any worker after a few tries.
func (d *driver) holder() (int, string) {
	for range 50 {
		for _, i := range rand.Perm(d.c.workers) {
			hs, _ := readLines[hold](d.history(i))
			open := map[string]int{}
			for _, h := range hs {
				k := fmt.Sprint(h.Name, "/", h.Token)
				if h.EndAt == 0 {
					open[k]++
				} else {
					open[k]--
				}
			}
			for k, n := range open {
				if n > 0 {
					return i, k
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return rand.N(d.c.workers), ""
}

func (d *driver) signal(i int, sig syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.procs[i]; p != nil {
		p.cmd.Process.Signal(sig)
	}
}

// stopAll ends every worker with SIGTERM (they release what they hold),
// and kills those still running after a while.
func (d *driver) stopAll() {
	for i := range d.c.workers {
		d.signal(i, syscall.SIGCONT)
		d.signal(i, syscall.SIGTERM)
	}
	deadline := time.After(3 * d.c.ttl)
	for i := range d.c.workers {
		d.mu.Lock()
		p := d.procs[i]
		d.mu.Unlock()
		select {
		case <-p.done:
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// finalCheck takes every lock once more with a fresh session and returns
// the longest it had to wait: a stuck lock would show here.
func finalCheck(ctx context.Context, uri string, c config) time.Duration {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return -1
	}
	defer client.Disconnect(ctx)
	l, err := mongolock.New(client.Database("torture").Collection("locks"), mongolock.WithPollInterval(c.poll),
		mongolock.WithMemberClockSkew(c.memberSkew))
	if err != nil {
		return -1
	}
	defer l.Close()
	s, err := l.NewSession(ctx)
	if err != nil {
		return -1
	}
	defer s.Close()
	// Every mutex, every permit of the semaphore, and the read/write lock
	// for writing (no reader left).
	var takes []func(context.Context) (func() error, error)
	for i := range c.names {
		m := s.NewMutex(fmt.Sprint("lock-", i))
		takes = append(takes, func(ctx context.Context) (func() error, error) { return m.Unlock, m.Lock(ctx) })
	}
	sem := s.NewSemaphore(semName, semLimit)
	for range semLimit {
		takes = append(takes, func(ctx context.Context) (func() error, error) {
			p, err := sem.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			return p.Release, nil
		})
	}
	rw := s.NewRWMutex(rwName)
	takes = append(takes, func(ctx context.Context) (func() error, error) { return rw.Unlock, rw.Lock(ctx) })
	var longest time.Duration
	var unlocks []func() error
	for _, take := range takes {
		t := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 10*c.ttl)
		unlock, err := take(lctx)
		cancel()
		if err != nil {
			return -1
		}
		longest = max(longest, time.Since(t))
		unlocks = append(unlocks, unlock) // permits are held together
	}
	for _, u := range unlocks {
		u()
	}
	return longest
}

func sleepUntil(t, deadline time.Time) bool {
	if t.After(deadline) {
		time.Sleep(time.Until(deadline))
		return false
	}
	time.Sleep(time.Until(t))
	return true
}
