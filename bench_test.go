package mongolock_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/mongolock/mongolock"
)

// rawLockUnlock sends by hand the two commands an uncontended Lock+Unlock
// sends: the conditional findOneAndUpdate with upsert, and the updateOne
// that frees the lock. It is the floor the library is measured against.
func rawLockUnlock(ctx context.Context, coll *mongo.Collection, name string) error {
	now := time.Now()
	holder := "raw-holder"
	filter := bson.D{{Key: "_id", Value: name}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "holder", Value: nil}},
		bson.D{{Key: "expiresAt", Value: bson.D{{Key: "$lte", Value: now}}}},
		bson.D{{Key: "holder", Value: holder}},
	}}}
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "owner", Value: "bench"}, {Key: "holder", Value: holder}, {Key: "session", Value: "s"},
			{Key: "value", Value: ""}, {Key: "acquiredAt", Value: now}, {Key: "expiresAt", Value: now.Add(time.Minute)},
		}},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
	}
	err := coll.FindOneAndUpdate(ctx, filter, update,
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Err()
	if err != nil {
		return err
	}
	_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "holder", Value: holder}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}, {Key: "expiresAt", Value: now}}}})
	return err
}

// BenchmarkLockUnlock measures an uncontended Lock+Unlock against the raw
// driver sending the same two commands, in interleaved blocks (raw,
// library, raw, library...) so that the machine's drift cancels out, and
// reports the median per-operation time of each and their median ratio.
func BenchmarkLockUnlock(b *testing.B) {
	e := newEnv(b)
	l, _ := e.locker("")
	s := session(b, l, mongolock.WithTTL(time.Minute))
	m := s.NewMutex("bench-lib")
	client, _ := connect(b, "")
	// The same write concern as the library's default.
	raw := client.Database(testDB).Collection(e.coll,
		options.Collection().SetWriteConcern(writeconcern.Majority()))
	ctx := context.Background()
	lib := func() error {
		if err := m.Lock(ctx); err != nil {
			return err
		}
		return m.Unlock()
	}
	rawOp := func() error { return rawLockUnlock(ctx, raw, "bench-raw") }
	interleave(b, rawOp, lib)
}

// interleave runs base and op in alternating blocks for b.N operations of
// each and reports their median per-op times and median ratio op/base.
func interleave(b *testing.B, base, op func() error) {
	const block = 20
	var baseNs, opNs, ratios []float64
	timeBlock := func(f func() error) float64 {
		start := time.Now()
		for range block {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		return float64(time.Since(start).Nanoseconds()) / block
	}
	// Warm both up: connections, the clock, the documents.
	timeBlock(base)
	timeBlock(op)
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		r, o := timeBlock(base), timeBlock(op)
		baseNs, opNs, ratios = append(baseNs, r), append(opNs, o), append(ratios, o/r)
	}
	b.StopTimer()
	b.ReportMetric(median(baseNs), "base-ns/op")
	b.ReportMetric(median(opNs), "lib-ns/op")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
