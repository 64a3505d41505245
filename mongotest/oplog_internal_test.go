package mongotest

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestEntryLoggedDuringReadIsKept: a step deletes only the oplog entries
// it read. An entry logged between its read and its deletion (a write
// that does not take the serial lock: here one straight to FerretDB, in
// mongotest a filter's scratch write) stays in the oplog for the next step:
// its event is not lost, and comes at the next step (the next write's).
func TestEntryLoggedDuringReadIsKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, err := mongo.Connect(mopt.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("race").Collection("read")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(context.Background())
	var once sync.Once
	hooked := make(chan struct{})
	tail := srv.proxy.streams.tail
	tail.stepMu.Lock()
	tail.afterRead = func(c *mongo.Client) {
		once.Do(func() {
			defer close(hooked)
			c.Database("race").Collection("read").InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}})
		})
	}
	tail.stepMu.Unlock()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a", "b", "c"} {
		if want == "b" {
			<-hooked // b is written, its entry left in the oplog
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "c"}}); err != nil {
				t.Fatal(err)
			}
		}
		next, cancelNext := context.WithTimeout(ctx, 10*time.Second)
		if !cs.Next(next) {
			t.Fatalf("the insert of %s: no event: %v", want, cs.Err())
		}
		cancelNext()
		if id := cs.Current.Lookup("documentKey", "_id").StringValue(); id != want {
			t.Fatalf("event for %q, want %s", id, want)
		}
	}
}

// TestLateEntryNotLost: an entry logged with a timestamp older than one
// already read (a write whose connection was cut while FerretDB ran it, or
// one sent to FerretDB directly, logs so) is delivered after it, not
// skipped as read before, and not deleted unread.
func TestLateEntryNotLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, err := mongo.Connect(mopt.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("race").Collection("late")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(context.Background())
	var once sync.Once
	hooked := make(chan struct{})
	tail := srv.proxy.streams.tail
	tail.stepMu.Lock()
	tail.afterRead = func(c *mongo.Client) {
		once.Do(func() {
			defer close(hooked)
			// As FerretDB logs a write that got its timestamp long ago.
			c.Database(oplogDB).Collection(oplogColl).InsertOne(ctx, bson.D{
				{Key: "op", Value: "i"}, {Key: "ns", Value: "race.late"}, {Key: "ts", Value: bson.Timestamp{T: 1, I: 1}},
				{Key: "o", Value: bson.D{{Key: "_id", Value: "late"}}}, {Key: "wall", Value: time.Now()},
			})
		})
	}
	tail.stepMu.Unlock()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a", "late", "c"} {
		if want == "late" {
			<-hooked
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "c"}}); err != nil {
				t.Fatal(err)
			}
		}
		next, cancelNext := context.WithTimeout(ctx, 10*time.Second)
		if !cs.Next(next) {
			t.Fatalf("%s: no event: %v", want, cs.Err())
		}
		cancelNext()
		if id := cs.Current.Lookup("documentKey", "_id").StringValue(); id != want {
			t.Fatalf("event for %q, want %s", id, want)
		}
	}
}
