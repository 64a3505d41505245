package mongolock

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mopt "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The RWMutex's document as its kinds of hold take it, and its readers'
// operations on it: a writer is its holder, as a Mutex's; its readers are
// a list of entries with one lease for all of them (readersUntil).

// readFilter matches the RWMutex document c may read: no writer, or one
// whose lease surely ran out (past), or c's read hold there already
// (a repeated attempt). As acquireFilter, never equalities on _id alone.
func readFilter(c claim, past leasePast) bson.D {
	return bson.D{{Key: "_id", Value: c.name}, {Key: "$or", Value: append(bson.A{
		bson.D{{Key: "holder", Value: nil}},
		bson.D{{Key: "readers.t", Value: c.holder}}, // a repeated attempt
	}, past.over("expiresAt")...)}}
}

// reader is one read hold in an RWMutex's document.
type reader struct {
	Token   string `bson:"t"`
	Session string `bson:"s"`
}

// readKind is a read hold of an RWMutex's document: one of its readers.
type readKind struct{}

// take adds a read hold for c to the RWMutex document c.name, in one
// findOneAndUpdate with upsert, when no writer holds it or waits for it
// (or the writer's lease surely ran out); otherwise the upsert fails on the
// duplicate _id and ok is false. The readers' lease end only moves
// forward.
func (readKind) take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error) {
	filter := readFilter(c, past)
	// The writer field is left alone: a writer whose lease ran out is as
	// good as none to every taker, and a repeated attempt must not clear a
	// live writer that came after the first.
	update := bson.D{
		{Key: "$addToSet", Value: bson.D{{Key: "readers", Value: reader{Token: c.holder, Session: c.session}},
			{Key: "readersClocks", Value: c.election}}},
		{Key: "$max", Value: bson.D{{Key: "readersUntil", Value: now.Add(c.ttl)}}},
	}
	var doc lockDoc
	err := s.coll.FindOneAndUpdate(ctx, filter, update, acquireOpts).Decode(&doc)
	if mongo.IsDuplicateKeyError(err) {
		// Two first readers upserted at once: the document exists now.
		err = s.coll.FindOneAndUpdate(ctx, filter, update, acquireOpts).Decode(&doc)
	}
	switch {
	case err == nil:
		doc.Name = c.name
		return &doc, true, nil
	case mongo.IsDuplicateKeyError(err):
		return nil, false, nil
	default:
		return nil, false, err
	}
}

func (readKind) forget(ctx context.Context, s *store, c claim) error {
	_, err := s.releaseRead(ctx, c.name, reader{Token: c.holder, Session: c.session})
	return err
}

// mark: a read hold has no place in the name's turns, and is renewed with
// the readers' lease (keepalive.go).
func (readKind) mark(h *hold, _ string) { h.reader = true }
func (readKind) String() string         { return "read" }

// writeKind is the write hold of an RWMutex's document: its holder is the
// writer. alone (TryLock) takes it only with no reader in, and clears the
// readers whose leases ran out; otherwise (Lock) the writer takes it at
// once, keeping new readers out, and waits for the readers in to leave
// (RWMutex.drain).
type writeKind struct{ alone bool }

func (k writeKind) take(ctx context.Context, s *store, c claim, now time.Time, past leasePast) (*lockDoc, bool, error) {
	var x exclusive
	if k.alone {
		x.filter = bson.D{{Key: "$and", Value: bson.A{noReaders(past)}}}
		x.set = bson.D{{Key: "readers", Value: bson.A{}}, // those left have no lease
			{Key: "readersClocks", Value: bson.A{}}}
	}
	return s.acquire(ctx, c, x, now, past)
}

func (writeKind) forget(ctx context.Context, s *store, c claim) error {
	return mutexKind{}.forget(ctx, s, c)
}

func (writeKind) mark(*hold, string) {}
func (writeKind) String() string     { return "write" }

