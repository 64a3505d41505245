package mongotest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock/mongotest"
)

// nextEvent returns the stream's next event, failing the test after 10s.
func nextEvent(t *testing.T, cs *mongo.ChangeStream) bson.M {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !cs.Next(ctx) {
		t.Fatalf("no event: %v", cs.Err())
	}
	var ev bson.M
	if err := cs.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	ev["key"] = cs.Current.Lookup("documentKey", "_id")
	return ev
}

// TestChangeStreamEvents: one row per operation type, each event with the
// fields of MongoDB's documented examples (drop and invalidate: see
// TestChangeStreamDrop).
func TestChangeStreamEvents(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("events")
	ctx := context.Background()
	cs, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetFullDocument(options.UpdateLookup))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	id := bson.D{{Key: "_id", Value: "a"}}
	for _, row := range []struct {
		op    string
		write func() error
		check func(ev bson.M) string // what is wrong, "" when nothing
	}{
		{"insert", func() error {
			_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "x", Value: 1}, {Key: "y", Value: 2}})
			return err
		}, func(ev bson.M) string {
			return want(field(ev, "fullDocument"), `{"_id": "a","x": {"$numberInt":"1"},"y": {"$numberInt":"2"}}`)
		}},
		{"update", func() error {
			_, err := coll.UpdateOne(ctx, id, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 5}}}, {Key: "$unset", Value: bson.D{{Key: "y", Value: ""}}}})
			return err
		}, func(ev bson.M) string {
			return want(field(ev, "updateDescription")+" "+field(ev, "fullDocument"),
				`{"updatedFields": {"x": {"$numberInt":"5"}},"removedFields": ["y"],"truncatedArrays": []} {"_id": "a","x": {"$numberInt":"5"}}`)
		}},
		{"update", func() error { // a sub-document made
			_, err := coll.UpdateOne(ctx, id, bson.D{{Key: "$set", Value: bson.D{{Key: "sub.b", Value: 2}}}})
			return err
		}, func(ev bson.M) string {
			return want(field(ev, "updateDescription"),
				`{"updatedFields": {"sub": {"b": {"$numberInt":"2"}}},"removedFields": [],"truncatedArrays": []}`)
		}},
		{"update", func() error { // inside it: dotted paths, as MongoDB reports them
			_, err := coll.UpdateOne(ctx, id, bson.D{{Key: "$set", Value: bson.D{{Key: "sub.c", Value: 3}}},
				{Key: "$unset", Value: bson.D{{Key: "sub.b", Value: ""}}}})
			return err
		}, func(ev bson.M) string {
			return want(field(ev, "updateDescription"),
				`{"updatedFields": {"sub.c": {"$numberInt":"3"}},"removedFields": ["sub.b"],"truncatedArrays": []}`)
		}},
		{"replace", func() error {
			_, err := coll.ReplaceOne(ctx, id, bson.D{{Key: "z", Value: 3}})
			return err
		}, func(ev bson.M) string {
			if _, has := ev["updateDescription"]; has {
				return "a replace event has no updateDescription"
			}
			return want(field(ev, "fullDocument"), `{"_id": "a","z": {"$numberInt":"3"}}`)
		}},
		{"replace", func() error { // findAndModify with a replacement
			return coll.FindOneAndReplace(ctx, id, bson.D{{Key: "z", Value: 4}}).Err()
		}, func(ev bson.M) string {
			return want(field(ev, "fullDocument"), `{"_id": "a","z": {"$numberInt":"4"}}`)
		}},
		{"delete", func() error {
			_, err := coll.DeleteOne(ctx, id)
			return err
		}, func(ev bson.M) string {
			if _, has := ev["fullDocument"]; has {
				return "a delete event has no fullDocument"
			}
			return ""
		}},
	} {
		if err := row.write(); err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, cs)
		t.Logf("%v", ev)
		if ev["operationType"] != row.op {
			t.Fatalf("event %v, want %s", ev, row.op)
		}
		for _, f := range []string{"_id", "clusterTime", "wallTime"} {
			if _, ok := ev[f]; !ok {
				t.Errorf("%s event without %s", row.op, f)
			}
		}
		if got := field(ev, "ns") + " " + field(ev, "documentKey"); got != `{"db": "cs","coll": "events"} {"_id": "a"}` {
			t.Errorf("%s event: ns and documentKey %s", row.op, got)
		}
		if msg := row.check(ev); msg != "" {
			t.Errorf("%s event: %s", row.op, msg)
		}
	}
}

// field returns the event's field as extended JSON.
func field(ev bson.M, name string) string {
	raw, err := bson.Marshal(ev)
	if err != nil {
		return err.Error()
	}
	return bson.Raw(raw).Lookup(name).String()
}

