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
	coll, cs, hooked := watchWithHook(t, ctx, "read", func(c *mongo.Client) {
		c.Database("race").Collection("read").InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}})
	})
	expectEvents(t, ctx, coll, cs, hooked, "a", "b", "c")
}

// TestLateEntryNotLost: an entry logged with a timestamp older than one
// already read (a write whose connection was cut while FerretDB ran it, or
// one sent to FerretDB directly, logs so) is delivered after it, not
// skipped as read before, and not deleted unread.
func TestLateEntryNotLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	coll, cs, hooked := watchWithHook(t, ctx, "late", func(c *mongo.Client) {
		// As FerretDB logs a write that got its timestamp long ago.
		c.Database(oplogDB).Collection(oplogColl).InsertOne(ctx, bson.D{
			{Key: "op", Value: "i"}, {Key: "ns", Value: "race.late"}, {Key: "ts", Value: bson.Timestamp{T: 1, I: 1}},
			{Key: "o", Value: bson.D{{Key: "_id", Value: "late"}}}, {Key: "wall", Value: time.Now()},
		})
	})
	expectEvents(t, ctx, coll, cs, hooked, "a", "late", "c")
}

// watchWithHook starts a server, watches race.<coll>, and has write run
// once, from within the first read of the oplog that found entries; the
// returned channel is closed when it has.
func watchWithHook(t *testing.T, ctx context.Context, coll string, write func(*mongo.Client)) (*mongo.Collection, *mongo.ChangeStream, <-chan struct{}) {
	t.Helper()
	srv, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	client, err := mongo.Connect(mopt.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Disconnect(context.Background()) })
	c := client.Database("race").Collection(coll)
	cs, err := c.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(context.Background()) })
	var once sync.Once
	hooked := make(chan struct{})
	tail := srv.proxy.streams.tail
	tail.stepMu.Lock()
	tail.afterRead = func(c *mongo.Client) {
		once.Do(func() {
			defer close(hooked)
			write(c)
		})
	}
	tail.stepMu.Unlock()
	return c, cs, hooked
}

// expectEvents writes a, then c once hooked is closed, and checks that cs
// reports the documents want, in order.
func expectEvents(t *testing.T, ctx context.Context, coll *mongo.Collection, cs *mongo.ChangeStream, hooked <-chan struct{}, want ...string) {
	t.Helper()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if i == 1 {
			<-hooked // the hook's write is done
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "c"}}); err != nil {
				t.Fatal(err)
			}
		}
		next, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok := cs.Next(next)
		cancel()
		if !ok {
			t.Fatalf("%s: no event: %v", w, cs.Err())
		}
		if id := cs.Current.Lookup("documentKey", "_id").StringValue(); id != w {
			t.Fatalf("event for %q, want %s", id, w)
		}
	}
}
