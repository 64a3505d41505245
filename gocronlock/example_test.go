package gocronlock_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-co-op/gocron/v2"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/gocronlock"
)

// Every host runs the same scheduler; each tick of the report job runs on
// one of them. The lock is held at least 50s of the job's minute, so that
// hosts whose schedulers fire a little apart do not run it twice.
func ExampleLocker() {
	ctx := context.Background()
	client, _ := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	defer client.Disconnect(ctx)
	locker, _ := mongolock.New(client.Database("mongolock_example").Collection("locks"))
	defer locker.Close()
	session, err := locker.NewSession(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer session.Close()

	jobs, _ := gocronlock.NewLocker(session, "cron/", mongolock.WithHoldAtLeast(50*time.Second))
	s, _ := gocron.NewScheduler(gocron.WithDistributedLocker(jobs))
	s.NewJob(gocron.DurationJob(time.Minute), gocron.NewTask(func() { fmt.Println("report") }),
		gocron.WithName("report"), gocron.WithStartAt(gocron.WithStartImmediately()))
	s.Start()
	time.Sleep(500 * time.Millisecond)
	s.Shutdown()
	// Output: report
}

// Only the leader's scheduler runs jobs; another host's takes over when
// the leader's session ends or its lease is lost.
func ExampleElector() {
	ctx := context.Background()
	client, _ := mongo.Connect(options.Client().ApplyURI(os.Getenv("MONGODB_URI")))
	defer client.Disconnect(ctx)
	locker, _ := mongolock.New(client.Database("mongolock_example").Collection("locks"))
	defer locker.Close()
	session, err := locker.NewSession(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer session.Close()

	leader, _ := gocronlock.NewElector(ctx, session, "cron-leader", "host-a")
	defer leader.Close()
	for leader.IsLeader(ctx) != nil { // for the example's output only
		time.Sleep(10 * time.Millisecond)
	}
	s, _ := gocron.NewScheduler(gocron.WithDistributedElector(leader))
	s.NewJob(gocron.DurationJob(time.Minute), gocron.NewTask(func() { fmt.Println("leader's report") }),
		gocron.WithStartAt(gocron.WithStartImmediately()))
	s.Start()
	time.Sleep(500 * time.Millisecond)
	s.Shutdown()
	// Output: leader's report
}
