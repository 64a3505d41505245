package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// exampleLocker connects to MONGODB_URI and returns a Locker on a fresh
// collection, with a function that drops it and disconnects.
func exampleLocker(coll string) (*mongolock.Locker, func()) {
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	c := client.Database(testDB).Collection(coll)
	c.Drop(context.Background()) // start from no lock, so tokens start at 1
	locker, err := mongolock.New(c)
	if err != nil {
		log.Fatal(err)
	}
	return locker, func() {
		locker.Close()
		c.Drop(context.Background())
		client.Disconnect(context.Background())
	}
}

// exampleSession returns a session of a Locker on a fresh collection, with
// a function that closes it and cleans up.
func exampleSession(coll string) (*mongolock.Session, func()) {
	locker, cleanup := exampleLocker(coll)
	session, err := locker.NewSession(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	return session, func() {
		session.Close()
		cleanup()
	}
}

func ExampleMutex_Lock() {
	locker, cleanup := exampleLocker("example_mutex") // a Locker, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	// One session per process: its keepalive renews every lock it holds.
	session, err := locker.NewSession(ctx, mongolock.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()

	m := session.NewMutex("nightly-report")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer m.Unlock()

	// Hand the fencing token to what you protect, and stop when the hold
	// ends: a lease is not a fence.
	fmt.Println("holding with token", m.Token())
	select {
	case <-m.Done():
		fmt.Println("lost:", m.Err())
	default:
		fmt.Println("still held")
	}
	// Output:
	// holding with token 1
	// still held
}

// The cron recipe, as the README shows it: cron starts the job on every
// host each tick, and it runs on one of them. TryLock takes the lock or
// says another host has it; WithHoldAtLeast keeps the lock taken for most
// of the period however soon the job ends, so that a host whose cron
// fired late skips the tick too; WithHoldAtMost caps a job that hangs.
func Example_cron() {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Disconnect(ctx)
	locks := client.Database("mongolock_test").Collection("example_cron")
	locks.Drop(ctx) // (the example starts afresh)
	defer locks.Drop(ctx)

	locker, err := mongolock.New(locks)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	// Two hosts at one tick: here, two sessions of one process.
	for _, host := range []string{"host-a", "host-b"} {
		if err := reportOncePerTick(ctx, locker, host); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// host-a: writing the report with token 1
	// host-b: another host runs this tick, skipping
}

// reportOncePerTick runs the report, every 5 minutes on every host, unless
// another host runs it this tick.
func reportOncePerTick(ctx context.Context, locker *mongolock.Locker, host string) error {
	session, err := locker.NewSession(ctx, mongolock.WithOwner(host))
	if err != nil {
		return err
	}
	defer session.Close()

	job := session.NewMutex("report",
		mongolock.WithHoldAtLeast(4*time.Minute), // a little under the period
		mongolock.WithHoldAtMost(20*time.Minute)) // a job still running then is told to stop
	switch err := job.TryLock(ctx); {
	case errors.Is(err, mongolock.ErrLocked):
		fmt.Println(host + ": another host runs this tick, skipping")
		return nil
	case err != nil:
		return err
	}
	defer job.Unlock() // the lock stays taken until 4 minutes after the acquire

	// Stop when job.Done() closes (the cap, or the lock lost), and hand
	// the fencing token to what the report writes to.
	fmt.Println(host+": writing the report with token", job.Token())
	return nil
}

func ExampleMutex_TryLock() {
	session, cleanup := exampleSession("example_trylock") // a Session, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	first, second := session.NewMutex("cron"), session.NewMutex("cron")
	if err := first.TryLock(ctx); err != nil {
		log.Fatal(err)
	}
	err := second.TryLock(ctx)
	fmt.Println("second:", errors.Is(err, mongolock.ErrLocked))
	first.Unlock()
	fmt.Println("after unlock:", second.TryLock(ctx))
	second.Unlock()
	// Output:
	// second: true
	// after unlock: <nil>
}

func ExampleLocker_GetLock() {
	locker, cleanup := exampleLocker("example_getlock") // a Locker, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	// MySQL-style advisory locks, by owner name: wait up to 1s, hold for 30s.
	if err := locker.GetLock(ctx, "import", "worker-1", time.Second, 30*time.Second); err != nil {
		log.Fatal(err)
	}
	owner, _ := locker.IsUsedLock(ctx, "import")
	fmt.Println("used by", owner)

	err := locker.GetLock(ctx, "import", "worker-2", 100*time.Millisecond, 30*time.Second)
	fmt.Println("worker-2 locked out:", errors.Is(err, mongolock.ErrLocked), errors.Is(err, context.DeadlineExceeded))

	fmt.Println("release:", locker.ReleaseLock(ctx, "import", "worker-1"))
	free, _ := locker.IsFreeLock(ctx, "import")
	fmt.Println("free:", free)
	// Output:
	// used by worker-1
	// worker-2 locked out: true true
	// release: <nil>
	// free: true
}

func ExampleSession() {
	locker, cleanup := exampleLocker("example_session") // a Locker, made as in Example_cron
	defer cleanup()

	// The session lives as long as ctx; Done tells when it ended.
	ctx, cancel := context.WithCancel(context.Background())
	session, err := locker.NewSession(ctx, mongolock.WithOwner("billing-7"), mongolock.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	m := session.NewMutex("invoices")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	owner, _ := locker.IsUsedLock(context.Background(), "invoices")
	fmt.Println("held by", owner)

	cancel() // ends the session: its locks are released
	<-session.Done()
	session.Close() // waits for the release
	<-m.Done()
	fmt.Println("hold ended:", errors.Is(m.Err(), mongolock.ErrSessionClosed))
	free, _ := locker.IsFreeLock(context.Background(), "invoices")
	fmt.Println("free:", free)
	// Output:
	// held by billing-7
	// hold ended: true
	// free: true
}

func ExampleElection_Campaign() {
	locker, cleanup := exampleLocker("example_election") // a Locker, made as in Example_cron
	defer cleanup()
	ctx := context.Background()
	session, err := locker.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	election := session.NewElection("scheduler")

	// The loop a leader runs: campaign, lead under a context that ends
	// with the leadership, campaign again.
	for term := 1; term <= 2; term++ {
		if err := election.Campaign(ctx, "host-a"); err != nil {
			log.Fatal(err)
		}
		leaderCtx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		go func() { // ends leaderCtx as soon as leadership ends
			defer close(stopped)
			select {
			case <-election.Done():
				cancel()
			case <-leaderCtx.Done():
			}
		}()

		leader, _ := election.Leader(ctx)
		fmt.Printf("term %d: %s leads\n", term, leader)
		lead(leaderCtx) // the leader's work, until done or leadership lost

		cancel()
		<-stopped
		if err := election.Resign(ctx); err != nil {
			log.Fatal(err)
		}
	}
	_, err = election.Leader(ctx)
	fmt.Println("after resigning:", errors.Is(err, mongolock.ErrNoLeader))
	// Output:
	// term 1: host-a leads
	// term 2: host-a leads
	// after resigning: true
}

// lead stands for a leader's work: it returns when done or when ctx ends.
func lead(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Millisecond):
	}
}

// A job that cron starts every minute on several hosts, a little apart:
// the lock stays taken for 50s of each minute however quickly the job
// ends, so a host that fires late finds it taken and skips the tick. A job
// that hangs is ended after 5 minutes.
func ExampleWithHoldAtLeast() {
	session, cleanup := exampleSession("example_hold") // a Session, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	job := session.NewMutex("nightly-report",
		mongolock.WithHoldAtLeast(50*time.Second), mongolock.WithHoldAtMost(5*time.Minute))
	if err := job.TryLock(ctx); errors.Is(err, mongolock.ErrLocked) {
		fmt.Println("another host ran this tick")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println("running the report") // stop if job.Done() closes: the cap
	job.Unlock()                      // the lock stays taken for the rest of the 50s

	late := session.NewMutex("nightly-report") // a host whose cron fired late
	fmt.Println(late.TryLock(ctx))
	// Output:
	// running the report
	// mongolock: locked by another holder: "nightly-report"
}

// At most two imports run at once, across every process: each takes a
// permit and gives it back when done.
func ExampleSemaphore_Acquire() {
	session, cleanup := exampleSession("example_semaphore") // a Session, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	imports := session.NewSemaphore("import", 2)
	first, err := imports.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer first.Release()
	second, err := imports.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("slots", first.Slot(), second.Slot())
	_, err = imports.TryAcquire(ctx)
	fmt.Println("third:", errors.Is(err, mongolock.ErrLocked))
	second.Release()
	// Output:
	// slots 0 1
	// third: true
}

// Many readers of a shared table, or one writer: a writer waiting keeps
// new readers out, so it is not starved.
func ExampleRWMutex() {
	session, cleanup := exampleSession("example_rwmutex") // a Session, made as in Example_cron
	defer cleanup()
	ctx := context.Background()

	reader, writer := session.NewRWMutex("prices"), session.NewRWMutex("prices")
	if err := reader.RLock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("writer while read:", errors.Is(writer.TryLock(ctx), mongolock.ErrLocked))
	reader.RUnlock()
	if err := writer.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer writer.Unlock()
	fmt.Println("writing with token", writer.Token())
	// Output:
	// writer while read: true
	// writing with token 1
}

// The leader loop, as the README shows it: Run campaigns, runs lead while
// this process leads, with a context cancelled the moment leadership
// ends, and campaigns again; lead writes with the leadership's fencing
// token, so that a leader that lost its lease while paused cannot
// overwrite a newer leader's work.
func ExampleElection_Run() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	db := client.Database("mongolock_test")
	db.Collection("example_leader_locks").Drop(ctx) // (the example starts afresh)
	defer db.Collection("example_leader_locks").Drop(context.Background())
	defer db.Collection("example_leader_state").Drop(context.Background())

	locker, err := mongolock.New(db.Collection("example_leader_locks"))
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()
	session, err := locker.NewSession(ctx, mongolock.WithTTL(30*time.Second)) // 30s on a replica set
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()

	election := session.NewElection("scheduler")
	err = election.Run(ctx, "host-a:8080", func(leaderCtx context.Context) {
		err := schedule(leaderCtx, db.Collection("example_leader_state"), election.Token())
		fmt.Println("led with token", election.Token(), "error:", err)
		stop() // here: end the example; a real leader works until leaderCtx ends
		<-leaderCtx.Done()
	}, mongolock.OnStoppedLeading(func() { fmt.Println("stopped leading") }))
	fmt.Println(err)
	// Output:
	// led with token 1 error: <nil>
	// stopped leading
	// context canceled
}

// schedule stands for a leader's work: every write to the state it leads
// carries its fencing token, and is refused (ErrStaleToken) once a newer
// leader has written.
func schedule(ctx context.Context, state *mongo.Collection, token int64) error {
	_, err := mongolock.FencedUpdateOne(ctx, state, token,
		bson.D{{Key: "_id", Value: "next-run"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: "03:00"}}}},
		options.UpdateOne().SetUpsert(true))
	return err
}

// FencedUpdateOne writes to a collection of your own only while no newer
// holder of the lock has written: a holder paused past its lease cannot
// overwrite its successor's work.
func ExampleFencedUpdateOne() {
	session, cleanup := exampleSession("example_fence") // a Session, made as in Example_cron
	defer cleanup()
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Disconnect(ctx)
	reports := client.Database("mongolock_test").Collection("example_fence_reports")
	defer reports.Drop(ctx)

	filter := bson.D{{Key: "_id", Value: "2026-12-06"}}
	write := func(token int64, status string) error {
		update := bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: status}}}}
		_, err := mongolock.FencedUpdateOne(ctx, reports, token, filter, update, options.UpdateOne().SetUpsert(true))
		return err
	}
	first := session.NewMutex("nightly-report")
	if err := first.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	old := first.Token()
	first.Unlock() // say its hold was lost while it was paused

	next := session.NewMutex("nightly-report")
	if err := next.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	defer next.Unlock()
	fmt.Println("written:", write(next.Token(), "done") == nil)

	// The first holder wakes up and writes with its older token: refused.
	err = write(old, "half done")
	fmt.Println("stale write refused:", errors.Is(err, mongolock.ErrStaleToken))
	// Output:
	// written: true
	// stale write refused: true
}
