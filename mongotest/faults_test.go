package mongotest_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock/mongotest"
)

// TestFailWrites: the write is applied and answered with the stepdown's
// error, code and labels; the writes after the n failed go through, at
// once (the error's new topologyVersion has the driver check the server
// again, and the awaitable hello answers it).
func TestFailWrites(t *testing.T) {
	srv := start(t)
	coll := connect(t, srv.URI()).Database("mongotest").Collection("failwrites")
	ctx := context.Background()
	srv.FailWrites(2, 189, "RetryableWriteError")
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != 189 || ce.Name != "PrimarySteppedDown" || !ce.HasErrorLabel("RetryableWriteError") {
		t.Fatalf("insert: %v, want PrimarySteppedDown with RetryableWriteError", err)
	}
	err = coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}}).Err()
	if !errors.As(err, &ce) || ce.Code != 189 {
		t.Fatalf("findAndModify: %v, want PrimarySteppedDown", err)
	}
	// Both were applied.
	var doc bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&doc); err != nil || doc["x"] != int32(1) {
		t.Fatalf("after the failed writes: %v %v, want the document with x 1", doc, err)
	}
	quick, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := coll.DeleteOne(quick, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatalf("the write after the failures: %v", err)
	}
	srv.FailWrites(5, 91)
	srv.FailWrites(0, 0) // off
	if _, err := coll.InsertOne(quick, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatalf("after FailWrites(0): %v", err)
	}
}

// TestFailWriteConcern: the write is applied and its reply carries a
// writeConcernError of the code.
func TestFailWriteConcern(t *testing.T) {
	srv := start(t)
	coll := connect(t, srv.URI()).Database("mongotest").Collection("failconcern")
	ctx := context.Background()
	srv.FailWriteConcern(1, 64)
	_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 2}}}},
		options.UpdateOne().SetUpsert(true))
	var we mongo.WriteException
	if !errors.As(err, &we) || we.WriteConcernError == nil || we.WriteConcernError.Code != 64 {
		t.Fatalf("update: %v, want a writeConcernError 64", err)
	}
	var doc bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&doc); err != nil || doc["x"] != int32(2) {
		t.Fatalf("after it: %v %v, want the upserted document", doc, err)
	}
}

// TestFailover: hello reports a new electionId and a newer
// topologyVersion, localTime moves by the offset, and open connections
// are dropped; clients go on after reconnecting.
func TestFailover(t *testing.T) {
	srv := start(t)
	db := connect(t, srv.URI()).Database("mongotest")
	ctx := context.Background()
	before := hello(t, db)
	raw, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ping(t, raw) // the proxy serves it: it is open

	srv.Failover(time.Hour)
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("an open connection was not dropped by Failover")
		}
	}
	var after helloReply
	for i := 0; ; i++ { // the pool's connection was dropped: the first command may fail
		after, err = helloErr(ctx, db)
		if err == nil || i == 3 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if after.ElectionID == before.ElectionID || after.ElectionID.IsZero() {
		t.Errorf("electionId %v after the failover, %v before: want a new one", after.ElectionID, before.ElectionID)
	}
	if after.TopologyVersion.ProcessID != before.TopologyVersion.ProcessID || after.TopologyVersion.Counter <= before.TopologyVersion.Counter {
		t.Errorf("topologyVersion %+v after, %+v before: want a greater counter", after.TopologyVersion, before.TopologyVersion)
	}
	if d := after.LocalTime.Sub(time.Now()); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("localTime is %v ahead of the host's clock, want an hour", d)
	}
	srv.Failover(0)
	if d := hello(t, db).LocalTime.Sub(time.Now()); d > time.Minute || d < -time.Minute {
		t.Errorf("after Failover(0) localTime is %v off the host's clock", d)
	}
}

// ping sends a ping on a raw connection and reads its reply.
func ping(t *testing.T, c net.Conn) {
	t.Helper()
	body, _ := bson.Marshal(bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	msg := make([]byte, 21, 21+len(body))
	binary.LittleEndian.PutUint32(msg[0:], uint32(21+len(body)))
	binary.LittleEndian.PutUint32(msg[4:], 1)
	binary.LittleEndian.PutUint32(msg[12:], 2013) // OP_MSG; flags 0, section kind 0
	msg = append(msg, body...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.LittleEndian.Uint32(hdr[:]))-4); err != nil {
		t.Fatal(err)
	}
}

type helloReply struct {
	LocalTime       time.Time     `bson:"localTime"`
	ElectionID      bson.ObjectID `bson:"electionId"`
	TopologyVersion struct {
		ProcessID bson.ObjectID `bson:"processId"`
		Counter   int64         `bson:"counter"`
	} `bson:"topologyVersion"`
}

func helloErr(ctx context.Context, db *mongo.Database) (helloReply, error) {
	var r helloReply
	err := db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&r)
	return r, err
}

func hello(t *testing.T, db *mongo.Database) helloReply {
	t.Helper()
	var r helloReply
	var err error
	for range 3 { // a connection dropped by a failover fails once
		if r, err = helloErr(context.Background(), db); err == nil {
			return r
		}
	}
	t.Fatal(err)
	return r
}