func want(got, want string) string {
	if got != want {
		return fmt.Sprintf("got %s, want %s", got, want)
	}
	return ""
}

// startStreams starts a server with change streams on.
func startStreams(t *testing.T, opts ...mongotest.Option) *mongotest.Server {
	return start(t, append([]mongotest.Option{mongotest.WithChangeStreams(true)}, opts...)...)
}

func watch(t *testing.T, coll *mongo.Collection, pipeline any, opts ...options.Lister[options.ChangeStreamOptions]) *mongo.ChangeStream {
	t.Helper()
	cs, err := coll.Watch(context.Background(), pipeline, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(context.Background()) })
	return cs
}

// TestChangeStreamDrop: dropping the watched collection gives drop, then
// invalidate, and the stream ends.
func TestChangeStreamDrop(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("dropped")
	ctx := context.Background()
	coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	cs := watch(t, coll, mongo.Pipeline{})
	if err := coll.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"drop", "invalidate"} {
		if ev := nextEvent(t, cs); ev["operationType"] != want {
			t.Fatalf("event %v, want %s", ev, want)
		}
	}
	if cs.Next(ctx) {
		t.Fatal("an event after invalidate")
	}
	if srv.ChangeStreams() != 0 {
		t.Fatalf("%d cursors open after invalidate", srv.ChangeStreams())
	}
}

// TestChangeStreamMatchNull: the library's filter, evaluated by FerretDB
// on the events: a release (holder set to null) passes, a renewal
// (expiresAt only) does not.
func TestChangeStreamMatchNull(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("locks")
	ctx := context.Background()
	coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "l"}, {Key: "holder", Value: "h1"}, {Key: "expiresAt", Value: time.Now()}})
	cs := watch(t, coll, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "operationType", Value: "update"},
			{Key: "updateDescription.updatedFields.holder", Value: bson.D{{Key: "$type", Value: "null"}}}}}},
		{{Key: "$project", Value: bson.D{{Key: "operationType", Value: 1}, {Key: "documentKey", Value: 1}}}},
	})
	set := func(d bson.D) {
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "l"}}, bson.D{{Key: "$set", Value: d}}); err != nil {
			t.Fatal(err)
		}
	}
	set(bson.D{{Key: "expiresAt", Value: time.Now().Add(time.Minute)}}) // a renewal
	set(bson.D{{Key: "holder", Value: nil}})                            // a release
	ev := nextEvent(t, cs)
	if ev["operationType"] != "update" || ev["key"].(bson.RawValue).StringValue() != "l" || ev["updateDescription"] != nil {
		t.Fatalf("event %v, want the release, projected", ev)
	}
	set(bson.D{{Key: "holder", Value: "h2"}})
	set(bson.D{{Key: "holder", Value: nil}})
	nextEvent(t, cs) // the second release; the acquire in between is filtered out
	ctx2, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if cs.Next(ctx2) {
		t.Fatalf("unexpected event %v", cs.Current)
	}
}

// TestChangeStreamResume: after the server is cut off and after it
// restarts on its data, the driver resumes the stream with no event lost
// or repeated.
func TestChangeStreamResume(t *testing.T) {
	srv := startStreams(t, mongotest.WithDataDir(t.TempDir()))
	coll := connect(t, srv.URI()).Database("cs").Collection("resume")
	ctx := context.Background()
	cs := watch(t, coll, mongo.Pipeline{})
	n := 0
	insert := func() {
		t.Helper()
		n++
		for {
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: n}}); err == nil || mongo.IsDuplicateKeyError(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect := func() {
		t.Helper()
		ev := nextEvent(t, cs)
		if got := ev["key"].(bson.RawValue).Int32(); got != int32(n) {
			t.Fatalf("event for %v, want %d", got, n)
		}
	}
	insert()
	expect()
	srv.Cut(true)
	time.Sleep(100 * time.Millisecond)
	srv.Cut(false)
	insert()
	expect()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	insert()
	expect()
	insert()
	expect()
}

// TestChangeStreamHistoryLost: a stream resumed from a token the capped
// oplog no longer holds fails with ChangeStreamHistoryLost (286).
func TestChangeStreamHistoryLost(t *testing.T) {
	srv := startStreams(t, mongotest.WithOplogSize(50))
	coll := connect(t, srv.URI()).Database("cs").Collection("lost")
	ctx := context.Background()
	cs := watch(t, coll, mongo.Pipeline{})
	coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}})
	nextEvent(t, cs)
	token := cs.ResumeToken()
	for i := 1; i <= 100; i++ {
		coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}})
	}
	_, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token))
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(286) {
		t.Fatalf("resume after the oplog wrapped: %v, want ChangeStreamHistoryLost (286)", err)
	}
}

