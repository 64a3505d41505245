package gocronlock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/gocronlock"
	"github.com/mongolock/mongolock/internal/cutproxy"
)

func TestMain(m *testing.M) {
	if os.Getenv("MONGODB_URI") == "" {
		fmt.Fprintln(os.Stderr, "these tests need a server: run `make test` (embedded server), or set MONGODB_URI")
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// host is one scheduler's process: its own client, Locker and session.
type host struct {
	locker  *mongolock.Locker
	session *mongolock.Session
}

// newHost connects through uri (MONGODB_URI when "") to the collection
// coll; everything is closed at the end of the test.
func newHost(t *testing.T, uri, coll string, ttl time.Duration) *host {
	t.Helper()
	if uri == "" {
		uri = os.Getenv("MONGODB_URI")
	}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	l, err := mongolock.New(c.Database("mongolock_test").Collection(coll))
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.NewSession(context.Background(), mongolock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.Database("mongolock_test").Collection(coll).Drop(ctx)
		c.Disconnect(ctx)
	})
	return &host{locker: l, session: s}
}

func collName() string {
	var b [4]byte
	rand.Read(b[:])
	return "gocron_" + hex.EncodeToString(b[:])
}

// runs records the job's runs: which scheduler, and the lock's state then.
type runs struct {
	mu   sync.Mutex
	list []run
}

type run struct {
	host  int
	token int64     // fencing token of the hold the run had
	at    time.Time // server time of its acquire
}

func (r *runs) add(x run) {
	r.mu.Lock()
	r.list = append(r.list, x)
	r.mu.Unlock()
}

func (r *runs) all() []run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]run(nil), r.list...)
}

// scheduler starts a gocron scheduler with opt running a 1-second job
// that records its runs; it is shut down at the end of the test.
func scheduler(t *testing.T, opt gocron.SchedulerOption, job func()) gocron.Scheduler {
	t.Helper()
	s, err := gocron.NewScheduler(opt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewJob(gocron.DurationJob(time.Second), gocron.NewTask(job), gocron.WithName("report")); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown() })
	return s
}

// TestLockerRunsEachTickOnce: two schedulers (two hosts) fire the same
// 1-second job 0.3s apart for 6 seconds: with WithHoldAtLeast(900ms) the
// job runs about 6 times in all, and never twice for one tick (two runs'
// acquires are at least 900ms apart in server time).
func TestLockerRunsEachTickOnce(t *testing.T) {
	coll := collName()
	var got runs
	var scheds []gocron.Scheduler
	for i := range 2 {
		h := newHost(t, "", coll, 5*time.Second)
		lk, err := gocronlock.NewLocker(h.session, "jobs/", mongolock.WithHoldAtLeast(900*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		scheds = append(scheds, scheduler(t, gocron.WithDistributedLocker(lk), func() {
			st, err := h.locker.Status(context.Background(), "jobs/report")
			if err != nil {
				t.Error(err)
				return
			}
			got.add(run{host: i, token: st.Token, at: st.AcquiredAt})
			time.Sleep(50 * time.Millisecond)
		}))
		if i == 0 {
			time.Sleep(300 * time.Millisecond)
		}
	}
	time.Sleep(6 * time.Second)
	for _, s := range scheds {
		s.Shutdown()
	}
	list := got.all()
	t.Logf("%d runs: %+v", len(list), list)
	if len(list) < 4 || len(list) > 7 {
		t.Fatalf("%d runs in 6 seconds of two schedulers, want about 6", len(list))
	}
	for i := 1; i < len(list); i++ {
		if list[i].token <= list[i-1].token || list[i].at.Sub(list[i-1].at) < 900*time.Millisecond {
			t.Fatalf("runs %d and %d (%+v, %+v) belong to one tick", i-1, i, list[i-1], list[i])
		}
	}
}

// TestElectorOnlyLeaderRuns: with the Elector, only the leader's
// scheduler runs the job; when the leader's link is cut, its scheduler
// stops running it before the other's runs begin, and the other takes
// over once the lease has run out.
func TestElectorOnlyLeaderRuns(t *testing.T) {
	coll := collName()
	proxy, proxied, err := cutproxy.ForURI(os.Getenv("MONGODB_URI"))
	if err != nil {
		t.Skipf("needs a single-host MONGODB_URI: %v", err)
	}
	defer proxy.Close()
	const ttl = 3 * time.Second
	hosts := []*host{newHost(t, proxied, coll, ttl), nil}
	var got runs
	var electors []*gocronlock.Elector
	for i := range 2 {
		if hosts[i] == nil {
			// The second host starts once the first leads.
			for free := true; free; time.Sleep(20 * time.Millisecond) {
				free, _ = hosts[0].locker.IsFreeLock(context.Background(), "leader")
			}
			hosts[i] = newHost(t, "", coll, ttl)
		}
		el, err := gocronlock.NewElector(context.Background(), hosts[i].session, "leader", fmt.Sprint("host", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { el.Close() })
		electors = append(electors, el)
		scheduler(t, gocron.WithDistributedElector(el), func() { got.add(run{host: i, at: time.Now()}) })
	}
	time.Sleep(3500 * time.Millisecond)
	before := got.all()
	for _, r := range before {
		if r.host != 0 {
			t.Fatalf("host %d ran the job while host 0 led: %+v", r.host, before)
		}
	}
	if len(before) < 2 {
		t.Fatalf("the leader ran the job %d times in 3.5s: %+v", len(before), before)
	}
	cut := time.Now()
	proxy.Cut()
	// The second host takes over within the TTL (and a tick).
	deadline := time.Now().Add(30 * time.Second)
	for {
		list := got.all()
		if n := len(list); n > 0 && list[n-1].host == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no takeover: %+v", got.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if electors[0].IsLeader(context.Background()) == nil {
		t.Fatal("the cut-off host still says it leads after the other took over")
	}
	list := got.all()
	first := -1
	for i, r := range list {
		if r.host == 1 && first < 0 {
			first = i
		}
		if first >= 0 && r.host == 0 {
			t.Fatalf("the cut-off host ran the job after the new leader's first run: %+v", list)
		}
	}
	t.Logf("the second host's first run came %v after the cut (TTL %v)", list[first].at.Sub(cut).Round(time.Millisecond), ttl)
}

// TestLockerSessionClosedDuringRun (issue 22, item 1): the session is
// closed while a run of the job still works (the wrong shutdown order):
// the run's lock stays taken until the run's Unlock, and Close waits for
// it; another host cannot take it before.
func TestLockerSessionClosedDuringRun(t *testing.T) {
	coll := collName()
	a, b := newHost(t, "", coll, 5*time.Second), newHost(t, "", coll, 5*time.Second)
	la, err := gocronlock.NewLocker(a.session, "jobs/")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := gocronlock.NewLocker(b.session, "jobs/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run, err := la.Lock(ctx, "report")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- a.session.Close() }()
	<-a.session.Done()
	if _, err := lb.Lock(ctx, "report"); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("another host's Lock while the run works after its session's Close = %v, want ErrLocked", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Session.Close returned (%v) while the run still worked", err)
	default:
	}
	run.Unlock(ctx)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	other, err := lb.Lock(ctx, "report")
	if err != nil {
		t.Fatalf("another host's Lock after the run's Unlock = %v", err)
	}
	other.Unlock(ctx)
}
