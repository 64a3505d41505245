package mongotest_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock/mongotest"
)

// BenchmarkChangeStreamCost measures what serving change streams costs a
// client's writes: each row runs pairs of writes on a server with change
// streams (the default) and, in alternate blocks, on one without them
// (the baseline, in the same run), and reports the medians and their
// ratio. Rows: no stream open anywhere; one stream open on another
// collection; one stream open on the written collection with mongolock's
// pipeline, whose row also reports how long an event takes from the
// write's acknowledgement to a waiting getMore's reply.
//
//	go test -run '^$' -bench ChangeStreamCost -benchtime 400x
func BenchmarkChangeStreamCost(b *testing.B) {
	off := start(b, mongotest.WithChangeStreams(false))
	on := start(b)
	offDB := connect(b, off.URI()).Database("bench")
	onDB := connect(b, on.URI()).Database("bench")
	for _, pair := range []struct {
		name string
		ops  []writeOp
	}{
		{"insert+delete", []writeOp{insertOp, deleteOp}},
		{"findAndModify+update", []writeOp{lockOp, unlockOp}},
	} {
		for _, watched := range []string{"none", "elsewhere", "same"} {
			b.Run(pair.name+"/stream="+watched, func(b *testing.B) {
				coll := pair.name + "_" + watched
				var events <-chan time.Time
				switch watched {
				case "elsewhere":
					events = drain(b, onDB.Collection("other"), nil)
				case "same":
					events = drain(b, onDB.Collection(coll), lockPipeline)
				}
				onColl, offColl := onDB.Collection(coll), offDB.Collection(coll)
				ctx := context.Background()
				var onTook, offTook []time.Duration
				b.ResetTimer()
				// In blocks, so that the work a write leaves to the
				// server with change streams (its events) is not done
				// in the time of the baseline's writes.
				for i := 0; i < b.N; i += block {
					for _, side := range []struct {
						coll *mongo.Collection
						took *[]time.Duration
					}{{offColl, &offTook}, {onColl, &onTook}} {
						for j := i; j < min(b.N, i+block); j++ {
							began := time.Now()
							for _, op := range pair.ops {
								if err := op(ctx, side.coll, j); err != nil {
									b.Fatal(err)
								}
							}
							*side.took = append(*side.took, time.Since(began))
						}
					}
				}
				b.StopTimer()
				on, off := median(onTook), median(offTook)
				b.ReportMetric(ms(on), "ms/pair")
				b.ReportMetric(ms(off), "baseline-ms/pair")
				b.ReportMetric(float64(on)/float64(off), "x-baseline")
				if watched == "same" {
					lat := latencies(b, onColl, pair.ops, events)
					b.ReportMetric(ms(median(lat)), "event-median-ms")
					b.ReportMetric(ms(quantile(lat, 0.99)), "event-p99-ms")
				}
			})
		}
	}
}

// block is how many pairs run on one server before the other's turn.
const block = 25

// lockPipeline is the pipeline mongolock's Lockers watch with (its
// holderPipeline, in part): events that change a holder.
var lockPipeline = bson.A{
	bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"insert", "delete", "replace", "invalidate"}}}}},
		bson.D{
			{Key: "operationType", Value: "update"},
			{Key: "updateDescription.updatedFields.holder", Value: bson.D{{Key: "$exists", Value: true}}},
		},
	}}}}},
	bson.D{{Key: "$project", Value: bson.D{{Key: "operationType", Value: 1}, {Key: "documentKey", Value: 1},
		{Key: "updateDescription", Value: 1}}}},
}

// A writeOp is one write of a pair, the i-th.
type writeOp func(ctx context.Context, coll *mongo.Collection, i int) error

func insertOp(ctx context.Context, coll *mongo.Collection, i int) error {
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "n", Value: i}})
	return err
}

func deleteOp(ctx context.Context, coll *mongo.Collection, i int) error {
	_, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: i}})
	return err
}

// lockOp takes a lock document as mongolock does (a conditional
// findAndModify, upserted); unlockOp frees it (a conditional update).
func lockOp(ctx context.Context, coll *mongo.Collection, i int) error {
	return coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "holder", Value: nil}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: fmt.Sprint("h", i)},
			{Key: "expiresAt", Value: time.Now().Add(time.Minute)}}}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Err()
}

func unlockOp(ctx context.Context, coll *mongo.Collection, i int) error {
	_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "holder", Value: fmt.Sprint("h", i)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "holder", Value: nil}}}})
	return err
}

// drain opens a change stream on coll and reads it until the benchmark
// ends; the returned channel receives the time each event arrived (when
// there is room: nobody need read it).
func drain(b *testing.B, coll *mongo.Collection, pipeline bson.A) <-chan time.Time {
	if pipeline == nil {
		pipeline = bson.A{}
	}
	ctx := context.Background()
	cs, err := coll.Watch(ctx, pipeline, options.ChangeStream().SetMaxAwaitTime(100*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	arrived := make(chan time.Time, 1024)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() { // not Next with a context cancelled: the driver would leave the cursor open
			if cs.TryNext(ctx) {
				select {
				case arrived <- time.Now():
				default:
				}
			} else if cs.Err() != nil {
				return
			}
		}
	}()
	b.Cleanup(func() {
		stop.Store(true)
		<-done
		cs.Close(ctx)
	})
	return arrived
}

// latencies writes ops one at a time, 100 pairs, and returns for each
// write the time from its acknowledgement to its event's arrival.
func latencies(b *testing.B, coll *mongo.Collection, ops []writeOp, arrived <-chan time.Time) []time.Duration {
	for quiet := false; !quiet; { // the events of the pairs before
		select {
		case <-arrived:
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	ctx := context.Background()
	var lat []time.Duration
	for i := range 100 {
		for _, op := range ops {
			if err := op(ctx, coll, 1_000_000+i); err != nil {
				b.Fatal(err)
			}
			acked := time.Now()
			select {
			case at := <-arrived:
				lat = append(lat, at.Sub(acked))
			case <-time.After(10 * time.Second):
				b.Fatal("no event within 10s")
			}
		}
	}
	return lat
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

// quantile returns the q-quantile of d (nearest rank).
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
