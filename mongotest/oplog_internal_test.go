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

// TestRotationRacingScratchWrite: a filter's scratch write (which does not
// take the serial lock) may bring the oplog back between the tailer's drop
// and its create. The entries the tailer read before still reach the
// streams: they have left the oplog, so dropping them would lose them.
func TestRotationRacingScratchWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var once sync.Once
	testHookRotated = func(c *mongo.Client) {
		once.Do(func() {
			// As FerretDB does for a scratch write's oplog entry.
			c.Database(oplogDB).Collection(oplogColl).InsertOne(ctx, bson.D{{Key: "ns", Value: scratchDB + ".x"}})
		})
	}
	defer func() { testHookRotated = nil }()
	client, err := mongo.Connect(mopt.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("race").Collection("rot")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(context.Background())
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	next, cancelNext := context.WithTimeout(ctx, 10*time.Second)
	defer cancelNext()
	if !cs.Next(next) {
		t.Fatalf("the insert's event never came: %v", cs.Err())
	}
	if id := cs.Current.Lookup("documentKey", "_id").StringValue(); id != "a" {
		t.Fatalf("event for %q, want a", id)
	}
}
