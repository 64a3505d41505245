package mongolock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The benchmarks of the Semaphore and the RWMutex, each against the raw
// driver sending the same commands in the same run.

// BenchmarkSemaphore: TryAcquire+Release of a semaphore of 3 with permits
// free (two commands), against the raw findOneAndUpdate over the three
// slots and updateOne that they send.
func BenchmarkSemaphore(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	sem := st.s.NewSemaphore("bench-sem", 3)
	op := func() error {
		p, err := sem.TryAcquire(ctx)
		if err != nil {
			return err
		}
		return p.Release()
	}
	if err := op(); err != nil { // makes the slots
		b.Fatal(err)
	}
	raw := st.s.NewSemaphore("bench-sem-raw", 3)
	if p, err := raw.TryAcquire(ctx); err != nil {
		b.Fatal(err)
	} else {
		p.Release()
	}
	slots := bson.A{}
	for i := range 3 {
		slots = append(slots, fmt.Sprint("bench-sem-raw\x1f", i))
	}
	rawOp := func() error {
		now := time.Now()
		filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: slots}}}, {Key: "limit", Value: 3},
			{Key: "$or", Value: bson.A{
				bson.D{{Key: "holder", Value: nil}},
				bson.D{{Key: "expiresAt", Value: bson.D{{Key: "$lte", Value: now}}}},
				bson.D{{Key: "holder", Value: "raw"}},
			}}}
		update := bson.D{
			{Key: "$set", Value: bson.D{{Key: "owner", Value: "bench"}, {Key: "holder", Value: "raw"},
				{Key: "session", Value: "s"}, {Key: "acquiredAt", Value: now}}},
			{Key: "$max", Value: bson.D{{Key: "expiresAt", Value: now.Add(time.Minute)}}},
			{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
		}
		var doc struct {
			ID string `bson:"_id"`
		}
		if err := st.raw.FindOneAndUpdate(ctx, filter, update,
			options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc); err != nil {
			return err
		}
		_, err := st.raw.UpdateOne(ctx, bson.D{{Key: "_id", Value: doc.ID}, {Key: "holder", Value: "raw"}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}, {Key: "expiresAt", Value: time.Now()}}}})
		return err
	}
	opS, bases, ratios := interleave(b, op, rawOp, st.twoPings)
	recordInterleaved(b, "Semaphore TryAcquire+Release", opS, bases, ratios, "raw permit acquire+release", "2 pings")
}

// BenchmarkRWMutexRead: RLock+RUnlock with no writer (two commands),
// against the raw findOneAndUpdate and updateOne that they send.
func BenchmarkRWMutexRead(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	rw := st.s.NewRWMutex("bench-rw")
	op := func() error {
		if err := rw.RLock(ctx); err != nil {
			return err
		}
		return rw.RUnlock()
	}
	entry := bson.D{{Key: "t", Value: "raw"}, {Key: "s", Value: "s"}}
	rawOp := func() error {
		now := time.Now()
		filter := bson.D{{Key: "_id", Value: "bench-rw-raw\x1frw"}, {Key: "$or", Value: bson.A{
			bson.D{{Key: "holder", Value: nil}},
			bson.D{{Key: "expiresAt", Value: bson.D{{Key: "$lte", Value: now}}}},
			bson.D{{Key: "readers.t", Value: "raw"}},
		}}}
		update := bson.D{
			{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}}},
			{Key: "$addToSet", Value: bson.D{{Key: "readers", Value: entry}}},
			{Key: "$max", Value: bson.D{{Key: "readersUntil", Value: now.Add(time.Minute)}}},
		}
		if err := st.raw.FindOneAndUpdate(ctx, filter, update,
			options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Err(); err != nil {
			return err
		}
		_, err := st.raw.UpdateOne(ctx, bson.D{{Key: "_id", Value: "bench-rw-raw\x1frw"}, {Key: "readers.t", Value: "raw"}},
			bson.D{{Key: "$pull", Value: bson.D{{Key: "readers", Value: entry}}}})
		return err
	}
	opS, bases, ratios := interleave(b, op, rawOp, st.twoPings)
	recordInterleaved(b, "RWMutex RLock+RUnlock", opS, bases, ratios, "raw read acquire+release", "2 pings")
}

// BenchmarkRWMutexWrite: Lock+Unlock with no reader (two commands),
// against the raw acquire and release of a Mutex.
func BenchmarkRWMutexWrite(b *testing.B) {
	st := newBenchSetup(b)
	ctx := context.Background()
	rw := st.s.NewRWMutex("bench-rww")
	op := func() error {
		if err := rw.Lock(ctx); err != nil {
			return err
		}
		return rw.Unlock()
	}
	opS, bases, ratios := interleave(b, op, st.rawLockUnlock, st.twoPings)
	recordInterleaved(b, "RWMutex Lock+Unlock", opS, bases, ratios, "raw acquire+release", "2 pings")
}
