package mongotest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock/mongotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t testing.TB, opts ...mongotest.Option) *mongotest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := mongotest.Start(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

// TestAtomicAcquire races 8 clients on a conditional findOneAndUpdate
// acquire of one document; the proxy must make it atomic: never two holders.
func TestAtomicAcquire(t *testing.T) {
	srv := start(t)
	const clients, perClient = 8, 130 // 1,040 acquisitions
	var holders, overlaps, acquired atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		coll := connect(t, srv.URI()).Database("mongotest").Collection("atomic")
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- race(coll, fmt.Sprint("client-", i), perClient, &holders, &overlaps, &acquired)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d overlapping holders in %d acquisitions", n, acquired.Load())
	}
	t.Logf("%d acquisitions, no overlap", acquired.Load())
}

func race(coll *mongo.Collection, me string, want int, holders, overlaps, acquired *atomic.Int64) error {
	ctx := context.Background()
	filter := bson.D{{Key: "_id", Value: "lock"}, {Key: "holder", Value: nil}}
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: me}}}}
	opts := options.FindOneAndUpdate().SetUpsert(true)
	for got := 0; got < want; {
		err := coll.FindOneAndUpdate(ctx, filter, update, opts).Err()
		switch {
		case mongo.IsDuplicateKeyError(err):
			continue
		case errors.Is(err, mongo.ErrNoDocuments), err == nil:
			// upsert returns no document before the update; either way we hold it.
		default:
			return err
		}
		if holders.Add(1) > 1 {
			overlaps.Add(1)
		}
		acquired.Add(1)
		got++
		holders.Add(-1)
		res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "holder", Value: me}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}}}})
		if err != nil {
			return err
		}
		if res.ModifiedCount != 1 {
			return fmt.Errorf("%s: release matched %d documents", me, res.ModifiedCount)
		}
	}
	return nil
}

// TestRestartKeepsData checks that a server on a chosen folder keeps its data
// across Restart and that the address stays the same.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, mongotest.WithDataDir(dir))
	coll := connect(t, srv.URI()).Database("mongotest").Collection("restart")
	ctx := context.Background()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("after restart: %d documents, want 1", n)
	}
}

// TestCut checks that a cut server is unreachable and comes back.
func TestCut(t *testing.T) {
	srv := start(t)
	c := connect(t, srv.URI())
	ctx := context.Background()
	if err := c.Ping(ctx, nil); err != nil {
		t.Fatal(err)
	}
	srv.Cut(true)
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := c.Ping(short, nil)
	cancel()
	if err == nil {
		t.Fatal("ping succeeded through a cut proxy")
	}
	srv.Cut(false)
	if err := c.Ping(ctx, nil); err != nil {
		t.Fatalf("after cut: %v", err)
	}
}
