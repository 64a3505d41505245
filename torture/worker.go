package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// worker is one OS process: its own client and session, several
// goroutines contending for a few lock names, each hold writing to a fenced
// resource and to the history. It runs until SIGTERM or killed.
func worker(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	uri := fs.String("uri", "", "server")
	id := fs.Int("id", 0, "worker number")
	names := fs.Int("names", 3, "lock names")
	goroutines := fs.Int("goroutines", 3, "goroutines")
	ttl := fs.Duration("ttl", 2*time.Second, "session TTL")
	skew := fs.Duration("skew", 0, "offset of the clock given to the library")
	poll := fs.Duration("poll", 200*time.Millisecond, "poll interval")
	memberSkew := fs.Duration("member-skew", time.Second, "WithMemberClockSkew")
	hist := fs.String("history", "", "history file")
	fs.Parse(args)

	j, err := openJournal(*hist)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer j.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	client, err := mongo.Connect(options.Client().ApplyURI(*uri).SetTimeout(5 * time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer client.Disconnect(context.Background())
	db := client.Database("torture")
	clock := newStepClock(*skew)
	steps := make(chan os.Signal, 4)
	signal.Notify(steps, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(steps)
	go clock.follow(steps)
	locker, err := mongolock.New(db.Collection("locks"),
		mongolock.WithPollInterval(*poll),
		mongolock.WithClock(clock),
		mongolock.WithMemberClockSkew(*memberSkew),
		mongolock.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer locker.Close()
	w := &work{id: *id, ttl: *ttl, names: *names, j: j, resources: db.Collection("resources")}
	done := make(chan struct{})
	for range *goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			w.loop(ctx, locker)
		}()
	}
	for range *goroutines {
		<-done
	}
	return 0
}

type work struct {
	id        int
	ttl       time.Duration
	names     int
	j         *journal
	resources *mongo.Collection
}

// loop takes random locks until ctx ends. When the session ends (lost
// lease, server gone), it starts a new one.
func (w *work) loop(ctx context.Context, locker *mongolock.Locker) {
	for ctx.Err() == nil {
		s, err := locker.NewSession(ctx, mongolock.WithTTL(w.ttl), mongolock.WithOwner(fmt.Sprint("worker-", w.id)))
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil && s.Err() == nil {
			w.once(ctx, s)
		}
		s.Close()
	}
}

// The semaphore and the read/write lock among the names: a semaphore of
// semLimit permits, whose holds are recorded per slot (name/slot, each
// slot a lock of its own with its token), and an RWMutex whose write holds
// are recorded as name/w and read holds as name/r.
const (
	semName  = "sem"
	semLimit = 2
	rwName   = "rw"
)

// taken is one hold of any kind, as once needs it.
type taken struct {
	name   string // as recorded
	token  int64  // 0 for a read hold: no fenced write
	done   <-chan struct{}
	err    func() error
	unlock func() error
}

// take waits for one random lock: a Mutex of the names, the semaphore, or
// the read/write lock for reading (mostly) or writing.
func (w *work) take(ctx context.Context, s *mongolock.Session) (taken, bool) {
	switch k := rand.N(w.names + 2); {
	case k < w.names:
		m := s.NewMutex(fmt.Sprint("lock-", k))
		if m.Lock(ctx) != nil {
			return taken{}, false
		}
		return taken{m.Name(), m.Token(), m.Done(), m.Err, m.Unlock}, true
	case k == w.names:
		p, err := s.NewSemaphore(semName, semLimit).Acquire(ctx)
		if err != nil {
			return taken{}, false
		}
		return taken{fmt.Sprint(semName, "/", p.Slot()), p.Token(), p.Done(), p.Err, p.Release}, true
	case rand.N(3) == 0:
		rw := s.NewRWMutex(rwName)
		if rw.Lock(ctx) != nil {
			return taken{}, false
		}
		return taken{rwName + "/w", rw.Token(), rw.Done(), rw.Err, rw.Unlock}, true
	default:
		rw := s.NewRWMutex(rwName)
		if rw.RLock(ctx) != nil {
			return taken{}, false
		}
		return taken{rwName + "/r", 0, rw.RDone(), rw.RErr, rw.RUnlock}, true
	}
}

// once takes one lock, writes through the fence (unless it reads), and
// unlocks.
func (w *work) once(ctx context.Context, s *mongolock.Session) {
	h := hold{Worker: w.id, CalledAt: now()}
	lctx, cancel := context.WithTimeout(ctx, 20*w.ttl)
	m, ok := w.take(lctx, s)
	cancel()
	if !ok {
		return
	}
	name := m.name
	h.Name, h.LockAt, h.Token = name, now(), m.token
	// When Done closes: the end of this process's belief that it holds.
	doneAt := make(chan int64, 1)
	go func(done <-chan struct{}) {
		<-done
		doneAt <- now()
	}(m.done)
	w.j.add(h) // begins: a worker killed now leaves this line
	if h.Token != 0 {
		w.claim(name, h.Token)
	}
	time.Sleep(time.Duration(5+rand.N(20)) * time.Millisecond) // the guarded work
	select {
	case <-m.done:
		// Lost while working (paused, cut off): write anyway, marked stale,
		// to show that the fence refuses an old token.
		h.Stale = true
	default:
	}
	if h.Token != 0 {
		h.SentAt = now()
		h.Accepted, h.Seq = w.write(name, h.Token)
	}
	select {
	case <-m.done:
		err := m.err()
		h.Lost = errors.Is(err, mongolock.ErrLockLost) || errors.Is(err, mongolock.ErrSessionClosed)
	default:
	}
	h.EndAt = now()
	m.unlock()
	h.DoneAt = <-doneAt
	w.j.add(h)
}

// stepClock is the clock the worker gives the library: the machine's,
// with its wall time off by a skew that SIGUSR1 and SIGUSR2 step by +15s
// and -15s (an NTP step, a resumed VM); its monotonic reading never steps.
type stepClock struct {
	origin time.Time
	skew   atomic.Int64
}

func newStepClock(skew time.Duration) *stepClock {
	c := &stepClock{origin: time.Now()}
	c.skew.Store(int64(skew))
	return c
}

func (c *stepClock) Now() time.Time           { return time.Now().Add(time.Duration(c.skew.Load())) }
func (c *stepClock) Monotonic() time.Duration { return time.Since(c.origin) }

// follow steps the wall clock on each signal until sigs is no longer fed.
func (c *stepClock) follow(sigs <-chan os.Signal) {
	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			c.skew.Add(int64(15 * time.Second))
		} else {
			c.skew.Add(int64(-15 * time.Second))
		}
	}
}

// claim registers a new hold's token with the resource at once: from then
// on the resource refuses every older token.
func (w *work) claim(name string, token int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w.resources.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: name}, {Key: "token", Value: bson.D{{Key: "$lt", Value: token}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "token", Value: token}}}})
}

// write is the fenced write: it goes through only if the resource's
// newest token is still this hold's.
func (w *work) write(name string, token int64) (bool, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var doc struct {
		Seq int64 `bson:"seq"`
	}
	err := w.resources.FindOneAndUpdate(ctx,
		bson.D{{Key: "_id", Value: name}, {Key: "token", Value: token}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "seq", Value: int64(1)}}}, {Key: "$set", Value: bson.D{{Key: "last", Value: token}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc)
	if err != nil {
		return false, 0
	}
	return true, doc.Seq
}
