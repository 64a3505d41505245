package mongolock_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// TestHelperDeadWaiters is not a test of its own: TestDeadWaitersLeave runs
// it in a child process, where it starts MONGOLOCK_DEAD_WAITERS Lockers
// that each wait for the lock MONGOLOCK_DEAD_NAME of the collection
// MONGOLOCK_DEAD_COLL, and then waits to be killed.
func TestHelperDeadWaiters(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MONGOLOCK_DEAD_WAITERS"))
	if n == 0 {
		t.Skip("run by TestDeadWaitersLeave")
	}
	streams := os.Getenv("MONGOLOCK_DEAD_STREAMS") == "1"
	client, _ := connect(t, "")
	coll := client.Database(testDB).Collection(os.Getenv("MONGOLOCK_DEAD_COLL"))
	for range n {
		l, err := mongolock.New(coll, mongolock.WithChangeStreams(streams),
			mongolock.WithPollInterval(time.Hour), mongolock.WithSafetyPollInterval(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.NewSession(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		go s.NewMutex(os.Getenv("MONGOLOCK_DEAD_NAME")).Lock(context.Background())
	}
	select {} // until SIGKILL
}

// lockDocSize returns the size in bytes of the lock document name, and
// how many entries its waiting Lockers have (waiting, pollers, since).
func lockDocSize(t *testing.T, e *env, name string) (size, entries int) {
	t.Helper()
	client, _ := connect(t, "")
	raw, err := client.Database(testDB).Collection(e.coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: name}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"waiting", "pollers", "since"} {
		if doc, ok := raw.Lookup(f).DocumentOK(); ok {
			elems, _ := doc.Elements()
			entries += len(elems)
		}
	}
	return len(raw), entries
}

// warm reports whether a live waiter has joined the lock "cron": as one
// with a change stream when streams.
func warm(t *testing.T, coll *mongo.Collection, streams bool) bool {
	t.Helper()
	raw, err := coll.FindOne(context.Background(), bson.D{{Key: "_id", Value: "cron"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if streams {
		_, err := raw.LookupErr("lastJoined")
		return err == nil
	}
	_, err = raw.LookupErr("pollers")
	return err == nil
}

// TestDeadWaitersLeave (issue 22, item 2): 1,000 polling Lockers (50 with
// change streams) wait for a held lock and are SIGKILLed; the live process
// takes it with a Mutex, or with GetLock and ReleaseLock. Until their
// entries go stale each costs the lock one turn at most, once; once stale
// (two minutes, shortened here), three lock/unlock cycles leave none of
// their entries, and the document is back to its size before they came;
// the releases that remove them send nothing more than releases do.
func TestDeadWaitersLeave(t *testing.T) {
	if os.Getenv("MONGOLOCK_DEAD_WAITERS") != "" {
		t.Skip("the child's own run")
	}
	// Each streaming Locker opens a change stream of its own, and mongotest
	// serves a few dozen at a useful pace (200 took 197s to join; 1,000
	// never all did): the streaming case kills fewer.
	for _, c := range []struct {
		streams bool
		seed    bool // the live process takes the lock with GetLock and ReleaseLock
		dead    int  // waiters killed
	}{{true, false, 50}, {false, false, 1000}, {false, true, 100}} {
		streams := c.streams
		t.Run(fmt.Sprintf("streams=%v/seed=%v", c.streams, c.seed), func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxT(t, 5*time.Minute)
			l, cnt := e.locker("", mongolock.WithChangeStreams(streams))
			reader, _ := connect(t, "")
			live, _ := e.locker("", mongolock.WithChangeStreams(streams))
			m := session(t, l).NewMutex("cron")
			// A live waiter first, so that the document has the fields
			// waiters leave behind.
			if err := m.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			lm := session(t, live).NewMutex("cron")
			got := make(chan error, 1)
			go func() { got <- lm.Lock(ctx) }()
			// Streaming, it joins as one (with the lastJoined field a
			// joiner writes) once its stream is on.
			for !warm(t, reader.Database(testDB).Collection(e.coll), streams) {
				time.Sleep(10 * time.Millisecond)
			}
			m.Unlock()
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			lm.Unlock()
			if err := m.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			lock, unlock := m.Lock, func() { m.Unlock() }
			if c.seed {
				m.Unlock()
				lock = func(ctx context.Context) error { return l.GetLock(ctx, "cron", "live", -1, time.Minute) }
				unlock = func() {
					if err := l.ReleaseLock(ctx, "cron", "live"); err != nil {
						t.Fatal(err)
					}
				}
				if err := lock(ctx); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := lockDocSize(t, e, "cron")

			child := exec.Command(os.Args[0], "-test.run=^TestHelperDeadWaiters$", "-test.count=1")
			child.Env = append(os.Environ(), "MONGOLOCK_DEAD_WAITERS="+strconv.Itoa(c.dead),
				"MONGOLOCK_DEAD_COLL="+e.coll, "MONGOLOCK_DEAD_NAME=cron", "MONGOLOCK_DEAD_STREAMS="+map[bool]string{true: "1", false: "0"}[streams])
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			for _, n := lockDocSize(t, e, "cron"); n < c.dead; _, n = lockDocSize(t, e, "cron") {
				if ctx.Err() != nil {
					child.Process.Kill()
					child.Wait()
					t.Fatalf("only %d of %d waiters joined", n, c.dead)
				}
				time.Sleep(100 * time.Millisecond)
			}
			child.Process.Kill() // SIGKILL
			child.Wait()
			grown, n := lockDocSize(t, e, "cron")
			t.Logf("%d dead waiters: the document grew from %d to %d bytes", n, before, grown)

			// Before their entries go stale: each release names at most one
			// dead heir, each once.
			cycle := func() (heir string) {
				t.Helper()
				unlock()
				raw, err := reader.Database(testDB).Collection(e.coll).FindOne(ctx, bson.D{{Key: "_id", Value: "cron"}}).Raw()
				if err != nil {
					t.Fatal(err)
				}
				if err := lock(ctx); err != nil {
					t.Fatal(err)
				}
				heir, _ = raw.Lookup("heir").StringValueOK()
				return heir
			}
			named := map[string]bool{}
			for range 3 {
				if h := cycle(); h != "" {
					if named[h] {
						t.Fatalf("the dead waiter %s was named heir twice", h)
					}
					named[h] = true
				}
			}
			// Two minutes later (shortened): the next acquire sees every
			// entry stale, and its release removes them in the same write:
			// that cycle sends one release and one acquire, no more.
			defer mongolock.SetStaleAfter(time.Millisecond)()
			cycle()
			cnt.Reset()
			cycle()
			sent := slices.DeleteFunc(cnt.Commands(), func(c string) bool { return c == "getMore" }) // the change stream's own
			if !slices.Equal(sent, []string{"update", "findAndModify"}) {
				t.Fatalf("the cycle that removes the entries sent %v, want one release and one acquire", sent)
			}
			cycle()
			size, left := lockDocSize(t, e, "cron")
			if left != 0 {
				t.Fatalf("%d entries of dead waiters left after three cycles", left)
			}
			if size > before {
				t.Fatalf("the document is %d bytes, %d before the waiters came", size, before)
			}
			t.Logf("after three cycles: %d bytes, no entry left", size)
			unlock()
		})
	}
}