// releaseRead drops the read hold r from the RWMutex document id, and
// reports whether it was there. The whole entry is pulled, as FerretDB does
// not match a $pull's condition against an array's documents.
func (s *store) releaseRead(ctx context.Context, id string, r reader) (bool, error) {
	res, err := s.coll.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "readers.t", Value: r.Token}},
		bson.D{{Key: "$pull", Value: bson.D{{Key: "readers", Value: r}}}})
	if err != nil {
		return false, err
	}
	return res.MatchedCount == 1, nil
}

// drainReaders reports whether writer, holding the RWMutex document id, has
// it to itself: no reader, or none whose lease may still run (then it
// clears them), in one round trip; otherwise it returns the readers' lease
// end.
func (s *store) drainReaders(ctx context.Context, id, writer string) (time.Time, bool, error) {
	now, unc, election := s.clock.ReadElection()
	filter := append(bson.D{{Key: "_id", Value: id}, {Key: "holder", Value: writer}}, noReaders(s.over(now.Add(-unc), election))...)
	res, err := s.coll.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{{Key: "readers", Value: bson.A{}}, {Key: "readersClocks", Value: bson.A{}}}}})
	if err != nil || res.MatchedCount == 1 {
		return time.Time{}, err == nil, err
	}
	doc, err := s.read(ctx, id)
	switch {
	case err != nil:
		return time.Time{}, false, err
	case doc == nil || doc.Holder != writer:
		return time.Time{}, false, fmt.Errorf("%w: the writer's hold of %q is gone", ErrLockLost, id)
	}
	return doc.RW.ReadersUntil, false, nil
}

// noReaders is the condition that an RWMutex's document has no reader
// whose lease may still run (past).
func noReaders(past leasePast) bson.D {
	return bson.D{{Key: "$or", Value: append(bson.A{
		bson.D{{Key: "readers.0", Value: bson.D{{Key: "$exists", Value: false}}}},
	}, past.over("readersUntil")...)}}
}

// renewReads is the keepalive's statement that extends the readers' lease
// of the RWMutex document id, which the session reads with tokens, unless
// it ran out or one of them is gone (cleared by a writer after the lease
// ran out): another read hold of the session must not bring back one that
// was lost.
func renewReads(id string, tokens []string, now leasePast, ttl time.Duration) mongo.WriteModel {
	// An update of many, as the holders' statement: the driver sends
	// statements of one kind in one command.
	return mongo.NewUpdateManyModel().SetFilter(bson.D{
		{Key: "_id", Value: id},
		{Key: "readers.t", Value: bson.D{{Key: "$all", Value: tokens}}},
		{Key: "$or", Value: now.live("readersUntil")},
	}).SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "readersUntil", Value: now.at.Add(ttl)}}},
		{Key: "$addToSet", Value: bson.D{{Key: "readersClocks", Value: now.election}}}})
}

// liveReads returns which read holds the RWMutex documents reading still
// have with a readers' lease that reaches until (the end a renewal wrote,
// or another reader's later one).
func (s *store) liveReads(ctx context.Context, reading []string, until time.Time) (map[string]bool, error) {
	cur, err := s.coll.Find(ctx, bson.D{
		{Key: "_id", Value: bson.D{{Key: "$in", Value: reading}}},
		{Key: "readersUntil", Value: bson.D{{Key: "$gte", Value: until}}},
	}, mopt.Find().SetProjection(bson.D{{Key: "readers", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var docs []lockDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, d := range docs {
		for _, r := range d.RW.Readers {
			live[r.Token] = true
		}
	}
	return live, nil
}

// releaseReads drops the read holds of session (tokens by RWMutex
// document) from their documents, in one round trip.
func (s *store) releaseReads(ctx context.Context, session string, reading map[string][]string) error {
	var entries bson.A
	var ids []string
	for id, tokens := range reading {
		ids = append(ids, id)
		for _, t := range tokens {
			entries = append(entries, reader{Token: t, Session: session})
		}
	}
	_, err := s.coll.UpdateMany(ctx,
		bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		bson.D{{Key: "$pullAll", Value: bson.D{{Key: "readers", Value: entries}}}})
	return err
}
