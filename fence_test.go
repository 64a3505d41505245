package mongolock_test

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// TestFencedUpdateOne (issue 22, item 4): holder A is paused past its
// lease (its renewals cut off, its write held back); B takes the lock and
// writes; A's write, arriving after B's, is refused with ErrStaleToken and
// nothing of it lands.
func TestFencedUpdateOne(t *testing.T) {
	e := newEnv(t)
	proxy, uri := newCutProxy(t)
	la, _ := e.locker(uri)
	lb, _ := e.locker("", mongolock.WithPollInterval(20*time.Millisecond))
	client, _ := connect(t, "")
	data := client.Database(testDB).Collection(collName(t)) // the resource the lock protects
	ctx := ctxT(t, time.Minute)

	a := session(t, la, mongolock.WithTTL(time.Second), mongolock.WithRenewInterval(100*time.Millisecond)).NewMutex("res")
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	tokA := a.Token()
	write := func(tok int64, who string) error {
		_, err := mongolock.FencedUpdateOne(ctx, data, tok, bson.D{{Key: "_id", Value: "r"}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "by", Value: who}}}, {Key: "$inc", Value: bson.D{{Key: "writes", Value: 1}}}},
			options.UpdateOne().SetUpsert(true))
		return err
	}
	if err := write(tokA, "A"); err != nil {
		t.Fatalf("A's first write: %v", err)
	}
	proxy.Cut() // A is paused: nothing of it reaches the server
	<-a.Done()
	b := session(t, lb).NewMutex("res")
	if err := b.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Token() <= tokA {
		t.Fatalf("B's token %d is not above A's %d", b.Token(), tokA)
	}
	if err := write(b.Token(), "B"); err != nil {
		t.Fatalf("B's write: %v", err)
	}
	proxy.Restore() // A resumes, its write arrives after B's
	if err := write(tokA, "A late"); !errors.Is(err, mongolock.ErrStaleToken) {
		t.Fatalf("A's late write = %v, want ErrStaleToken", err)
	}
	var doc struct {
		By     string `bson:"by"`
		Writes int    `bson:"writes"`
		Fence  int64  `bson:"mongolockFence"`
	}
	if err := data.FindOne(ctx, bson.D{{Key: "_id", Value: "r"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.By != "B" || doc.Writes != 2 || doc.Fence != b.Token() {
		t.Fatalf("after A's refused write the document is %+v: want B's write, 2 writes, B's token %d", doc, b.Token())
	}
	// No document matching: no write, no error, nothing matched.
	res, err := mongolock.FencedUpdateOne(ctx, data, b.Token(), bson.D{{Key: "_id", Value: "none"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "by", Value: "B"}}}})
	if err != nil || res.MatchedCount != 0 {
		t.Fatalf("a write to no document: %+v, %v", res, err)
	}
	b.Unlock()
}

// TestFencedUpdateOneBadInput: what cannot be fenced is refused with a
// typed error before anything is sent.
func TestFencedUpdateOneBadInput(t *testing.T) {
	client, cnt := connect(t, "")
	data := client.Database(testDB).Collection(collName(t))
	ctx := ctxT(t, time.Minute)
	id := bson.D{{Key: "_id", Value: "r"}}
	set := bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: 1}}}}
	cnt.Reset()
	for _, c := range []struct {
		name   string
		token  int64
		update bson.D
		want   error
	}{
		{"token 0", 0, set, mongolock.ErrInvalidOption},
		{"negative token", -3, set, mongolock.ErrInvalidOption},
		{"replacement", 1, bson.D{{Key: "v", Value: 1}}, mongolock.ErrInvalidOption},
		{"empty update", 1, bson.D{}, mongolock.ErrInvalidOption},
		{"$set not a bson.D", 1, bson.D{{Key: "$set", Value: bson.M{"v": 1}}}, mongolock.ErrInvalidOption},
		{"$and not an array", 1, set, mongolock.ErrInvalidOption},
		{"sets the fence", 1, bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.FenceField, Value: 9}}}}, mongolock.ErrInvalidOption},
	} {
		filter := id
		if c.name == "$and not an array" {
			filter = bson.D{{Key: "$and", Value: bson.D{{Key: "v", Value: 1}}}}
		}
		if _, err := mongolock.FencedUpdateOne(ctx, data, c.token, filter, c.update); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := mongolock.FencedUpdateOne(ctx, nil, 1, id, set); !errors.Is(err, mongolock.ErrNilCollection) {
		t.Errorf("nil collection: %v", err)
	}
	if n := cnt.Count(); n != 0 {
		t.Fatalf("%d commands sent for bad input: %v", n, cnt.Commands())
	}
}