// TestChangeStreamsManyDoNotBlockWriters: 50 streams wait while 8 clients
// write: every write goes through, and every stream sees every write.
func TestChangeStreamsManyDoNotBlockWriters(t *testing.T) {
	srv := startStreams(t)
	ctx := context.Background()
	const streams, writers, each = 50, 8, 10
	var css []*mongo.ChangeStream
	for range streams {
		css = append(css, watch(t, connect(t, srv.URI()).Database("cs").Collection("many"), mongo.Pipeline{}))
	}
	var wg sync.WaitGroup
	for w := range writers {
		coll := connect(t, srv.URI()).Database("cs").Collection("many")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprint(w, "-", i)}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, cs := range css {
		for range writers * each {
			nextEvent(t, cs)
		}
	}
	if got := srv.ChangeStreams(); got != streams {
		t.Fatalf("%d cursors open, want %d", got, streams)
	}
	for _, cs := range css {
		cs.Close(ctx) // killCursors
	}
	if got := srv.ChangeStreams(); got != 0 {
		t.Fatalf("%d cursors open after closing every stream", got)
	}
}

// TestChangeStreamsOff: without change streams, Watch fails as on a
// server that has none.
func TestChangeStreamsOff(t *testing.T) {
	srv := start(t, mongotest.WithChangeStreams(false))
	_, err := connect(t, srv.URI()).Database("cs").Collection("off").Watch(context.Background(), mongo.Pipeline{})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(238) {
		t.Fatalf("Watch without change streams: %v, want NotImplemented (238)", err)
	}
}

// TestFilteredStreamsLoseNothing: while 8 streams, each with its own
// $match (so FerretDB evaluates each one's filter on every batch, beside
// the tailer's rotation of the oplog), watch 4 clients writing one document
// at a time, every stream sees every write.
func TestFilteredStreamsLoseNothing(t *testing.T) {
	srv := startStreams(t)
	ctx := context.Background()
	const streams, writers, each = 8, 4, 50
	var css []*mongo.ChangeStream
	for i := range streams {
		match := mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "fullDocument.n", Value: bson.D{{Key: "$gte", Value: -i}}}}}}}
		css = append(css, watch(t, connect(t, srv.URI()).Database("cs").Collection("filtered"), match))
	}
	var wg sync.WaitGroup
	for w := range writers {
		coll := connect(t, srv.URI()).Database("cs").Collection("filtered")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprint(w, "-", i)}, {Key: "n", Value: i}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, cs := range css {
		for range writers * each {
			nextEvent(t, cs)
		}
	}
}

// TestChangeStreamQuietPeriod: writes made while no stream is open wait in
// FerretDB's oplog, costing no step of their own, and are moved into the
// ring every few hundred writes or when a stream opens: a stream resumed
// from a token taken before the quiet period gets every one of them, in
// order, once, whether the ring already had them or not.
func TestChangeStreamQuietPeriod(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("quiet")
	ctx := context.Background()
	cs := watch(t, coll, mongo.Pipeline{})
	coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}})
	nextEvent(t, cs)
	token := cs.ResumeToken()
	cs.Close(ctx)
	for srv.ChangeStreams() > 0 {
		time.Sleep(10 * time.Millisecond) // its killCursors
	}
	const quiet = 300 // more than one lazy step, and some left over
	for i := 1; i <= quiet; i++ {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	resumed, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token))
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close(ctx)
	for i := 1; i <= quiet; i++ {
		if got := nextEvent(t, resumed)["key"].(bson.RawValue).Int32(); got != int32(i) {
			t.Fatalf("event %d for %v, want %d", i, got, i)
		}
	}
	coll.InsertOne(ctx, bson.D{{Key: "_id", Value: quiet + 1}})
	if got := nextEvent(t, resumed)["key"].(bson.RawValue).Int32(); got != quiet+1 {
		t.Fatalf("the event after the quiet period for %v, want %d", got, quiet+1)
	}
}