// TestAwaitableHello: the driver's monitor streams (the server reports a
// topologyVersion) and mongotest holds its awaitable hellos: it checks
// the server a few times in a second, not every few milliseconds.
func TestAwaitableHello(t *testing.T) {
	srv := start(t)
	var beats, awaited atomic.Int64
	mon := &event.ServerMonitor{ServerHeartbeatStarted: func(e *event.ServerHeartbeatStartedEvent) {
		beats.Add(1)
		if e.Awaited {
			awaited.Add(1)
		}
	}}
	c, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetServerMonitor(mon).SetHeartbeatInterval(500 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	if err := c.Ping(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := beats.Load(); n > 8 || awaited.Load() == 0 {
		t.Errorf("%d heartbeats in 1.5s, %d awaited: want a few, awaited", n, awaited.Load())
	}
}

// TestDelayEvents: an event reaches the stream no earlier than the delay
// after its write; DelayEvents(0) lets the ones held go at once.
func TestDelayEvents(t *testing.T) {
	srv := start(t)
	coll := connect(t, srv.URI()).Database("mongotest").Collection("delayed")
	ctx := context.Background()
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	srv.DelayEvents(300 * time.Millisecond)
	for i := range 3 {
		// The write is applied between its send and its reply, and its
		// event is held from then: measured from the reply, it may come a
		// little sooner than the delay (it did: 299.2ms), from the send
		// never.
		wrote := time.Now()
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
		nextEvent(t, cs)
		if d := time.Since(wrote); d < 300*time.Millisecond {
			t.Fatalf("event %d came %v after its write, want at least 300ms", i, d)
		}
	}
	srv.DelayEvents(time.Hour)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 10}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		srv.DelayEvents(0)
	}()
	if ev := nextEvent(t, cs); ev["key"].(bson.RawValue).Int32() != 10 {
		t.Fatalf("event %v, want the insert of 10", ev)
	}
}

// TestRefuseChangeStreams: a Watch fails with the code given; streams
// open before go on; code 0 serves them again.
func TestRefuseChangeStreams(t *testing.T) {
	srv := start(t)
	coll := connect(t, srv.URI()).Database("mongotest").Collection("refused")
	ctx := context.Background()
	open, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	srv.RefuseChangeStreams(8000, "change streams are not allowed on this tier")
	_, err = coll.Watch(ctx, mongo.Pipeline{})
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != 8000 || ce.Name != "AtlasError" {
		t.Fatalf("Watch: %v, want AtlasError 8000", err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, open)
	srv.RefuseChangeStreams(0, "")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatalf("after RefuseChangeStreams(0): %v", err)
	}
	cs.Close(ctx)
}

// TestControlCommand: the switches over the wire, for tests in another
// process: {mongotest: "failWrites", ...} acts as FailWrites; an unknown
// switch is BadValue; a failover asked for this way answers first.
func TestControlCommand(t *testing.T) {
	srv := start(t)
	db := connect(t, srv.URI()).Database("mongotest")
	ctx := context.Background()
	if err := db.RunCommand(ctx, bson.D{{Key: "mongotest", Value: "failWrites"}, {Key: "n", Value: 1},
		{Key: "code", Value: 11602}, {Key: "labels", Value: bson.A{"RetryableWriteError"}}}).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := db.Collection("control").InsertOne(ctx, bson.D{})
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != 11602 || !ce.HasErrorLabel("RetryableWriteError") {
		t.Fatalf("insert: %v, want InterruptedDueToReplStateChange", err)
	}
	err = db.RunCommand(ctx, bson.D{{Key: "mongotest", Value: "bogus"}}).Err()
	if !errors.As(err, &ce) || ce.Code != 2 {
		t.Fatalf("unknown switch: %v, want BadValue", err)
	}
	before := hello(t, db)
	if err := db.RunCommand(ctx, bson.D{{Key: "mongotest", Value: "failover"}, {Key: "clockOffsetMS", Value: 5000}}).Err(); err != nil {
		t.Fatal(err)
	}
	after := hello(t, db)
	if after.ElectionID == before.ElectionID {
		t.Fatal("no new electionId after the failover")
	}
	if d := after.LocalTime.Sub(time.Now()); d < 4*time.Second || d > 6*time.Second {
		t.Fatalf("localTime %v ahead, want 5s", d)
	}
}

// TestFailoverShiftsWallTime: after a failover to a clock an hour ahead,
// change events' wallTime is on the new primary's clock.
func TestFailoverShiftsWallTime(t *testing.T) {
	srv := start(t)
	coll := connect(t, srv.URI()).Database("mongotest").Collection("walltime")
	ctx := context.Background()
	srv.Failover(time.Hour)
	var cs *mongo.ChangeStream
	var err error
	for range 3 { // the pool's connection was dropped: the first command may fail
		if cs, err = coll.Watch(ctx, mongo.Pipeline{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, cs)
	if d := ev["wallTime"].(bson.DateTime).Time().Sub(time.Now()); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("wallTime %v off the host's clock, want an hour ahead", d)
	}
}

// TestWithoutElectionID: as a standalone, hello reports no electionId and
// no topologyVersion, and a stepdown's error carries none; writes go on.
func TestWithoutElectionID(t *testing.T) {
	srv := start(t, mongotest.WithElectionID(false))
	db := connect(t, srv.URI()).Database("mongotest")
	r := hello(t, db)
	if !r.ElectionID.IsZero() || !r.TopologyVersion.ProcessID.IsZero() {
		t.Fatalf("hello %+v: want no electionId nor topologyVersion", r)
	}
	srv.FailWrites(1, 189, "RetryableWriteError")
	_, err := db.Collection("standalone").InsertOne(context.Background(), bson.D{})
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != 189 {
		t.Fatalf("insert: %v, want PrimarySteppedDown", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := db.Collection("standalone").InsertOne(ctx, bson.D{}); err != nil {
		t.Fatalf("the write after: %v", err)
	}
}