// TestChangeStreamBadInput: a pipeline or option MongoDB refuses fails the
// Watch itself with MongoDB's code, not its first getMore (nor a silent
// empty stream), and so does what MongoDB allows but mongotest cannot
// serve (NotImplemented).
func TestChangeStreamBadInput(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("bad")
	ctx := context.Background()
	for _, row := range []struct {
		name     string
		pipeline any
		opts     *options.ChangeStreamOptionsBuilder
		code     int32
	}{
		{"unknown stage", mongo.Pipeline{{{Key: "$frobnicate", Value: bson.D{}}}}, nil, 40324},
		{"stage not permitted", mongo.Pipeline{{{Key: "$group", Value: bson.D{{Key: "_id", Value: 1}}}}}, nil, 20},
		{"two fields in a stage", bson.A{bson.D{{Key: "$match", Value: bson.D{}}, {Key: "$project", Value: bson.D{}}}}, nil, 40323},
		{"unknown operator in $match", mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "$frobnicate", Value: 1}}}}}, nil, 2},
		{"allowed, not served", mongo.Pipeline{{{Key: "$replaceRoot", Value: bson.D{{Key: "newRoot", Value: "$fullDocument"}}}}}, nil, 238},
		{"bad fullDocument", mongo.Pipeline{}, options.ChangeStream().SetFullDocument("sometimes"), 2},
		{"pre-images", mongo.Pipeline{}, options.ChangeStream().SetFullDocumentBeforeChange(options.Required), 238},
		{"two resume options", mongo.Pipeline{}, options.ChangeStream().
			SetResumeAfter(bson.D{{Key: "_data", Value: "00"}}).SetStartAfter(bson.D{{Key: "_data", Value: "00"}}), 40674},
		{"unknown option", mongo.Pipeline{}, options.ChangeStream().SetCustomPipeline(bson.M{"frobnicate": true}), 40415},
	} {
		opts := row.opts
		if opts == nil {
			opts = options.ChangeStream()
		}
		cs, err := coll.Watch(ctx, row.pipeline, opts)
		if err == nil {
			cs.Close(ctx)
			t.Errorf("%s: Watch succeeded, want error %d", row.name, row.code)
			continue
		}
		var ce mongo.CommandError
		if !errors.As(err, &ce) || ce.Code != row.code {
			t.Errorf("%s: %v, want code %d", row.name, err, row.code)
		}
	}
	if n := srv.ChangeStreams(); n != 0 {
		t.Errorf("%d streams open after refused Watches", n)
	}
}

// TestFilteredDottedPaths: a change inside a sub-document passes through a
// stream's stages (which FerretDB evaluates, and which refuses field names
// with dots) and arrives under its dotted path.
func TestFilteredDottedPaths(t *testing.T) {
	srv := startStreams(t)
	coll := connect(t, srv.URI()).Database("cs").Collection("dotted")
	ctx := context.Background()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "waiting", Value: bson.D{{Key: "x", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	cs := watch(t, coll, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "operationType", Value: "update"}}}},
		{{Key: "$project", Value: bson.D{{Key: "updateDescription", Value: 1}}}},
	})
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "waiting.y", Value: 2}}}}); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, cs)
	if got := want(cs.Current.Lookup("updateDescription").String(),
		`{"updatedFields": {"waiting.y": {"$numberInt":"2"}},"removedFields": [],"truncatedArrays": []}`); got != "" {
		t.Fatal(got)
	}
}

// TestChangeStreamDropAfterDrop: a drop right after another (no write
// between) is reported too, with its invalidate.
func TestChangeStreamDropAfterDrop(t *testing.T) {
	srv := startStreams(t)
	db := connect(t, srv.URI()).Database("cs2")
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		if _, err := db.Collection(name).InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	cs := watch(t, db.Collection("b"), mongo.Pipeline{})
	for _, name := range []string{"a", "b"} {
		if err := db.Collection(name).Drop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{"drop", "invalidate"} {
		if ev := nextEvent(t, cs); ev["operationType"] != op {
			t.Fatalf("event %v, want %s", ev["operationType"], op)
		}
	}
	// After the invalidate's token, the drop is not reported again.
	after := watch(t, db.Collection("b"), mongo.Pipeline{}, options.ChangeStream().SetStartAfter(cs.ResumeToken()))
	if _, err := db.Collection("b").InsertOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, after); ev["operationType"] != "insert" {
		t.Fatalf("after the invalidate: %v, want the insert", ev["operationType"])
	}
}

// TestChangeStreamKilledCursor: a getMore of a killed stream's cursor
// fails with CursorNotFound (43), as on MongoDB.
func TestChangeStreamKilledCursor(t *testing.T) {
	srv := startStreams(t)
	db := connect(t, srv.URI()).Database("cs")
	ctx := context.Background()
	var res struct {
		Cursor struct {
			ID int64 `bson:"id"`
		} `bson:"cursor"`
	}
	if err := db.RunCommand(ctx, bson.D{{Key: "aggregate", Value: "killed"},
		{Key: "pipeline", Value: bson.A{bson.D{{Key: "$changeStream", Value: bson.D{}}}}},
		{Key: "cursor", Value: bson.D{}}}).Decode(&res); err != nil {
		t.Fatal(err)
	}
	if err := db.RunCommand(ctx, bson.D{{Key: "killCursors", Value: "killed"}, {Key: "cursors", Value: bson.A{res.Cursor.ID}}}).Err(); err != nil {
		t.Fatal(err)
	}
	err := db.RunCommand(ctx, bson.D{{Key: "getMore", Value: res.Cursor.ID}, {Key: "collection", Value: "killed"}}).Err()
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != 43 {
		t.Fatalf("getMore of a killed stream: %v, want CursorNotFound (43)", err)
	}
}
